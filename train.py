"""`python train.py ...`: the same command as `spade-tf-train` (`spade_tf/commands/train.py`)."""

import sys

from spade_tf.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
