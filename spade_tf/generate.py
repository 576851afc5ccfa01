"""Synthesis: layouts in, generated images out, with a page showing layout | generated | real.

    python -m spade_tf.generate --run_dir checkpoints/synthetic --out results/synthetic
    python -m spade_tf.generate --saved_model exports/spade/1 --labels my_layouts/ --out results/mine
    python -m spade_tf.generate --nvlabs_dir coco_pretrained --config coco data.dataroot=datasets/coco
    ... [--style photo.png] [--evaluate] [section.field=value ...], e.g. eval.split=val eval.how_many=100
        eval.batch_size=4 export.precision=bfloat16 eval.seeds=[0,1,2] eval.segmenter=SAVEDMODEL
        eval.extractor=inception-2015 eval.inception_graph=classify_image_graph_def.pb

Options are config fields, `section.field=value` on the command line: the `eval` section
(`spade_tf.config.EvalConfig`) says what to synthesise and how to score it; the model's config
(a run folder's or an export's config.yaml, or the NVlabs opt.txt over --config) gives the
defaults. The flags name the model, the layouts and the outputs.

The model is a training run folder (its latest checkpoint, the moving-average generator when
kept), an exported SavedModel (a version folder, or a base path: its highest version) or an
NVlabs checkpoint folder with the reference's opt.txt. The layouts are a folder of label PNGs
(class indices, or colours of the dataset's palette; resized nearest-neighbour to the model's
trained size when they differ; a model that uses instance maps gets the label map as instance
map, so class boundaries are its edges) or a dataset read with the model's config
(eval.split, plus overrides such as data.dataroot=...; `--config` swaps in a preset's data
settings, keeping the model's label set, crop_size and aspect_ratio).

Written to --out (default results/<name>): `images/synthesized/<stem>.png` (VAE models:
`<stem>_seed<k>.png` per seed of eval.seeds, default 0, or `<stem>_style_<photo>.png` in the style of a
photo, from the encoder's mean), `images/input_label/<stem>.png` (colourised with the dataset's
palette), `images/real/<stem>.png` when the dataset has photos, and `index.html`. Outputs that
already exist are skipped, so an interrupted run resumes where it stopped; every file is written
to a temporary name and renamed. `--evaluate` adds `scores.json`: mIoU and pixel accuracy of
eval.segmenter on the generated images against their layouts (by default the built-in data's
reference segmenter on that data) and, with eval.extractor, FID/KID against the real photos.

Inference runs as the exported model does: spectral norm folded into the kernels, graph mode
(`tf.function`) without XLA, float32 or mixed bfloat16 (export.precision; an export keeps the
precision it was written with), seeds drawn as the `with_seed` signature draws them, so a run
folder and its export give the same images.
"""

import argparse
import dataclasses
import html
import json
import pathlib
import sys
import typing

import numpy as np

SYNTHESIZED, INPUT_LABEL, REAL = "synthesized", "input_label", "real"
LABEL_MAP_KEYS = ("label_nc", "contain_dontcare_label", "no_instance")  # a dataset must share these with the model


# --- the model -----------------------------------------------------------------------------

@dataclasses.dataclass
class Model:
    """A generator behind the export contract's signatures (`with_seed`, and `with_z`/`encode_style`
    for VAE models), called with keyword tensors, returning dicts of tensors."""

    cfg: typing.Any
    signatures: dict
    source: str
    owner: typing.Any = None  # what the signatures' variables belong to, kept alive

    @property
    def use_vae(self) -> bool:
        return bool(self.cfg.model.use_vae)

    @property
    def use_instance(self) -> bool:
        return not self.cfg.data.no_instance


