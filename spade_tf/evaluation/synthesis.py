"""Synthesis: layouts in, generated images out, resumable, with a page showing layout | generated | real.

Written to `out`: `images/synthesized/<stem><suffix>.png` (one per `Variant`), `images/input_label/<stem>.png`
(colourised with the dataset's palette), `images/real/<stem>.png` when the layout has a photo, and
`index.html`. Outputs that already exist are skipped, so an interrupted run resumes where it
stopped; every file is written to a temporary name and renamed.
"""

import dataclasses
import html
import pathlib
import typing

import keras
import numpy as np
import tensorflow as tf

from spade_tf.data.classes import colorize
from spade_tf.evaluation.fid import read_rgb
from spade_tf.evaluation.layouts import palette
from spade_tf.evaluation.sources import Model
from spade_tf.training.visuals import save_png

SYNTHESIZED, INPUT_LABEL, REAL = "synthesized", "input_label", "real"


@dataclasses.dataclass(frozen=True)
class Variant:
    """One generated image per layout: a file name suffix, a column title, and a seed or a style code z."""

    suffix: str
    title: str
    seed: int = 0
    z: typing.Optional[np.ndarray] = None


def variants(model: Model, seeds=None, style=None) -> typing.List[Variant]:
    """What to generate per layout: one image; VAE models one per seed (default 0) or one in a photo's style."""
    if not model.use_vae:
        if seeds or style:
            raise ValueError(
                f"{model.source} is not a VAE model (model.use_vae is false): its images depend on neither a seed "
                "nor a style, so eval.seeds and --style do not apply"
            )
        return [Variant("", "generated")]
    if seeds and style:
        raise ValueError("give either eval.seeds or --style, not both")
    if style:
        photo = read_rgb(style)
        mu = model.signatures["encode_style"](image=tf.constant(photo[None]))["mu"].numpy()[0]
        name = pathlib.Path(style).stem
        return [Variant(f"_style_{name}", f"style of {name}", z=mu)]
    return [Variant(f"_seed{k}", f"seed {k}", seed=k) for k in (seeds or [0])]


def write_index(out: pathlib.Path, rows, columns, title) -> pathlib.Path:
    """`index.html`: one row (stem, layout, [generated per variant], real or None) per layout."""
    has_real = any(real for *_, real in rows)
    head = ["name", "layout"] + [c.title for c in columns] + (["real"] if has_real else [])

    def image(src):
        return f'<a href="{html.escape(src)}"><img src="{html.escape(src)}"></a>' if src else ""

    lines = [
        "<!DOCTYPE html>",
        f'<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
        "<style>body{font-family:sans-serif} td,th{padding:4px;text-align:center} img{width:256px}</style>",
        f"</head><body><h1>{html.escape(title)}</h1><table>",
        "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>",
    ]
    for stem, label, generated, real in rows:
        cells = [html.escape(stem), image(label)] + [image(src) for src in generated]
        cells += [image(real)] if has_real else []
        lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    lines.append("</table></body></html>")
    path = out / "index.html"
    tmp = path.with_name(".index.html.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


def generate_batch(model: Model, jobs) -> np.ndarray:
    """uint8 images [len(jobs), H, W, 3] for (layout, variant, ...) jobs of one layout size and one kind of variant."""
    inputs = {"label_map": tf.constant(np.stack([layout.label for layout, *_ in jobs]))}
    if model.use_instance:
        inputs["instance_map"] = tf.constant(np.stack([layout.instance for layout, *_ in jobs]), tf.int32)
    if jobs[0][1].z is not None:
        inputs["z"] = tf.constant(np.stack([v.z for _, v, *_ in jobs]), tf.float32)
        return model.signatures["with_z"](**inputs)["image"].numpy()
    inputs["seed"] = tf.constant([v.seed for _, v, *_ in jobs], tf.int64)
    return model.signatures["with_seed"](**inputs)["image"].numpy()


def synthesize(model: Model, layouts, total, out, columns, batch_size=1, score=None, progress=True) -> dict:
    """Generates the missing outputs of `total` layouts, in batches.

    `columns` are the `variants` to generate per layout. `score` (optional) is called as
    score(image uint8 [H, W, 3], layout) for every generated image, new or already on disk.
    Returns {"layouts", "written", "skipped", "synthesized": [paths], "real": [paths]}.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = pathlib.Path(out)
    folders = {kind: out / "images" / kind for kind in (SYNTHESIZED, INPUT_LABEL, REAL)}
    for stale in out.glob("images/*/*.tmp.png"):  # left by a run killed while writing
        stale.unlink()
    colours = palette(model.cfg)
    bar = keras.utils.Progbar(total, unit_name="layout", verbose=1 if progress else 0)
    rows, synthesized, reals, pending = [], [], [], []
    counts = {"written": 0, "skipped": 0}

    def relative(path):
        return path.relative_to(out).as_posix() if path else None

    def run(jobs):
        """Generates and writes a batch of (layout, variant, path, is the layout's last job)."""
        for (layout, _, path, _), image in zip(jobs, generate_batch(model, jobs)):
            save_png(image, path)
            if score:
                score(image, layout)
        counts["written"] += len(jobs)
        bar.add(sum(last for *_, last in jobs))
        jobs.clear()

    for layout in layouts:
        label_path = folders[INPUT_LABEL] / f"{layout.stem}.png"
        if not label_path.exists():
            save_png(colorize(layout.label, colours), label_path)
        real = None
        if layout.real is not None:
            real = folders[REAL] / f"{layout.stem}.png"
            reals.append(real)
            if not real.exists():
                save_png(layout.real, real)
        paths = [folders[SYNTHESIZED] / f"{layout.stem}{v.suffix}.png" for v in columns]
        todo = []
        for variant, path in zip(columns, paths):
            if not path.exists():
                todo.append((variant, path))
                continue
            counts["skipped"] += 1
            if score:
                score(read_rgb(path), layout)
        if not todo:
            bar.add(1)
        for k, (variant, path) in enumerate(todo):
            if pending and (len(pending) == batch_size or pending[0][0].label.shape != layout.label.shape):
                run(pending)
            pending.append((layout, variant, path, k == len(todo) - 1))
        synthesized += paths
        rows.append((layout.stem, relative(label_path), [relative(p) for p in paths], relative(real)))
    if pending:
        run(pending)
    write_index(out, rows, columns, f"{model.cfg.name}: {model.source}")
    return {"layouts": len(rows), **counts, "synthesized": synthesized, "real": reals}
