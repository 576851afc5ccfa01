"""`python export.py ...`: the same command as `spade-tf-export` (`spade_tf/commands/export.py`)."""

import sys

from spade_tf.commands import export as command


def main(argv=None) -> int:
    return command.main(argv, prog="export.py")


if __name__ == "__main__":
    sys.exit(main())
