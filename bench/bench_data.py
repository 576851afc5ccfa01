"""Input pipeline throughput: samples per second delivered by `build_dataset`.

The built-in dataset at 64x64 and 256x512, and a Cityscapes-layout fixture (random-ish 1024x2048
PNG photos, 8-bit label ids, 16-bit instance ids, written to a temporary folder) preprocessed
`fixed` to 256x512. Each case runs one warm-up epoch, then times a second one.

    python bench/bench_data.py [--quick]
"""

import pathlib
import tempfile
import time

import numpy as np
from PIL import Image

from spade_tf.config import load_config
from spade_tf.data import build_dataset


def _epoch_rate(cfg, batch_size: int) -> float:
    ds = build_dataset(cfg, "train", batch_size=batch_size)
    for _ in ds:  # warm-up: tracing, file cache
        pass
    start, n = time.perf_counter(), 0
    for batch in ds:
        n += int(batch["label"].shape[0])
    return n / (time.perf_counter() - start)


def write_cityscapes_fixture(root: pathlib.Path, n: int, height: int, width: int) -> None:
    """n samples in the Cityscapes layout: smooth noisy photos (PNG sizes close to real ones) and block labels."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:height, :width]
    for i in range(n):
        key = f"bench_{i:06d}_000019"
        gt = root / "gtFine" / "train" / "bench"
        left = root / "leftImg8bit" / "train" / "bench"
        gt.mkdir(parents=True, exist_ok=True)
        left.mkdir(parents=True, exist_ok=True)
        label = ((x // 128 + 3 * (y // 96) + i) % 34).astype(np.uint8)
        shade = (np.sin(x / 57.0 + i) + np.cos(y / 41.0)) * 40 + 100
        photo = shade[..., None] + label[..., None] * [3, 5, 7] + rng.normal(0, 8, (height, width, 3))
        Image.fromarray(label).save(gt / f"{key}_gtFine_labelIds.png")
        Image.fromarray((label.astype(np.uint16) * 1000 + x // 256).astype(np.uint16)).save(
            gt / f"{key}_gtFine_instanceIds.png"
        )
        Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(left / f"{key}_leftImg8bit.png")


def run(quick: bool = False) -> list:
    rows = []
    for (h, w), preset_overrides, samples in (
        ((64, 64), ["data.crop_size=64", "data.aspect_ratio=1.0", "model.num_upsampling_layers=normal"], 256),
        ((256, 512), ["data.crop_size=512", "data.aspect_ratio=2.0", "model.num_upsampling_layers=more"], 32),
    ):
        samples = samples // 4 if quick else samples
        cfg = load_config("synthetic", preset_overrides + [f"data.synthetic_size={samples}"])
        assert cfg.image_size == (h, w), cfg.image_size
        rows.append({"name": f"data/synthetic {h}x{w}", "value": _epoch_rate(cfg, 4), "unit": "samples/s"})

    n, (sh, sw) = (8, (512, 1024)) if quick else (32, (1024, 2048))
    with tempfile.TemporaryDirectory() as root:
        write_cityscapes_fixture(pathlib.Path(root), n, sh, sw)
        cfg = load_config("cityscapes", [f"data.dataroot={root}"])  # preprocess fixed -> 256x512
        rows.append({
            "name": f"data/cityscapes-layout {sh}x{sw} png -> 256x512",
            "value": _epoch_rate(cfg, 4),
            "unit": "samples/s",
        })
    return rows


if __name__ == "__main__":
    from bench.runner import command_line

    command_line(run, __doc__, "fewer and smaller samples")
