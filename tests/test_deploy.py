"""deploy/: Kubernetes manifests against the Kubernetes schemas (offline, kubernetes-validate) and
against each other, the Kubeflow TFJob against the training operator's fields, and the Dockerfiles
as far as they can be checked without a Docker engine."""

import argparse
import contextlib
import copy
import fnmatch
import glob
import importlib.util
import io
import json
import pathlib
import posixpath
import re
import shlex
import subprocess
import sys

import kubernetes_validate  # requirements-test.txt; ships the Kubernetes JSON schemas, works offline
import pytest
import yaml

from spade_tf import cluster
from spade_tf.config import add_config_arguments, config_from_args
from spade_tf.shared import REPO_ROOT

K8S = REPO_ROOT / "deploy" / "k8s"
DOCKER = REPO_ROOT / "deploy" / "docker"
# The oldest Kubernetes deploy/README.md supports (preStop sleep, podFailurePolicy), and the newest
# schemas kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
LABELS = {"app.kubernetes.io/name": "spade-tf"}
# tensorflow/serving REST routes (http_rest_api_util.cc): status and metadata of a model.
REST_MODEL_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/\d+|/labels/\w+)?(?P<metadata>/metadata)?$")


# --- loading ------------------------------------------------------------------------------------
def load(path):
    return [doc for doc in yaml.safe_load_all(pathlib.Path(path).read_text()) if doc]


def kustomization(directory):
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


def base_docs():
    return [doc for name in kustomization(K8S / "base")["resources"] for doc in load(K8S / "base" / name)]


def pointer(path):
    return [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]


def apply_json6902(doc, operations):
    """The `add` and `replace` operations of RFC 6902 (all our overlay uses), as kustomize applies them."""
    for op in operations:
        assert op["op"] in ("add", "replace"), op
        *parents, last = pointer(op["path"])
        target = doc
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if isinstance(target, list):
            index = len(target) if last == "-" else int(last)
            target.insert(index, op["value"]) if op["op"] == "add" else target.__setitem__(index, op["value"])
        else:
            assert op["op"] == "add" or last in target, f"replace of missing {op['path']}"
            target[last] = op["value"]


def pod_specs(doc):
    if doc["kind"] in ("Deployment", "Job"):
        return [doc["spec"]["template"]["spec"]]
    if doc["kind"] == "TFJob":
        return [spec["template"]["spec"] for spec in doc["spec"]["tfReplicaSpecs"].values()]
    return []


def render_overlay(directory):
    """kustomize build for an overlay of `../base` with `images` and inline JSON 6902 `patches`."""
    overlay = kustomization(directory)
    assert overlay["resources"] == ["../base"]
    assert set(overlay) <= {"apiVersion", "kind", "resources", "images", "patches"}, "the test renders only these"
    docs = copy.deepcopy(base_docs())
    for doc in docs:
        for spec in pod_specs(doc):
            for container in spec["containers"]:
                name, _, tag = container["image"].partition(":")
                for image in overlay.get("images", []):
                    if image["name"] == name:
                        container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    for patch in overlay.get("patches", []):
        target = patch["target"]
        assert set(target) == {"kind", "name"}, "the test matches targets by kind and name"
        targets = [d for d in docs if (d["kind"], d["metadata"].get("name")) == (target["kind"], target["name"])]
        assert len(targets) == 1, target
        apply_json6902(targets[0], yaml.safe_load(patch["patch"]))
    return docs


