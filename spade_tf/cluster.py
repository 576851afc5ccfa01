"""TF_CONFIG for multi-worker training from a pod's environment, and a launcher for train.py.

MultiWorkerMirroredStrategy learns the cluster from the TF_CONFIG environment variable:

    {"cluster": {"worker": ["<job>-0.<service>.<namespace>.svc:2222", ...]},
     "task": {"type": "worker", "index": <i>}}

(worker 0 is the chief). A pod of an indexed Job or a StatefulSet knows its index; its manifest sets
the rest. The variables read:

- the index: JOB_COMPLETION_INDEX (set by Kubernetes in an indexed Job), else the ordinal that ends
  POD_NAME (a StatefulSet pod `<name>-<i>`; POD_NAME from the downward API);
- SPADE_NUM_WORKERS: the number of workers;
- SPADE_WORKER_ADDRESSES: optional, every worker's `host:port` in index order, comma-separated
  (e.g. 127.0.0.1 ports for a local run); when it is set, the variables below are not read;
- otherwise each address is SPADE_WORKER_ADDRESS_TEMPLATE (default
  `{job}-{index}.{service}.{namespace}.svc:{port}`) filled with the worker's index and the variables
  the template names: job = SPADE_JOB_NAME (default: POD_NAME without its ordinal), service =
  SPADE_SERVICE (the headless Service, which is the pods' `subdomain`), namespace = SPADE_NAMESPACE,
  port = SPADE_WORKER_PORT (default 2222).

    python -m spade_tf.cluster train -- --config synthetic train.checkpoints_dir=/checkpoints
    python -m spade_tf.cluster tf-config     # print the TF_CONFIG this pod derives

`train` keeps a TF_CONFIG that is already set (the Kubeflow training operator sets one), else derives
it, then replaces itself with `python train.py <arguments>`. Bad variables exit with code 2.
"""

import argparse
import json
import os
import re
import string
import sys
import typing


TRAIN_MODULE = "spade_tf.commands.train"  # train.py's command, installed with the package
DEFAULT_TEMPLATE = "{job}-{index}.{service}.{namespace}.svc:{port}"
DEFAULT_PORT = 2222
# template field -> the environment variable that fills it ("index" is the worker's own index)
TEMPLATE_VARIABLES = {"job": "SPADE_JOB_NAME", "service": "SPADE_SERVICE", "namespace": "SPADE_NAMESPACE",
                      "port": "SPADE_WORKER_PORT"}


class ClusterConfigError(ValueError):
    """The pod's environment does not describe a valid worker cluster."""


def tf_config(addresses: typing.Sequence[str], index: int) -> dict:
    """TF_CONFIG for worker `index` of the workers at `addresses` (host:port, in index order)."""
    addresses = list(addresses)
    if not addresses:
        raise ClusterConfigError("a cluster needs at least one worker address")
    for address in addresses:
        _check_address(address)
    duplicates = sorted({a for a in addresses if addresses.count(a) > 1})
    if duplicates:
        raise ClusterConfigError(f"worker addresses must be distinct; repeated: {', '.join(duplicates)}")
    if not 0 <= index < len(addresses):
        raise ClusterConfigError(f"worker index {index} is outside 0..{len(addresses) - 1} "
                                 f"for {len(addresses)} worker(s)")
    return {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}


def _check_address(address: str) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterConfigError(f"worker address {address!r} must look like host:port with a port in 1..65535")


def _int(env, name: str, minimum: int) -> int:
    text = env[name].strip()
    if not re.fullmatch(r"\d+", text) or int(text) < minimum:
        raise ClusterConfigError(f"{name}={env[name]!r}: expected an integer >= {minimum}")
    return int(text)


def _ordinal(pod_name: str) -> typing.Tuple[str, int]:
    match = re.fullmatch(r"(.+)-(\d+)", pod_name)
    if not match:
        raise ClusterConfigError(f"POD_NAME={pod_name!r} does not end in -<ordinal> like a StatefulSet pod "
                                 "(<name>-0, <name>-1, ...)")
    return match.group(1), int(match.group(2))


def worker_index(env: typing.Mapping[str, str]) -> int:
    """This worker's index: JOB_COMPLETION_INDEX, else the ordinal ending POD_NAME."""
    if env.get("JOB_COMPLETION_INDEX", "").strip():
        return _int(env, "JOB_COMPLETION_INDEX", 0)
    if env.get("POD_NAME", "").strip():
        return _ordinal(env["POD_NAME"].strip())[1]
    raise ClusterConfigError("cannot tell this worker's index: set JOB_COMPLETION_INDEX (an indexed Job sets it) "
                             "or POD_NAME (a StatefulSet pod's name, <name>-<ordinal>)")