def keras_model(cfg, generator, encoder=None, source="keras") -> Model:
    """A Model from trained Keras networks: spectral norm folded, in `cfg.export.precision`, graph mode without XLA."""
    import tensorflow as tf

    from spade_tf.export.fold import inference_networks
    from spade_tf.export.module import ExportModule, to_uint8

    module = ExportModule(cfg, *inference_networks(cfg, generator, encoder))

    def with_seed(label_map, seed, instance_map=None):
        semantics = module.preprocess(label_map, instance_map)
        return {"image": to_uint8(module.generate(semantics, module.seeded_z(label_map, seed)))}

    def with_z(label_map, z, instance_map=None):
        semantics = module.preprocess(label_map, instance_map)
        return {"image": to_uint8(module.generate(semantics, module.given_z(label_map, z)))}

    specs = {
        "label_map": tf.TensorSpec([None, None, None], tf.uint8),
        "instance_map": tf.TensorSpec([None, None, None], tf.int32),
        "seed": tf.TensorSpec([None], tf.int64),
        "z": tf.TensorSpec([None, cfg.model.z_dim], tf.float32),
        "image": tf.TensorSpec([None, None, None, 3], tf.uint8),
    }
    layout = ["label_map"] + (["instance_map"] if module.use_instance else [])
    functions = {"with_seed": (with_seed, layout + ["seed"])}
    if module.use_vae:
        functions.update(with_z=(with_z, layout + ["z"]), encode_style=(module.encode_style, ["image"]))

    def signature(function, names):
        """Called with keyword tensors, as a loaded SavedModel's signature; traced once for any batch and size."""
        traced = tf.function(lambda inputs: function(**inputs), input_signature=[{n: specs[n] for n in names}],
                             jit_compile=False)
        return lambda **inputs: traced(inputs)

    signatures = {name: signature(function, names) for name, (function, names) in functions.items()}
    return Model(cfg, signatures, source, module)


def load_run(run_dir, checkpoint=None, overrides=()) -> Model:
    """A training run folder's networks (`spade_tf.training.checkpoints.restore_networks`), with its
    config.yaml plus `section.field=value` overrides."""
    from spade_tf.training.checkpoints import restore_networks

    cfg, generator, encoder = restore_networks(run_dir, checkpoint, overrides=overrides)
    return keras_model(cfg, generator, encoder, f"run {run_dir}")


def load_nvlabs(nvlabs_dir, opt=None, which_epoch="latest", config=None, overrides=()) -> Model:
    """An NVlabs/SPADE checkpoint folder (`<which_epoch>_net_G.pth`, `_E` for VAE models) and its opt.txt."""
    from spade_tf.config import apply, load_config, parse_override
    from spade_tf.io.nvlabs import config_from_opt, import_checkpoint

    opt = pathlib.Path(opt or pathlib.Path(nvlabs_dir) / "opt.txt")
    if not opt.is_file():
        raise FileNotFoundError(f"{opt} not found: pass the reference's opt.txt with --opt")
    cfg = config_from_opt(opt, load_config(config))
    for text in overrides:  # after opt.txt, whose dataroot is the training machine's
        apply(cfg, parse_override(cfg, text), "command line")
    generator, _, encoder = import_checkpoint(nvlabs_dir, cfg, which_epoch)
    if cfg.model.use_vae and encoder is None:
        raise FileNotFoundError(f"{opt} describes a VAE model but {nvlabs_dir} has no {which_epoch}_net_E.pth")
    return keras_model(cfg, generator, encoder, f"NVlabs checkpoint {nvlabs_dir}")


def load_saved_model(path, overrides=()) -> Model:
    """An export (EXPORT_CONTRACT.md): a version folder, or a model base path (its highest version).

    Its config.yaml plus overrides; the networks and precision are the export's, so overrides of
    model.* and export.* are refused.
    """
    import tensorflow as tf

    from spade_tf.config import IMPLEMENTATION_KEYS, load_config
    from spade_tf.export import ASSETS_EXTRA, writer

    path = pathlib.Path(path)
    if not (path / "saved_model.pb").is_file():
        versions = writer.versions(path)
        if not versions:
            raise FileNotFoundError(
                f"{path} is neither a SavedModel version folder nor a model base path with integer versions"
            )
        path = path / str(versions[-1])
    config = path / ASSETS_EXTRA / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{config} not found: {path} was not written by spade-tf's export")
    cfg, own = load_config(str(config), overrides), load_config(str(config))
    fixed = [f"{section}.{name}={value!r}" for section in ("model", "export")
             for name, value in dataclasses.asdict(getattr(cfg, section)).items()
             if value != getattr(getattr(own, section), name) and f"{section}.{name}" not in IMPLEMENTATION_KEYS]
    cfg.model.spade_impl = own.model.spade_impl  # the export's graph computes as it was written
    if fixed:
        raise ValueError(
            f"{', '.join(fixed)}: an export's networks and precision are fixed when it is written; "
            "model.* and export.* overrides apply to --run_dir and --nvlabs_dir"
        )
    loaded = tf.saved_model.load(str(path))
    return Model(cfg, dict(loaded.signatures), f"SavedModel {path}", loaded)


