"""`python train.py ...`: the same command as `spade-tf-train` (`spade_tf/commands/train.py`)."""

import sys

from spade_tf.commands import train as command


def main(argv=None) -> int:
    return command.main(argv, prog="train.py")


if __name__ == "__main__":
    sys.exit(main())
