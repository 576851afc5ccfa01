"""FID and KID between two image folders.

    python -m spade_tf.evaluation fid --real DIR --fake DIR
        [--extractor inception-2015 --inception_graph classify_image_graph_def.pb
         | --extractor keras-inceptionv3 --weights inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5]

Prints {"fid", "kid", "kid_std", "num_real", "num_fake", "extractor"} as JSON. Only
inception-2015 gives FIDs comparable with published ones (see `spade_tf.evaluation.inception`).
Bad input exits with code 2.
"""

import argparse
import json
import sys

from spade_tf.evaluation.fid import KID_SUBSET_SIZE, KID_SUBSETS, fid_kid


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spade_tf.evaluation", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fid = commands.add_parser("fid", help="FID and KID between two image folders")
    fid.add_argument("--real", required=True, help="folder of real images (png, jpg, jpeg, bmp)")
    fid.add_argument("--fake", required=True, help="folder of generated images")
    fid.add_argument("--extractor", default="inception-2015",
                     help="inception-2015 (default, comparable) or keras-inceptionv3")
    fid.add_argument("--inception_graph", help="inception-2015: local classify_image_graph_def.pb")
    fid.add_argument("--weights", help="keras-inceptionv3: local weights file (no top)")
    fid.add_argument("--batch_size", type=int, default=50, help="images per extractor call (default 50)")
    fid.add_argument("--kid_subsets", type=int, default=KID_SUBSETS,
                     help=f"KID: random subsets (default {KID_SUBSETS})")
    fid.add_argument("--kid_subset_size", type=int, default=KID_SUBSET_SIZE,
                     help=f"KID: images per subset (default {KID_SUBSET_SIZE})")
    args = parser.parse_args(argv)

    from spade_tf.evaluation.inception import build_extractor  # after parsing: --help does not load TensorFlow

    try:
        extractor = build_extractor(args.extractor, args.inception_graph, args.weights)
        result = fid_kid(args.real, args.fake, extractor, args.batch_size, args.kid_subsets, args.kid_subset_size)
    except (ValueError, FileNotFoundError) as e:
        print(f"spade_tf.evaluation: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({**result, "extractor": extractor.name}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