def with_data_config(model: Model, preset, overrides=()) -> None:
    """Reads layouts with `preset`'s data settings (+ overrides), at the model's label set and size."""
    from spade_tf.config import load_config

    data = load_config(preset, overrides).data
    own = model.cfg.data
    differ = [f"{k}: {getattr(data, k)!r} in {preset}, {getattr(own, k)!r} in the model"
              for k in LABEL_MAP_KEYS if getattr(data, k) != getattr(own, k)]
    if differ:
        raise ValueError(f"--config {preset} describes another label set than the model's ({'; '.join(differ)})")
    data.crop_size, data.aspect_ratio = own.crop_size, own.aspect_ratio
    model.cfg = dataclasses.replace(model.cfg, data=data)


# --- layouts ---------------------------------------------------------------------------------

@dataclasses.dataclass
class Layout:
    """One layout: uint8 class ids [H, W] (255 = unknown), int32 instance ids or None, uint8 photo or None."""

    stem: str
    label: np.ndarray
    instance: typing.Optional[np.ndarray] = None
    real: typing.Optional[np.ndarray] = None


def palette(cfg) -> np.ndarray:
    from spade_tf.data.classes import palette as dataset_palette

    return dataset_palette(cfg.data.dataset_mode, cfg.data.label_nc)


def read_label_png(path, cfg) -> np.ndarray:
    """A label PNG -> uint8 class ids [H, W] at the model's trained size; ValueError naming the file."""
    from PIL import Image, UnidentifiedImageError

    from spade_tf.data.classes import decolorize
    from spade_tf.data.datasets import ID_MODES
    from spade_tf.semantics import UNKNOWN_LABEL, class_indices

    d = cfg.data
    try:
        with Image.open(path) as im:
            mode, pixels = im.mode, np.asarray(im.convert("RGB") if im.mode == "RGBA" else im)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f"label file {path} is not a readable image: {e}") from None
    try:
        if mode in ("RGB", "RGBA"):
            label = decolorize(pixels, palette(cfg), UNKNOWN_LABEL if d.contain_dontcare_label else None)
        elif mode in ID_MODES:
            label = pixels
        else:
            raise ValueError(f"it is a {mode}-mode image; expected class ids (8/16-bit grey or palette) or RGB colours")
        class_indices(label, d.label_nc, d.contain_dontcare_label)  # raises for values outside the label set
    except ValueError as e:
        raise ValueError(f"label file {path}: {e}") from None
    label = label.astype(np.uint8)
    height, width = cfg.image_size
    if label.shape != (height, width):
        label = np.asarray(Image.fromarray(label).resize((width, height), Image.NEAREST))
    return label


def label_folder(folder, cfg, how_many=0) -> typing.Tuple[int, typing.Iterator[Layout]]:
    """(count, layouts) of the first `how_many` (0: all) label PNGs in `folder`, in name order."""
    from spade_tf.data.datasets import natural_key

    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"label folder {folder} does not exist")
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file()), key=natural_key)
    if not files:
        raise ValueError(f"no label PNGs (*.png) in {folder}")
    files = files[:how_many or None]

    def layouts():
        for path in files:
            label = read_label_png(path, cfg)
            yield Layout(path.stem, label, label.astype(np.int32) if not cfg.data.no_instance else None)

    return len(files), layouts()


