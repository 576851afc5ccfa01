import sys

from spade_tf_client.cli import main

sys.exit(main(prog="python -m spade_tf_client"))
