"""`python export.py ...`: the same command as `spade-tf-export` (`spade_tf/commands/export.py`)."""

import sys

from spade_tf.commands.export import main

if __name__ == "__main__":
    sys.exit(main())