def one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"].get("name") == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(doc, name=None):
    containers = pod_specs(doc)[0]["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


def flags(args):
    """`--name=value` arguments -> {name: value}."""
    parsed = {}
    for arg in args:
        match = re.fullmatch(r"--(\w+)=(.*)", arg)
        assert match, f"expected --flag=value, got {arg!r}"
        parsed[match.group(1)] = match.group(2)
    return parsed


def train_config(args):
    """The config train.py builds from the arguments after the launcher's `train --`."""
    assert args[:2] == ["train", "--"], args
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    parser.add_argument("--fresh", action="store_true")
    parsed = parser.parse_args(args[2:])
    assert not parsed.fresh, "--fresh would start a new run on every restart instead of resuming"
    return config_from_args(parsed)


BASE = base_docs()
EXPORT_JOB = one(load(K8S / "export-job.yaml"), "Job")
TFJOB = one(load(K8S / "tfjob.yaml"), "TFJob")
GPU = render_overlay(K8S / "gpu")


def builtin_documents():
    docs = [(f"base/{d['kind']}/{d['metadata']['name']}", d) for d in BASE]
    docs += [(f"gpu/{d['kind']}/{d['metadata']['name']}", d) for d in GPU]
    docs.append(("export-job.yaml/Job", EXPORT_JOB))
    for replica, spec in TFJOB["spec"]["tfReplicaSpecs"].items():  # a TFJob replica's template is a PodTemplateSpec
        docs.append((f"tfjob.yaml/{replica}", {"apiVersion": "v1", "kind": "PodTemplate",
                                               "metadata": {"name": f"tfjob-{replica.lower()}"},
                                               "template": spec["template"]}))
    return docs


# --- schemas ------------------------------------------------------------------------------------
def test_every_yaml_file_is_covered():
    covered = {K8S / "base" / name for name in kustomization(K8S / "base")["resources"]}
    covered |= {K8S / "export-job.yaml", K8S / "tfjob.yaml"}
    files = {p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert files == covered
    assert {d["kind"] for d in BASE} >= {"PersistentVolumeClaim", "ConfigMap", "Deployment", "Service",
                                         "HorizontalPodAutoscaler", "Job"}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_builtin_manifests_are_valid_for_the_kubernetes_schemas(version):
    errors = []
    for where, doc in builtin_documents():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{where}: {'.'.join(map(str, e.path))}: {e.message}")
    assert not errors, "\n".join(errors)


def test_the_schema_check_catches_a_mistake():
    broken = copy.deepcopy(one(BASE, "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8500"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)
    broken = copy.deepcopy(one(BASE, "Job"))
    broken["spec"]["completionMode"] = {"Indexed": True}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


def test_gpu_overlay_gives_gpu_images_and_one_gpu_per_pod():
    for kind, name in (("Job", "spade-train"), ("Deployment", "spade-serving")):
        cpu, gpu = container(one(BASE, kind, name)), container(one(GPU, kind, name))
        assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
        assert gpu["image"] != cpu["image"] and gpu["image"].endswith("gpu")


# --- serving ------------------------------------------------------------------------------------
DEPLOYMENT = one(BASE, "Deployment", "spade-serving")
SERVER = container(DEPLOYMENT, "tf-serving")
SERVER_FLAGS = flags(SERVER["args"])
PORTS = {p["name"]: p["containerPort"] for p in SERVER["ports"]}


def selects(selector, labels):
    return selector.items() <= labels.items()


def test_serving_labels_selectors_and_ports_match():
    labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    assert selects(LABELS, labels)
    assert selects(DEPLOYMENT["spec"]["selector"]["matchLabels"], labels)
    assert selects(one(BASE, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)
    service = one(BASE, "Service", "spade-serving")
    assert selects(service["spec"]["selector"], labels)
    assert not selects(service["spec"]["selector"], one(BASE, "Job")["spec"]["template"]["metadata"]["labels"])
    assert SERVER["command"] == ["/usr/bin/tensorflow_model_server"]
    assert PORTS == {"grpc": int(SERVER_FLAGS["port"]), "http": int(SERVER_FLAGS["rest_api_port"])}
    assert PORTS == {"grpc": 8500, "http": 8501}  # TF Serving's conventional ports, which clients assume
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in PORTS and port["port"] == PORTS[port["targetPort"]], port


def test_serving_probes_ask_tf_serving_for_the_served_model():
    served = {config.name for config in models_config().config}
    probes = {kind: SERVER[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    for kind, probe in probes.items():
        assert set(probe) - {"periodSeconds", "timeoutSeconds", "failureThreshold", "initialDelaySeconds"} == {"httpGet"}
        match = REST_MODEL_PATH.fullmatch(probe["httpGet"]["path"])
        assert match, f"{kind}: {probe['httpGet']['path']} is not a TF Serving REST model path"
        assert match.group("name") in served
        port = probe["httpGet"]["port"]
        assert PORTS.get(port, port) == int(SERVER_FLAGS["rest_api_port"]), f"{kind} must use the REST port"
    # Only metadata needs a loaded (AVAILABLE) version; the status path answers 200 while LOADING.
    for kind in ("startupProbe", "readinessProbe"):
        assert REST_MODEL_PATH.fullmatch(probes[kind]["httpGet"]["path"]).group("metadata")


def configmap_mount():
    volume = next(v for v in DEPLOYMENT["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    mount = next(m for m in SERVER["volumeMounts"] if m["name"] == volume["name"])
    return one(BASE, "ConfigMap", volume["configMap"]["name"]), mount


def test_configmap_holds_the_files_the_server_is_started_with():
    configmap, mount = configmap_mount()
    assert "subPath" not in mount, "a subPath mount would never see ConfigMap updates"
    started_with = [SERVER_FLAGS["model_config_file"], SERVER_FLAGS["batching_parameters_file"]]
    assert SERVER_FLAGS["enable_batching"] == "true"
    assert {posixpath.dirname(path) for path in started_with} == {mount["mountPath"]}
    assert set(configmap["data"]) == {posixpath.basename(path) for path in started_with}


def models_config(text=None):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    text = configmap_mount()[0]["data"]["models.config"] if text is None else text
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig()).model_config_list


def batching_parameters(text):
    """The parsed BatchingParameters, as canonical text."""
    from google.protobuf import text_format

    from serving.batching import batching_parameters_class

    return text_format.MessageToString(text_format.Parse(text, batching_parameters_class()()))


def test_models_config_and_batching_agree_with_the_serving_folder():
    [config] = models_config().config
    [stock] = models_config((REPO_ROOT / "serving" / "models.config").read_text()).config
    assert (config.name, config.base_path, config.model_platform) == (stock.name, stock.base_path, stock.model_platform)
    # Roll-out by writing a version folder needs the newest version served.
    assert config.model_version_policy.WhichOneof("policy_choice") == "latest"
    configmap = configmap_mount()[0]
    parameters = batching_parameters(configmap["data"]["batching_parameters.txt"])
    assert parameters == batching_parameters((REPO_ROOT / "serving" / "batching_parameters.txt").read_text())
    requests = SERVER["resources"]["requests"]
    threads = int(re.search(r"num_batch_threads \{\s*value: (\d+)", parameters).group(1))
    assert threads == int(requests["cpu"]) == int(SERVER["resources"]["limits"]["cpu"])


def test_autoscaler_and_rolling_update_keep_the_desired_replicas():
    hpa = one(BASE, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        DEPLOYMENT["apiVersion"], "Deployment", DEPLOYMENT["metadata"]["name"])
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "replicas" not in DEPLOYMENT["spec"], "the autoscaler owns the replica count"
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert "cpu" in SERVER["resources"]["requests"], "CPU utilisation is measured against the request"
    strategy = DEPLOYMENT["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0 and strategy["rollingUpdate"]["maxSurge"] >= 1
    assert one(BASE, "PodDisruptionBudget")["spec"]["minAvailable"] >= 1


# --- training -----------------------------------------------------------------------------------
JOB = one(BASE, "Job", "spade-train")
TRAINER = container(JOB, "trainer")


def env_of(c):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def test_training_job_and_headless_service_agree():
    spec, pod = JOB["spec"], JOB["spec"]["template"]["spec"]
    service = one(BASE, "Service", "spade-train")
    env = env_of(TRAINER)
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == int(env["SPADE_NUM_WORKERS"]) >= 2
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert pod["subdomain"] == service["metadata"]["name"] == env["SPADE_SERVICE"]
    assert selects(service["spec"]["selector"], JOB["spec"]["template"]["metadata"]["labels"])
    # Kubernetes labels each pod of a Job with batch.kubernetes.io/job-name = the Job's name.
    assert env["SPADE_JOB_NAME"] == {"fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}
    assert env["SPADE_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    ports = {p["name"]: p["containerPort"] for p in TRAINER["ports"]}
    [service_port] = service["spec"]["ports"]
    assert ports[service_port["targetPort"]] == service_port["port"] == int(env["SPADE_WORKER_PORT"])
    # What the launcher derives in pod 1 of this Job in namespace "ml":
    pod_env = {k: v for k, v in env.items() if isinstance(v, str)}
    pod_env.update(JOB_COMPLETION_INDEX="1", SPADE_JOB_NAME=JOB["metadata"]["name"], SPADE_NAMESPACE="ml")
    config = cluster.tf_config_from_env(pod_env)
    assert config["cluster"]["worker"][1] == f"spade-train-1.{service['metadata']['name']}.ml.svc:{service_port['port']}"
    assert config["task"]["index"] == 1


def test_a_killed_worker_is_replaced_and_bad_arguments_fail_at_once():
    spec, pod = JOB["spec"], JOB["spec"]["template"]["spec"]
    assert spec["backoffLimit"] >= 2 * spec["completions"], "one incident can fail every worker"
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy requires it; the Job replaces failed pods
    rules = spec["podFailurePolicy"]["rules"]
    fail = next(r for r in rules if r["action"] == "FailJob")
    assert fail["onExitCodes"] == {"containerName": TRAINER["name"], "operator": "In", "values": [2]}
    assert any(r["action"] == "Ignore" and r.get("onPodConditions") == [{"type": "DisruptionTarget", "status": "True"}]
               for r in rules)
    # train.py exits 2 for a bad override (argparse's usage error), before TensorFlow is loaded
    result = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), "--config=synthetic", "no_such_key=1"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no_such_key" in result.stderr


def test_a_preempted_worker_saves_within_the_grace_and_exit_42_restarts_it():
    from spade_tf.training.preemption import EXIT_CODE

    margin = 20  # seconds between the trainer's own deadline and the kubelet's SIGKILL (process exit, logs)
    for pod, trainer in ((JOB["spec"]["template"]["spec"], TRAINER),
                         (TFJOB["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"], container(TFJOB, "tensorflow"))):
        grace = train_config(trainer["args"]).train.preemption_grace_seconds
        assert pod["terminationGracePeriodSeconds"] >= grace + margin, (pod["terminationGracePeriodSeconds"], grace)
    rules = JOB["spec"]["podFailurePolicy"]["rules"]
    restart = [r for r in rules if r.get("onExitCodes", {}).get("values") == [EXIT_CODE]]
    assert restart == [{"action": "Ignore", "onExitCodes": {"containerName": TRAINER["name"], "operator": "In",
                                                            "values": [EXIT_CODE]}}]
    assert not any(r["action"] == "FailJob" and EXIT_CODE in r.get("onExitCodes", {}).get("values", []) for r in rules)
    # OnFailure restarts a container that exits 42; ExitCode would treat 1-127 as permanent
    assert TFJOB["spec"]["tfReplicaSpecs"]["Worker"]["restartPolicy"] == "OnFailure"


def test_training_arguments_are_a_valid_config_and_the_export_reads_that_run():
    assert TRAINER["args"][:2] == ["train", "--"] and cluster.parser().parse_args(TRAINER["args"]).command == "train"
    cfg = train_config(TRAINER["args"])
    mount = next(m for m in TRAINER["volumeMounts"] if m["name"] == "checkpoints")
    assert cfg.train.checkpoints_dir == mount["mountPath"] and not mount.get("readOnly")
    export = flags(container(EXPORT_JOB)["args"])
    assert export["run_dir"] == posixpath.join(cfg.train.checkpoints_dir, cfg.name)
    assert export["export_dir"] == models_config().config[0].base_path


def claims(doc):
    """{claim name: (mount path, read only)} of the doc's first pod spec's first container."""
    spec = pod_specs(doc)[0]
    volumes = {v["name"]: v["persistentVolumeClaim"] for v in spec.get("volumes", []) if "persistentVolumeClaim" in v}
    return {volumes[m["name"]]["claimName"]: (m["mountPath"], bool(m.get("readOnly")))
            for m in spec["containers"][0]["volumeMounts"] if m["name"] in volumes}


def test_volumes_connect_the_writers_and_readers():
    pvcs = {d["metadata"]["name"]: d for d in BASE if d["kind"] == "PersistentVolumeClaim"}
    for pvc in pvcs.values():
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], "mounted by pods on several nodes"
    train, export, serve, tfjob = claims(JOB), claims(EXPORT_JOB), claims(DEPLOYMENT), claims(TFJOB)
    assert set(train) | set(export) | set(serve) | set(tfjob) == set(pvcs)
    # checkpoints: training writes, export reads
    assert train["spade-checkpoints"] == tfjob["spade-checkpoints"] == ("/checkpoints", False)
    assert export["spade-checkpoints"] == ("/checkpoints", True)
    # models: export writes, serving reads, at the same path, which holds the served base_path
    assert export["spade-models"][0] == serve["spade-models"][0]
    assert (export["spade-models"][1], serve["spade-models"][1]) == (False, True)
    base_path = models_config().config[0].base_path
    assert posixpath.dirname(base_path) == serve["spade-models"][0]
    assert flags(container(EXPORT_JOB)["args"])["export_dir"] == base_path


def test_export_job_runs_export_py_with_arguments_it_accepts():
    export = container(EXPORT_JOB)
    assert EXPORT_JOB["metadata"]["generateName"] and "name" not in EXPORT_JOB["metadata"]
    assert export["image"] == TRAINER["image"]
    assert export["command"][0] == "python3" and in_image("Dockerfile.train", export["command"][1])
    spec = importlib.util.spec_from_file_location("export_script", REPO_ROOT / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    help_text = io.StringIO()
    with contextlib.redirect_stdout(help_text), pytest.raises(SystemExit):
        module.main(["--help"])
    for flag in flags(export["args"]):
        assert f"--{flag}" in help_text.getvalue()


# --- Kubeflow TFJob -----------------------------------------------------------------------------
# The training operator's kubeflow.org/v1 TFJob fields (pkg/apis/kubeflow.org/v1: TFJobSpec, ReplicaSpec,
# RunPolicy; the operator's required container name and port name).
TFJOB_SPEC_FIELDS = {"runPolicy", "successPolicy", "tfReplicaSpecs", "enableDynamicWorker"}
TFJOB_REPLICA_TYPES = {"Chief", "Master", "Worker", "PS", "Evaluator"}
REPLICA_SPEC_FIELDS = {"replicas", "template", "restartPolicy"}
RESTART_POLICIES = {"Always", "OnFailure", "Never", "ExitCode"}
RUN_POLICY_FIELDS = {"cleanPodPolicy", "ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit",
                     "schedulingPolicy", "suspend", "managedBy"}


def test_tfjob_has_the_training_operator_structure():
    assert (TFJOB["apiVersion"], TFJOB["kind"]) == ("kubeflow.org/v1", "TFJob")
    assert set(TFJOB) == {"apiVersion", "kind", "metadata", "spec"}
    spec = TFJOB["spec"]
    assert set(spec) <= TFJOB_SPEC_FIELDS and spec["tfReplicaSpecs"]
    assert set(spec.get("runPolicy", {})) <= RUN_POLICY_FIELDS
    assert spec.get("runPolicy", {}).get("cleanPodPolicy", "None") in {"All", "Running", "None"}
    assert spec.get("successPolicy", "") in {"", "AllWorkers"}
    assert set(spec["tfReplicaSpecs"]) <= TFJOB_REPLICA_TYPES
    for replica in spec["tfReplicaSpecs"].values():
        assert set(replica) <= REPLICA_SPEC_FIELDS and "template" in replica
        assert isinstance(replica.get("replicas", 1), int) and replica.get("replicas", 1) >= 1
        assert replica.get("restartPolicy", "Never") in RESTART_POLICIES
        names = [c["name"] for c in replica["template"]["spec"]["containers"]]
        assert "tensorflow" in names
        ports = {p.get("name"): p["containerPort"] for p in container(TFJOB, "tensorflow").get("ports", [])}
        assert ports.get("tfjob-port", 2222) == 2222


def test_tfjob_is_equivalent_to_the_indexed_job():
    [(replica_type, replica)] = TFJOB["spec"]["tfReplicaSpecs"].items()
    tf_container = container(TFJOB, "tensorflow")
    assert replica_type == "Worker"  # worker 0 is the chief, as in the indexed Job
    assert replica["replicas"] == JOB["spec"]["completions"]
    assert replica["restartPolicy"] in {"OnFailure", "Never", "Always"}, \
        "ExitCode would not restart workers that fail with 1 after a peer was killed"
    for key in ("image", "args", "resources", "volumeMounts"):
        assert tf_container[key] == TRAINER[key], key
    assert TFJOB["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["volumes"] == JOB["spec"]["template"]["spec"]["volumes"]
    assert "env" not in tf_container, "the operator sets TF_CONFIG; the launcher keeps it"


# --- Dockerfiles --------------------------------------------------------------------------------
INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
                "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "MAINTAINER"}
DOCKERFILES = ("Dockerfile.train", "Dockerfile.serving", "Dockerfile.embedded-server")


def dockerfile(name):
    """[(INSTRUCTION, arguments)] with line continuations joined and comments dropped."""
    instructions, pending = [], ""
    for line in (DOCKER / name).read_text().splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, rest = (pending + line).strip().partition(" ")
        instructions.append((keyword, rest.strip()))
        pending = ""
    assert not pending, f"{name} ends inside a line continuation"
    return instructions


def exec_form(name, keyword):
    [args] = [json.loads(rest) for k, rest in dockerfile(name) if k == keyword]
    assert isinstance(args, list) and all(isinstance(a, str) for a in args), f"{keyword} must be a JSON array"
    return args


def copy_arguments(rest):
    """(options, sources, destination) of a COPY/ADD instruction."""
    words = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
    *sources, destination = [w for w in words if not w.startswith("--")]
    return [w for w in words if w.startswith("--")], sources, destination


def copies(name):
    """[(sources, destination)] of the COPY/ADD instructions that copy from the build context."""
    result = []
    for keyword, rest in dockerfile(name):
        if keyword in ("COPY", "ADD"):
            options, sources, destination = copy_arguments(rest)
            if not any(o.startswith("--from=") for o in options):
                result.append((sources, destination))
    return result


def image_files(name):
    """{absolute path in the image: path in the repository} of what the COPY instructions bring in."""
    workdir, paths = "/", {}
    for keyword, rest in dockerfile(name):
        if keyword == "WORKDIR":
            workdir = posixpath.join(workdir, rest)
        elif keyword in ("COPY", "ADD"):
            options, sources, destination = copy_arguments(rest)
            if any(o.startswith("--from=") for o in options):
                continue
            target = posixpath.join(workdir, destination)
            into = destination.endswith("/") or len(sources) > 1  # copied into a folder, keeping the names
            for source in sources:
                path = posixpath.join(target, posixpath.basename(source)) if into else target
                paths[posixpath.normpath(path)] = REPO_ROOT / source
    return paths


def in_image(name, path):
    """True when `path` in the image is a file or folder copied from the repository."""
    for copied, source in image_files(name).items():
        if path == copied or path.startswith(copied + "/"):
            return (source / posixpath.relpath(path, copied)).exists()
    return False


def env_vars(name):
    values = {}
    for keyword, rest in dockerfile(name):
        if keyword == "ENV":
            values.update(word.split("=", 1) for word in shlex.split(rest))
    return values


def exposed(name):
    return {int(port) for keyword, rest in dockerfile(name) if keyword == "EXPOSE" for port in rest.split()}


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_syntax(name):
    instructions = dockerfile(name)
    assert {keyword for keyword, _ in instructions} <= INSTRUCTIONS
    keywords = [keyword for keyword, _ in instructions]
    first = keywords.index("FROM")
    assert set(keywords[:first]) <= {"ARG"}, "only ARG may come before FROM"
    declared = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for keyword, rest in instructions[:first]}
    for keyword, rest in instructions:
        if keyword == "FROM":
            for variable in re.findall(r"\$\{?(\w+)\}?", rest):
                assert declared.get(variable), f"FROM uses ${variable}, which needs an ARG with a default before FROM"
        if keyword in ("ENTRYPOINT", "CMD"):
            exec_form(name, keyword)
    assert keywords.count("ENTRYPOINT") == 1 and keywords.count("CMD") == 1


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_copied_file_exists_in_the_repository_and_is_not_ignored(name):
    ignored = [line for line in (DOCKER / f"{name}.dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert ".venv" in ignored and ".git" in ignored
    assert copies(name)
    for sources, _ in copies(name):
        for source in sources:
            assert glob.glob(str(REPO_ROOT / source)), f"{name}: COPY source {source} is not in the repository"
            parts = pathlib.PurePosixPath(source).parts
            for pattern in ignored:
                assert not any(fnmatch.fnmatch("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1)), \
                    f"{name}: COPY source {source} is excluded by {pattern!r}"


def test_training_image_runs_the_launcher_and_has_what_it_needs():
    name = "Dockerfile.train"
    assert exec_form(name, "ENTRYPOINT") == ["python3", "-m", "spade_tf.cluster"]
    assert importlib.util.find_spec("spade_tf.cluster") and callable(cluster.main)
    command = exec_form(name, "CMD")
    assert cluster.parser().parse_args(command).command == "train"
    train_config(command)
    root = env_vars(name)["PYTHONPATH"]
    # the launcher execs REPO_ROOT/train.py, and REPO_ROOT is the folder holding the spade_tf package
    for needed in ("spade_tf/cluster.py", "train.py", "export.py", "configs/synthetic.yaml", "requirements.txt"):
        assert in_image(name, posixpath.join(root, needed)), needed
    assert [k for k, rest in dockerfile(name) if k == "RUN" and "requirements.txt" in rest]
    declared = dict(rest.split("=", 1) for k, rest in dockerfile(name) if k == "ARG")
    assert declared["BASE_IMAGE"] == "python:3.11-slim"  # the Python version requirements.txt is tested with
    assert TRAINER["image"].split(":")[0] == container(EXPORT_JOB)["image"].split(":")[0] == "spade-tf-train"


def test_serving_image_starts_tf_serving_like_the_deployment():
    name = "Dockerfile.serving"
    assert exec_form(name, "ENTRYPOINT") == SERVER["command"]
    assert exec_form(name, "CMD") == SERVER["args"]
    assert exposed(name) == set(PORTS.values())
    for flag in ("model_config_file", "batching_parameters_file"):
        assert in_image(name, SERVER_FLAGS[flag]), flag
    declared = dict(rest.split("=", 1) for k, rest in dockerfile(name) if k == "ARG")
    assert declared["TF_SERVING_IMAGE"] == SERVER["image"]


def test_embedded_server_image_runs_the_package_server_with_valid_flags():
    from serving import server

    name = "Dockerfile.embedded-server"
    assert exec_form(name, "ENTRYPOINT") == ["python3", "-m", "serving.server"]
    args = server.parser().parse_args(exec_form(name, "CMD"))
    assert exposed(name) == {args.port, args.rest_api_port} == {PORTS["grpc"], PORTS["http"]}
    assert args.host == "0.0.0.0"
    assert args.model_base_path == models_config().config[0].base_path
    assert in_image(name, args.batching_parameters_file)
    assert in_image(name, posixpath.join(env_vars(name)["PYTHONPATH"], "serving", "server.py"))
