"""Models and their versions, as TF Serving's ServerCore and file-system source manage them.

Each model has a base path of numbered version folders. A poll finds them; the version policy
(`latest` N, default 1; `all`; `specific`) picks the versions to serve among those that have not
failed to load; new ones load (SavedModel, `assets.extra/labels.json`, warm-up requests) while the
others keep serving, then versions no longer wanted unload. A version that fails to load is logged,
kept as END with its error, and not retried until its folder goes away.
"""

import dataclasses
import logging
import pathlib
import threading

import grpc
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_status_pb2, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving import predict
from serving.errors import ServingError, internal_error
from spade_tf_client import contract

log = logging.getLogger(__name__)

State = get_model_status_pb2.ModelVersionStatus.State


@dataclasses.dataclass(eq=False)  # compared and hashed by identity (a batching queue key)
class Servable:
    """One loaded model version."""

    name: str
    version: int
    path: pathlib.Path
    signatures: object  # `loaded.signatures`: name -> concrete function
    signature_defs: dict  # name -> SignatureDef, exactly as in saved_model.pb
    labels: contract.LabelsJson | None  # assets.extra/labels.json, if the model has one
    loaded: object  # the SavedModel object, which owns the variables


@dataclasses.dataclass
class VersionStatus:
    state: int
    error: ServingError | None = None


class _Model:
    def __init__(self, config):
        self.config = config
        self.labels = {}  # version label -> version, applied once the versions are available
        self.servables = {}  # version -> Servable (AVAILABLE)
        self.statuses = {}  # version -> VersionStatus
        self.warned_empty = False


def config_for_model(name, base_path):
    """The ModelConfigList that `--model_name` and `--model_base_path` stand for."""
    config = model_server_config_pb2.ModelConfigList()
    config.config.add(name=name, base_path=str(base_path), model_platform="tensorflow")
    return config


class ModelManager:
    """Loads, serves and unloads the versions of the configured models."""

    def __init__(self, poll_wait_seconds=1.0):
        self.poll_wait_seconds = poll_wait_seconds
        self._lock = threading.Lock()  # guards _models; held only briefly, so requests never wait on loads
        self._sync_lock = threading.Lock()  # one sync (poll or config reload) at a time
        self._models = {}
        self._stop = threading.Event()
        self._poller = None

    # configuration and polling

    def set_config(self, config_list):
        """Serve exactly the models of a ModelConfigList; returns when their versions are loaded or failed."""
        names = [c.name for c in config_list.config]
        problems = [f"model {c.name!r}: {p}" for c in config_list.config for p in _config_problems(c)]
        problems += [f"model name {n!r} appears more than once" for n in sorted(set(names)) if names.count(n) > 1]
        if problems:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Invalid model config: " + "; ".join(problems))
        with self._sync_lock:
            with self._lock:
                old = self._models
                self._models = {}
                for c in config_list.config:
                    kept = old.get(c.name)
                    self._models[c.name] = kept if kept and kept.config.base_path == c.base_path else _Model(c)
                    self._models[c.name].config = c
            for name in sorted(set(old) - set(names)):
                log.info("Model %s is no longer in the config: unloaded", name)
            errors = []
            for config in config_list.config:
                model = self._models[config.name]
                self._sync(model)
                missing = {label: v for label, v in config.version_labels.items() if v not in model.servables}
                if missing:
                    errors += [f"Request to assign label to version {v} of model {config.name}, which is not "
                               "currently available for inference" for v in sorted(set(missing.values()))]
                else:
                    with self._lock:
                        model.labels = dict(config.version_labels)
            if errors:
                raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, "; ".join(errors))

    def start_polling(self):
        """Poll the base paths every `poll_wait_seconds` in a thread (not at all when <= 0)."""
        if self.poll_wait_seconds > 0:
            self._poller = threading.Thread(target=self._poll_loop, name="model_poller", daemon=True)
            self._poller.start()

    def stop(self, timeout=None):
        """Stop polling and unload everything. A model load in progress is waited for up to `timeout`
        seconds (None: until it ends); after that the poller (a daemon thread) is left to finish it
        alone, and no further load starts."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout)
            if self._poller.is_alive():
                log.info("Stopping while a model load is in progress: not waiting for it")
        with self._lock:
            self._models = {}

    def poll_once(self):
        with self._sync_lock:
            with self._lock:
                models = list(self._models.values())
            for model in models:
                self._sync(model)

    def _poll_loop(self):
        while not self._stop.wait(self.poll_wait_seconds):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - keep polling; a bad pass is logged
                log.exception("polling the model base paths failed")

    def _sync(self, model):
        """Load the versions the policy wants, then unload the others."""
        on_disk = self._versions_on_disk(model)
        with self._lock:
            for version in [v for v, s in model.statuses.items() if s.error and v not in on_disk]:
                del model.statuses[version]  # its folder is gone: a new one may load
        while True:
            with self._lock:
                failed = {v for v, s in model.statuses.items() if s.error}
                wanted = _aspired(model.config.model_version_policy, set(on_disk) - failed)
                to_load = sorted(wanted - set(model.servables))
                for version in to_load:
                    model.statuses[version] = VersionStatus(State.LOADING)
            if not to_load or self._stop.is_set():
                break
            for version in to_load:
                self._load(model, version, on_disk[version])
        with self._lock:
            for version in sorted(set(model.servables) - wanted):
                del model.servables[version]
                model.statuses[version] = VersionStatus(State.END)
                log.info("Unloaded model %s version %d", model.config.name, version)

    def _versions_on_disk(self, model):
        base = pathlib.Path(model.config.base_path)
        try:
            versions = {int(p.name): p for p in base.iterdir() if contract.is_version_name(p.name) and p.is_dir()}
        except OSError as e:
            log.warning("Cannot list base path %s of model %s: %s", base, model.config.name, e)
            return {}
        if not versions and not model.warned_empty:
            log.warning("No versions of servable %s found under base path %s. Did you forget to name your leaf "
                        "directory as a number (eg. '/1/')?", model.config.name, base)
        model.warned_empty = not versions
        return versions

    def _load(self, model, version, path):
        name = model.config.name
        log.info("Loading model %s version %d from %s", name, version, path)
        try:
            servable = load_servable(name, version, path)
        except Exception as e:  # noqa: BLE001 - any failure is this version's error status
            log.exception("Failed to load model %s version %d from %s", name, version, path)
            with self._lock:
                model.statuses[version] = VersionStatus(State.END, internal_error(f"Loading {path}", e))
            return
        with self._lock:
            model.servables[version] = servable
            model.statuses[version] = VersionStatus(State.AVAILABLE)
        log.info("Model %s version %d is available", name, version)

    # requests

    def resolve(self, model_spec):
        """The servable a ModelSpec asks for, resolved as TF Serving's ServerCore does."""
        name, version, servables = self._requested(model_spec, "servables")
        if version is None:
            if servables:
                return servables[max(servables)]
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})")
        if version in servables:
            return servables[version]
        raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({name}, {version})")

    def status(self, model_spec):
        """[(version, VersionStatus)] for GetModelStatus."""
        name, version, statuses = self._requested(model_spec, "statuses")
        if version is not None:
            if version not in statuses:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}")
            return [(version, statuses[version])]
        if not statuses:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
        return sorted(statuses.items())

    def _requested(self, model_spec, table):
        """(model name, the version the spec names or None for the latest, a snapshot of the model's `table`:
        "servables" or "statuses", by version)."""
        with self._lock:
            model = self._models.get(model_spec.name)
            version = self._requested_version(model, model_spec)
            return model_spec.name, version, dict(getattr(model, table)) if model else {}

    @staticmethod
    def _requested_version(model, model_spec):
        choice = model_spec.WhichOneof("version_choice")
        if choice == "version":
            return model_spec.version.value
        if choice == "version_label":
            label = model_spec.version_label
            if model is None or label not in model.labels:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
            return model.labels[label]
        return None


