"""`python -m spade_tf.generate`: the synthesis command, kept under its old name.

It lives in the evaluation package beside the scores it writes: `spade_tf.evaluation.generate`
(the command), `.sources` (run folders, exports, NVlabs checkpoints), `.layouts`, `.synthesis`.
"""

import sys

from spade_tf.evaluation.generate import build_parser, main, run

__all__ = ["build_parser", "main", "run"]

if __name__ == "__main__":
    sys.exit(main())
