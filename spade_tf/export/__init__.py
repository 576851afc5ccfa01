"""Export to a TF Serving SavedModel: `<export_dir>/<version>/` (docs: EXPORT_CONTRACT.md).

Each version folder holds the SavedModel (signatures in `spade_tf.export.module`) and
`assets.extra/` with `labels.json` (class names, palette, sizes, signatures), the run's
`config.yaml` and `tf_serving_warmup_requests`.
"""

import pathlib

import numpy as np
import tensorflow as tf

from spade_tf_client.contract import ASSETS_EXTRA, LABELS_FILE, WARMUP_FILE

from spade_tf.export import writer
from spade_tf.export.labels import labels_json
from spade_tf.export.fold import fold_spectral_norm, inference_networks
from spade_tf.export.module import ExportModule
from spade_tf.training.checkpoints import restore_networks


def export_model(cfg, generator, encoder=None, export_dir=None, version=None) -> pathlib.Path:
    """Writes `generator` (and, for VAE models, `encoder`), built from `cfg`, as a new version.

    Spectral norm is folded into the kernels and the networks compute in `cfg.export.precision`.
    `export_dir` defaults to `cfg.export.export_dir`, `version` to `cfg.export.version` (0 = the
    next free one). Returns the version folder. FileExistsError if the version exists.
    """
    export_dir = pathlib.Path(export_dir or cfg.export.export_dir)
    version = writer.resolve_version(export_dir, version or cfg.export.version)  # fail before the slow part
    module = ExportModule(cfg, *inference_networks(cfg, generator, encoder))
    signatures = module.signatures()
    labels = labels_json(cfg, signatures)
    rng = np.random.default_rng(0)
    warmup = [
        writer.warmup_record(cfg.export.model_name, name, module.example_inputs(name, rng))
        for name in signatures
        for _ in range(cfg.export.warmup_requests)
    ]

    def write(folder):
        extra = folder / ASSETS_EXTRA
        extra.mkdir(parents=True)
        if warmup:
            writer.write_warmup_requests(extra / WARMUP_FILE, warmup)
        labels.write(extra / LABELS_FILE)
        cfg.to_yaml(extra / "config.yaml")
        tf.saved_model.save(module, str(folder), signatures=signatures)

    return writer.write_version(export_dir, version, write)


def export_run(run_dir, checkpoint=None, export_dir=None, version=None, overrides=()) -> pathlib.Path:
    """Exports a run folder's checkpoint (default: the latest; the moving-average generator when
    the run kept one), with its config.yaml plus `section.field=value` overrides."""
    if checkpoint is not None and not pathlib.Path(f"{checkpoint}.index").exists():
        raise FileNotFoundError(
            f"checkpoint {checkpoint} not found (expected {checkpoint}.index, e.g. {run_dir}/ckpt-500)"
        )
    cfg, generator, encoder = restore_networks(run_dir, checkpoint, overrides=overrides)
    return export_model(cfg, generator, encoder, export_dir, version)


__all__ = ["ExportModule", "export_model", "export_run", "fold_spectral_norm", "inference_networks", "writer"]
