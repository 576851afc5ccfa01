"""Versioned, atomic SavedModel folders and TF Serving warm-up records.

A model base path holds integer version folders `<export_dir>/<version>/` (TF Serving ignores
other names). A version is written to `<export_dir>/.tmp-<version>-<pid>/` and renamed into place
only when complete, so a server polling the folder never sees half a model and a crash leaves no
integer folder. An existing version is never overwritten.
"""

import os
import pathlib
import shutil

import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from spade_tf_client.contract import MAX_WARMUP_RECORDS, version_folders as versions


def resolve_version(export_dir, version=None) -> int:
    """`version`, or the next free one when it is None or 0; FileExistsError if it is taken."""
    if not version:
        return max(versions(export_dir), default=0) + 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer (or 0 for the next free one), got {version!r}")
    if version in versions(export_dir) or (pathlib.Path(export_dir) / str(version)).exists():
        raise FileExistsError(
            f"version {version} already exists in {export_dir}; versions are never overwritten: "
            f"give another version or leave it out to use the next free one ({resolve_version(export_dir)})"
        )
    return version


def write_version(export_dir, version, write) -> pathlib.Path:
    """Calls `write(folder)` on a temporary folder, then renames it to `<export_dir>/<version>`.

    `version` None or 0 means the next free one. On any error the temporary folder is removed.
    """
    export_dir = pathlib.Path(export_dir)
    version = resolve_version(export_dir, version)
    export_dir.mkdir(parents=True, exist_ok=True)
    final = export_dir / str(version)
    tmp = export_dir / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # left by an earlier crash of a process with our pid
    try:
        write(tmp)
        if final.exists():  # another exporter took the version meanwhile
            raise FileExistsError(f"version {version} appeared in {export_dir} while it was being written")
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def warmup_record(model_name: str, signature: str, inputs: dict) -> prediction_log_pb2.PredictionLog:
    """One warm-up record: a PredictRequest for `signature` with NumPy `inputs`."""
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))


def write_warmup_requests(path, records) -> None:
    """Writes PredictionLog records as the TFRecord file TF Serving replays when it loads a model."""
    records = list(records)
    if len(records) > MAX_WARMUP_RECORDS:
        raise ValueError(
            f"{len(records)} warm-up records; TF Serving loads at most {MAX_WARMUP_RECORDS}: "
            "lower export.warmup_requests"
        )
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record.SerializeToString())