def worker_addresses(env: typing.Mapping[str, str]) -> typing.List[str]:
    """Every worker's host:port, in index order (see the module docstring for the variables)."""
    num_workers = _int(env, "SPADE_NUM_WORKERS", 1) if env.get("SPADE_NUM_WORKERS", "").strip() else None
    if env.get("SPADE_WORKER_ADDRESSES", "").strip():
        addresses = [a.strip() for a in env["SPADE_WORKER_ADDRESSES"].split(",") if a.strip()]
        if num_workers is not None and num_workers != len(addresses):
            raise ClusterConfigError(f"SPADE_NUM_WORKERS={num_workers} but SPADE_WORKER_ADDRESSES lists "
                                     f"{len(addresses)} address(es)")
        return addresses
    if num_workers is None:
        raise ClusterConfigError("SPADE_NUM_WORKERS is not set: give the number of workers "
                                 "(or every address in SPADE_WORKER_ADDRESSES)")
    template = env.get("SPADE_WORKER_ADDRESS_TEMPLATE", "").strip() or DEFAULT_TEMPLATE
    values = {}
    for field in _template_fields(template):
        if field == "index":
            continue
        name = TEMPLATE_VARIABLES[field]
        if env.get(name, "").strip():
            values[field] = _int(env, name, 1) if field == "port" else env[name].strip()
        elif field == "port":
            values[field] = DEFAULT_PORT
        elif field == "job" and env.get("POD_NAME", "").strip():
            values[field] = _ordinal(env["POD_NAME"].strip())[0]
        else:
            hint = " (or POD_NAME of a StatefulSet pod)" if field == "job" else ""
            raise ClusterConfigError(f"{name} is not set{hint}: SPADE_WORKER_ADDRESS_TEMPLATE {template!r} "
                                     f"needs {{{field}}}")
    return [template.format(index=i, **values) for i in range(num_workers)]


def _template_fields(template: str) -> typing.List[str]:
    allowed = ["index", *TEMPLATE_VARIABLES]
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise ClusterConfigError(f"SPADE_WORKER_ADDRESS_TEMPLATE {template!r} is not a valid template: {e}") from None
    for field in fields:
        if field not in allowed:
            raise ClusterConfigError(f"SPADE_WORKER_ADDRESS_TEMPLATE {template!r} names {{{field}}}; "
                                     f"the fields are {', '.join('{' + a + '}' for a in allowed)}")
    return fields


def tf_config_from_env(env: typing.Optional[typing.Mapping[str, str]] = None) -> dict:
    """TF_CONFIG for this pod, from its environment (default: os.environ)."""
    env = os.environ if env is None else env
    addresses = worker_addresses(env)
    return tf_config(addresses, worker_index(env))


def _kept_tf_config(text: str) -> dict:
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ClusterConfigError(f"TF_CONFIG is set but is not JSON ({e}): {text[:200]!r}") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict) or "task" not in config:
        raise ClusterConfigError(f"TF_CONFIG is set but has no 'cluster' mapping and 'task': {text[:200]!r}")
    return config


def launch_training(train_args: typing.Sequence[str], env=None) -> typing.NoReturn:
    """Sets TF_CONFIG (unless set) and replaces this process with `python -m spade_tf.commands.train <train_args>` (train.py)."""
    env = dict(os.environ if env is None else env)  # the child's environment; the caller's stays as it was
    if env.get("TF_CONFIG", "").strip():
        config = _kept_tf_config(env["TF_CONFIG"])
        origin = "kept from the environment"
    else:
        config = tf_config_from_env(env)
        env["TF_CONFIG"] = json.dumps(config)
        origin = "derived from the pod environment"
    print(f"spade_tf.cluster: TF_CONFIG {origin}: {json.dumps(config)}", file=sys.stderr, flush=True)
    os.execve(sys.executable, [sys.executable, "-m", TRAIN_MODULE, *train_args], env)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m spade_tf.cluster", description=__doc__.splitlines()[0])
    commands = p.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="set TF_CONFIG from the pod environment, then run train.py")
    train.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then train.py's arguments")
    commands.add_parser("tf-config", help="print the TF_CONFIG derived from the environment")
    return p


def main(argv=None) -> int:
    """Console entry point; returns the exit code (2: the environment is not a valid cluster)."""
    args = parser().parse_args(argv)
    try:
        if args.command == "tf-config":
            print(json.dumps(tf_config_from_env()))
            return 0
        train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
        launch_training(train_args)
    except ClusterConfigError as e:
        print(f"spade_tf.cluster: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
