"""Reading other frameworks' weights: PyTorch `.pth` state dicts, NVlabs/SPADE checkpoints."""

from spade_tf.io.torch_pth import CheckpointError, load_state_dict

__all__ = ["CheckpointError", "load_state_dict"]