def load_servable(name, version, path):
    """Load one version folder: SavedModel, its SignatureDefs, labels.json rules; replay its warm-up."""
    loaded = tf.saved_model.load(str(path))
    saved_model = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    graph = next((g for g in saved_model.meta_graphs if "serve" in g.meta_info_def.tags), None)
    if graph is None:
        raise ValueError(f"{path / 'saved_model.pb'} has no MetaGraph tagged 'serve'")
    labels_file = path / contract.ASSETS_EXTRA / contract.LABELS_FILE
    labels = contract.LabelsJson.read(labels_file) if labels_file.exists() else None
    servable = Servable(name=name, version=version, path=path, signatures=loaded.signatures,
                        signature_defs=dict(graph.signature_def), labels=labels, loaded=loaded)
    _warm_up(servable)
    return servable


def _warm_up(servable):
    """Replay `assets.extra/tf_serving_warmup_requests` (PredictionLog TFRecords) as TF Serving does."""
    path = servable.path / contract.ASSETS_EXTRA / contract.WARMUP_FILE
    if not path.exists():
        return
    records = list(tf.data.TFRecordDataset(str(path)).take(contract.MAX_WARMUP_RECORDS + 1).as_numpy_iterator())
    if len(records) > contract.MAX_WARMUP_RECORDS:
        raise ValueError(f"Number of warmup records exceeds the maximum ({contract.MAX_WARMUP_RECORDS}) at {path}")
    for i, record in enumerate(records):
        entry = prediction_log_pb2.PredictionLog.FromString(record)
        if entry.WhichOneof("log_type") != "predict_log":
            raise ValueError(f"warm-up record {i} of {path} is a {entry.WhichOneof('log_type')}; this server "
                             "replays only predict_log")
        try:
            predict.predict(servable, entry.predict_log.request)
        except ServingError as e:
            raise ValueError(f"warm-up record {i} of {path} failed: {e.message}") from None
    log.info("Replayed %d warm-up request(s) for model %s version %d", len(records), servable.name, servable.version)


def _aspired(policy, versions):
    """The versions a ServableVersionPolicy serves among `versions` (a set of ints)."""
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return set(versions)
    if choice == "specific":
        return set(policy.specific.versions) & versions
    count = policy.latest.num_versions or 1
    return set(sorted(versions)[-count:])


def _config_problems(config):
    if not config.name:
        yield "name is empty"
    if not config.base_path:
        yield "base_path is empty"
    elif not pathlib.Path(config.base_path).is_dir():
        yield f"Could not find base path {config.base_path} for servable {config.name}"
    if config.model_platform not in ("", "tensorflow"):
        yield f'model_platform "{config.model_platform}" is not served here (only "tensorflow")'
