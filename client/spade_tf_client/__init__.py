"""spade-tf's light client: query a SPADE model behind TF Serving's gRPC or REST API without TensorFlow.

    from spade_tf_client import SpadeClient
    with SpadeClient("localhost:8500", model="spade") as client:
        image = client.synthesize(label_map, seed=3)

`spade_tf_client.contract` holds the export contract (labels.json, sizes, labels, palettes, label
PNGs, version folders), shared with the main `spade-tf` package.
"""

from spade_tf_client.client import SpadeClient, SpadeClientError, read_labels_json
from spade_tf_client.contract import ContractError, LabelsJson

__all__ = ["ContractError", "LabelsJson", "SpadeClient", "SpadeClientError", "read_labels_json"]
