"""FID and KID between two image folders.

    python -m spade_tf.evaluation fid --real DIR --fake DIR [--config PRESET_OR_YAML]
        eval.extractor=inception-2015 eval.inception_graph=classify_image_graph_def.pb
        [eval.batch_size=N] [eval.kid_subsets=N] [eval.kid_subset_size=N]

The options are the config's `eval` section (`spade_tf.config.EvalConfig`): its defaults, then
--config (e.g. a run folder's config.yaml), then `section.field=value` overrides. Only
inception-2015 gives FIDs comparable with published ones; eval.extractor=keras-inceptionv3 with
eval.keras_inception_weights=FILE is the alternative (see `spade_tf.evaluation.inception`).
Prints {"fid", "kid", "kid_std", "num_real", "num_fake", "extractor"} as JSON. Bad input exits
with code 2.
"""

import argparse
import json
import sys

from spade_tf.config import ConfigError, add_config_arguments, config_from_args
from spade_tf.evaluation import options
from spade_tf.evaluation.fid import fid_kid

NO_EXTRACTOR = (
    "no feature extractor: give eval.extractor=inception-2015 eval.inception_graph=classify_image_graph_def.pb "
    "(FIDs comparable with published ones) or eval.extractor=keras-inceptionv3 eval.keras_inception_weights=FILE"
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spade_tf.evaluation", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fid = commands.add_parser("fid", help="FID and KID between two image folders", epilog=__doc__.split("\n\n", 1)[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    fid.add_argument("--real", required=True, help="folder of real images (png, jpg, jpeg, bmp)")
    fid.add_argument("--fake", required=True, help="folder of generated images")
    add_config_arguments(fid)
    options.retire_flags(
        fid, ["--batch_size", "--kid_subsets", "--kid_subset_size", "--extractor", "--inception_graph", "--weights"]
    )
    args = parser.parse_args(argv)

    from spade_tf.evaluation.inception import build_extractor  # after parsing: --help does not load TensorFlow

    try:
        settings = config_from_args(args).eval
        options.check(settings)
        if settings.extractor == "none":
            raise ConfigError(NO_EXTRACTOR)
        extractor = build_extractor(settings.extractor, settings.inception_graph, settings.keras_inception_weights)
        result = fid_kid(
            args.real, args.fake, extractor, settings.batch_size, settings.kid_subsets, settings.kid_subset_size
        )
    except (ValueError, FileNotFoundError) as error:  # ConfigError is a ValueError
        print(f"spade_tf.evaluation: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({**result, "extractor": extractor.name}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
