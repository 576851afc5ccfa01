"""The command-line entry points that `pyproject.toml` installs as `spade-tf-*` commands.

`train` and `export` are also the repository's `train.py` and `export.py`; the others live with their
package (`serving.server`, `serving.studio`, `spade_tf.generate`, `spade_tf.io.nvlabs`, `spade_tf_client.cli`).
"""
