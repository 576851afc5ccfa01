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
NVlabs checkpoint folder with the reference's opt.txt (`spade_tf.evaluation.sources`). The
layouts are a folder of label PNGs (class indices, or colours of the dataset's palette; resized
nearest-neighbour to the model's trained size when they differ; a model that uses instance maps
gets the label map as instance map, so class boundaries are its edges) or a dataset read with the
model's config (eval.split, plus overrides such as data.dataroot=...; `--config` swaps in a
preset's data settings, keeping the model's label set, crop_size and aspect_ratio).

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
import json
import pathlib
import sys

import tensorflow as tf

from spade_tf.config import ConfigError, parse_overrides
from spade_tf.evaluation import options
from spade_tf.evaluation.fid import fid_kid
from spade_tf.evaluation.inception import build_extractor
from spade_tf.evaluation.layouts import dataset_layouts, label_folder
from spade_tf.evaluation.segmentation import SegmentationScore, segmenter_of
from spade_tf.evaluation.sources import Model, load_nvlabs, load_run, load_saved_model, with_data_config
from spade_tf.evaluation.synthesis import synthesize, variants

PROG = "python -m spade_tf.generate"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0],
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
    options.retire_flags(parser, ["--split", "--how_many", "--seeds", "--batch_size", "--precision", "--segmenter",
                                  "--extractor", "--inception_graph", "--weights"])
    return parser


def load_model(args) -> Model:
    """The model the flags name, with the overrides (and --config's data settings) applied."""
    overrides = parse_overrides(args.overrides)  # once, for the model's config and --config's data section
    if args.run_dir:
        model = load_run(args.run_dir, args.checkpoint, overrides)
    elif args.saved_model:
        model = load_saved_model(args.saved_model, overrides)
    else:
        model = load_nvlabs(args.nvlabs_dir, args.opt, args.which_epoch, args.config, overrides)
    if args.config and not args.nvlabs_dir:
        model = with_data_config(model, args.config, overrides)
    return model


def segmentation_scorer(cfg):
    """A SegmentationScore for eval.segmenter, or None when there is none (and why is printed at the end)."""
    segmenter = segmenter_of(cfg)
    return SegmentationScore(segmenter, cfg.data.label_nc) if segmenter else None


def scores_of(summary, cfg, scorer, extractor) -> dict:
    """scores.json's content: segmentation scores and FID/KID where they apply; prints why others are absent."""
    settings = cfg.eval
    scores = {"layouts": summary["layouts"], "images": len(summary["synthesized"])}
    if scorer:
        scores["segmenter"] = str(segmenter_of(cfg))
        scores.update(scorer.result())
    else:
        reason = ("eval.segmenter is 'none'" if settings.segmenter == "none" else
                  f"dataset_mode {cfg.data.dataset_mode} has no built-in segmenter; give eval.segmenter=SAVEDMODEL")
        print(f"no segmentation scores: {reason}", file=sys.stderr)
    if extractor and summary["real"]:
        scores["extractor"] = extractor.name
        scores.update(fid_kid(summary["real"], summary["synthesized"], extractor, settings.batch_size,
                              settings.kid_subsets, settings.kid_subset_size))
    elif extractor:
        print("no FID/KID: these layouts have no real photos to compare with", file=sys.stderr)
    else:
        print("no FID/KID: eval.extractor is 'none'", file=sys.stderr)
    return scores


def run(args) -> dict:
    """The command, from parsed arguments; returns synthesize's summary (+ "scores" with --evaluate)."""
    model = load_model(args)
    cfg = model.cfg
    settings = cfg.eval
    options.check(settings)
    columns = variants(model, settings.seeds, args.style)
    if args.labels:
        total, layouts = label_folder(args.labels, cfg, settings.how_many)
    else:
        total, layouts = dataset_layouts(cfg, settings.split, settings.batch_size, settings.how_many)
    out = pathlib.Path(args.out or pathlib.Path("results") / cfg.name)

    scorer = extractor = score = None
    if args.evaluate:
        scorer = segmentation_scorer(cfg)
        if scorer:
            score = lambda image, layout: scorer.update(image[None], layout.label[None])  # noqa: E731
        if settings.extractor != "none":  # built before generating, so that a missing file fails first
            extractor = build_extractor(settings.extractor, settings.inception_graph, settings.keras_inception_weights)
    summary = synthesize(model, layouts, total, out, columns, settings.batch_size, score)
    print(f"{summary['written']} images written, {summary['skipped']} already there; see {out / 'index.html'}")
    if not args.evaluate:
        return summary
    scores = scores_of(summary, cfg, scorer, extractor)
    (out / "scores.json").write_text(json.dumps(scores, indent=1) + "\n")
    print(json.dumps({k: v for k, v in scores.items() if k != "per_class_iou"}))
    return {**summary, "scores": scores}


def main(argv=None) -> int:
    args = build_parser().parse_intermixed_args(argv)  # overrides may stand between flags
    try:
        run(args)
    except (ConfigError, ValueError, FileNotFoundError, tf.errors.InvalidArgumentError) as e:
        message = e.message if isinstance(e, tf.errors.OpError) else str(e)
        print(f"spade_tf.generate: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
