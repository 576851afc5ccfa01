"""Export a trained SPADE generator for TensorFlow Serving: `<export_dir>/<version>/`.

    python export.py --run_dir checkpoints/synthetic [--checkpoint PATH] [--export_dir exports/spade]
                     [--version N] [section.field=value ...]

The config is the run folder's config.yaml plus the overrides (e.g. export.precision=bfloat16).
The layout of an export is described in `spade_tf.export`. Bad input exits with code 2.
"""

import argparse
import sys


def main(argv=None, prog=None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", required=True, help="a training run folder (config.yaml and checkpoints)")
    parser.add_argument(
        "--checkpoint", help="a checkpoint prefix, e.g. checkpoints/synthetic/ckpt-500 (default: the latest)"
    )
    parser.add_argument("--export_dir", help="TF Serving's model base path (default: export.export_dir)")
    parser.add_argument(
        "--version", type=int, help="integer version to write (default: export.version; 0 = the next free)"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="section.field=value", help="config overrides, e.g. export.precision=bfloat16"
    )
    args = parser.parse_args(argv)

    from spade_tf.export import export_run  # after parsing, so that --help does not load TensorFlow

    try:
        path = export_run(args.run_dir, args.checkpoint, args.export_dir, args.version, args.overrides)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"{parser.prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