def dataset_layouts(cfg, split, batch_size, how_many=0) -> typing.Tuple[int, typing.Iterator[Layout]]:
    """(count, layouts) of the first `how_many` (0: all) samples of a dataset split, read and
    preprocessed as in evaluation (no flip).

    File datasets stop at a bad file (data.on_bad_file is taken as "stop"): a dropped sample would
    shift the names of the outputs after it.
    """
    from spade_tf.data import build_dataset, list_files
    from spade_tf.data.datasets import split_folder
    from spade_tf.training.visuals import to_uint8

    if cfg.data.dataset_mode == "synthetic":
        count = min(cfg.data.synthetic_size, how_many or cfg.data.synthetic_size)
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, synthetic_size=count))
        stems = (f"{split_folder(split)}_{i:05d}" for i in range(count))
    else:
        limit = min((n for n in (cfg.data.max_dataset_size, how_many) if n), default=0)
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, on_bad_file="stop", max_dataset_size=limit))
        samples = list_files(cfg.data, split)
        count = len(samples)
        stems = (pathlib.Path(s.label).stem for s in samples)

    def layouts():
        for batch in build_dataset(cfg, split, batch_size=batch_size).as_numpy_iterator():
            instances = batch.get("instance")
            for i, label in enumerate(batch["label"]):
                instance = None if instances is None else instances[i].astype(np.int32)
                yield Layout(next(stems), label.astype(np.uint8), instance, to_uint8(batch["image"][i]))

    return count, layouts()


# --- outputs ---------------------------------------------------------------------------------

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
        import tensorflow as tf

        from spade_tf.evaluation.fid import read_rgb

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


def synthesize(model: Model, layouts, total, out, columns, batch_size=1, score=None, progress=True) -> dict:
    """Generates the missing outputs of `total` layouts, in batches.

    `columns` are the `variants` to generate per layout. `score` (optional) is called as
    score(image uint8 [H, W, 3], layout) for every generated image, new or already on disk.
    Returns {"layouts", "written", "skipped", "synthesized": [paths], "real": [paths]}.
    """
    import keras
    import tensorflow as tf

    from spade_tf.data.classes import colorize
    from spade_tf.evaluation.fid import read_rgb
    from spade_tf.training.visuals import save_png

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
        inputs = {"label_map": tf.constant(np.stack([layout.label for layout, *_ in jobs]))}
        if model.use_instance:
            inputs["instance_map"] = tf.constant(np.stack([layout.instance for layout, *_ in jobs]), tf.int32)
        if jobs[0][1].z is not None:
            inputs["z"] = tf.constant(np.stack([v.z for _, v, *_ in jobs]), tf.float32)
            images = model.signatures["with_z"](**inputs)["image"].numpy()
        else:
            inputs["seed"] = tf.constant([v.seed for _, v, *_ in jobs], tf.int64)
            images = model.signatures["with_seed"](**inputs)["image"].numpy()
        for (layout, _, path, _), image in zip(jobs, images):
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


# --- evaluation and the command line ------------------------------------------------------------

def segmenter_of(cfg):
    """eval.segmenter resolved: "auto" is the built-in data's reference segmenter on that data, else
    None; "none" is None."""
    from spade_tf.evaluation.segmentation import BUILTIN

    name = cfg.eval.segmenter
    if name == "auto":
        return BUILTIN if cfg.data.dataset_mode == "synthetic" else None
    return None if name == "none" else name


