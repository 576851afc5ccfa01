"""The client for a SPADE model behind TF Serving's API: the light client `spade_tf_client` (one
implementation; it installs without TensorFlow as the `spade-tf-client` distribution in `client/`).

    python -m serving.client --server localhost:8500 --model spade --label labels.png --out image.png \
        [--seed N] [--instance inst.png] [--labels_json path | --model_base_path exports/spade]
"""

import sys

from spade_tf_client.cli import main, parser
from spade_tf_client.client import MAX_MESSAGE_BYTES, SpadeClient, SpadeClientError, read_labels_json
from spade_tf_client.contract import ContractError, read_instance_png, read_label_png

__all__ = ["ContractError", "MAX_MESSAGE_BYTES", "SpadeClient", "SpadeClientError", "main", "parser",
           "read_instance_png", "read_label_png", "read_labels_json"]

if __name__ == "__main__":
    sys.exit(main(prog="python -m serving.client"))