def build_parser() -> argparse.ArgumentParser:
    from spade_tf.evaluation.options import retire_flags

    parser = argparse.ArgumentParser(
        prog="python -m spade_tf.generate", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run_dir", help="a training run folder (config.yaml and checkpoints)")
    source.add_argument("--saved_model", help="an exported SavedModel: a version folder or a model base path")
    source.add_argument("--nvlabs_dir", help="an NVlabs/SPADE checkpoint folder (latest_net_G.pth, _E for VAE)")
    parser.add_argument("--checkpoint", help="with --run_dir: a checkpoint prefix (default: the latest)")
    parser.add_argument("--opt", help="with --nvlabs_dir: the reference's opt.txt (default: <nvlabs_dir>/opt.txt)")
    parser.add_argument("--which_epoch", default="latest", help="with --nvlabs_dir: the checkpoint's epoch name")
    parser.add_argument("--config", help="a preset or YAML file whose data settings read the layouts "
                        "(with --nvlabs_dir: the base that opt.txt is applied to)")
    parser.add_argument("--labels", help="a folder of label PNGs (class ids or palette colours) instead of a dataset")
    parser.add_argument("--out", help="output folder (default: results/<name>)")
    parser.add_argument("--style", help="VAE models: generate in the style of this photo")
    parser.add_argument("--evaluate", action="store_true",
                        help="write scores.json: mIoU, pixel accuracy (eval.segmenter), FID, KID (eval.extractor)")
    parser.add_argument("overrides", nargs="*", metavar="section.field=value",
                        help="config overrides, e.g. eval.batch_size=4 data.dataroot=datasets/cityscapes")
    retire_flags(parser, ["--split", "--how_many", "--seeds", "--batch_size", "--precision", "--segmenter",
                          "--extractor", "--inception_graph", "--weights"])
    return parser


def run(args) -> dict:
    """The command, from parsed arguments; returns synthesize's summary (+ "scores" with --evaluate)."""
    from spade_tf.evaluation.options import check

    if args.run_dir:
        model = load_run(args.run_dir, args.checkpoint, args.overrides)
    elif args.saved_model:
        model = load_saved_model(args.saved_model, args.overrides)
    else:
        model = load_nvlabs(args.nvlabs_dir, args.opt, args.which_epoch, args.config, args.overrides)
    if args.config and not args.nvlabs_dir:
        with_data_config(model, args.config, args.overrides)
    cfg = model.cfg
    options = cfg.eval
    check(options)
    columns = variants(model, options.seeds, args.style)
    if args.labels:
        total, layouts = label_folder(args.labels, cfg, options.how_many)
    else:
        total, layouts = dataset_layouts(cfg, options.split, options.batch_size, options.how_many)
    out = pathlib.Path(args.out or pathlib.Path("results") / cfg.name)

    score = segmenter = extractor = None
    if args.evaluate:
        from spade_tf.evaluation.inception import build_extractor
        from spade_tf.evaluation.segmentation import SegmentationScore

        segmenter = segmenter_of(cfg)
        if segmenter:
            scorer = SegmentationScore(segmenter, cfg.data.label_nc)
            score = lambda image, layout: scorer.update(image[None], layout.label[None])  # noqa: E731
        if options.extractor != "none":  # built before generating, so that a missing file fails first
            extractor = build_extractor(options.extractor, options.inception_graph, options.keras_inception_weights)
    summary = synthesize(model, layouts, total, out, columns, options.batch_size, score)
    print(f"{summary['written']} images written, {summary['skipped']} already there; see {out / 'index.html'}")
    if not args.evaluate:
        return summary

    scores = {"layouts": summary["layouts"], "images": len(summary["synthesized"])}
    if score:
        scores["segmenter"] = str(segmenter)
        scores.update(scorer.result())
    else:
        reason = ("eval.segmenter is 'none'" if options.segmenter == "none" else
                  f"dataset_mode {cfg.data.dataset_mode} has no built-in segmenter; give eval.segmenter=SAVEDMODEL")
        print(f"no segmentation scores: {reason}", file=sys.stderr)
    if extractor and summary["real"]:
        from spade_tf.evaluation.fid import fid_kid

        scores["extractor"] = extractor.name
        scores.update(fid_kid(summary["real"], summary["synthesized"], extractor, options.batch_size,
                              options.kid_subsets, options.kid_subset_size))
    elif extractor:
        print("no FID/KID: these layouts have no real photos to compare with", file=sys.stderr)
    else:
        print("no FID/KID: eval.extractor is 'none'", file=sys.stderr)
    (out / "scores.json").write_text(json.dumps(scores, indent=1) + "\n")
    print(json.dumps({k: v for k, v in scores.items() if k != "per_class_iou"}))
    return {**summary, "scores": scores}


def main(argv=None) -> int:
    args = build_parser().parse_intermixed_args(argv)  # overrides may stand between flags
    import tensorflow as tf

    from spade_tf.config import ConfigError

    try:
        run(args)
    except (ConfigError, ValueError, FileNotFoundError, tf.errors.InvalidArgumentError) as e:
        message = e.message if isinstance(e, tf.errors.OpError) else str(e)
        print(f"spade_tf.generate: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
