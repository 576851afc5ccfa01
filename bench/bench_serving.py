"""Serving: one request at batch 1 through gRPC against the same SavedModel called in-process, and
throughput with 1, 4 and 8 concurrent clients.

The model is a modest SPADE generator on the built-in data's label set (8 classes plus instance
edges) at 128x128, ngf 32, random weights, exported with `spade_tf.export.export_model` (spectral
norm folded, fp32). The embedded server runs as users start it (`python -m serving.server`, its own
process, default batching: up to 8 requests per batch, no batch timeout); the in-process side is
`tf.saved_model.load` of the same version folder, `serving_default`, in the benchmark's process.
Latency: pairs of calls back to back (order alternating); the ratio is the median of the pairs'
ratios, which a change of the machine's speed between pairs does not bias; the gRPC side includes
the client's (de)serialisation.
Throughput: each client (its own `SpadeClient` and channel, in a thread) sends batch-1 requests
back to back; images/s over the wall time of a fixed number of requests per level; the levels
(1, 4, 8 clients) run in turn, several rounds, and each level's figure is its median over the
rounds, so that a slow minute of a shared machine does not fall on one level only.

    python -m bench.bench_serving [--quick]
"""

import ast
import concurrent.futures
import pathlib
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from bench.bench_inference import random_layouts

MODEL = ("data.crop_size=128", "data.load_size=128", "model.ngf=32")
CLIENTS = (1, 4, 8)
TARGET_GRPC_RATIO = 1.10
TARGET_SCALING = 0.95  # throughput with more clients / with fewer: "does not fall", 5% for timing noise
_PORT_LINE = re.compile(r"Running gRPC ModelServer at [^ ]*:(\d+)")
_BATCH_SIZES_LINE = re.compile(r"executed batch sizes: (\{.*\})")


class ServerProcess:
    """`python -m serving.server` on a free port of 127.0.0.1, as a context manager.

    `port` is known once it logs that it runs (its models are loaded by then); leaving the block
    sends SIGTERM and waits; `batch_sizes` then holds the batch sizes it reported on stopping.
    """

    def __init__(self, base_path, model_name="spade", start_timeout=600.0):
        self.command = [sys.executable, "-m", "serving.server", "--model_name", model_name,
                        "--model_base_path", str(base_path), "--port", "0", "--file_system_poll_wait_seconds", "0"]
        self.start_timeout = start_timeout
        self.port = None
        self.batch_sizes = None
        self.log = []
        self._ready = threading.Event()

    def __enter__(self):
        from spade_tf.shared import REPO_ROOT

        self.process = subprocess.Popen(self.command, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(self.start_timeout) or self.port is None:
            self._stop()
            tail = "".join(self.log[-20:])
            raise RuntimeError(f"the model server did not start within {self.start_timeout:.0f} s; "
                               f"its log ends:\n{tail}")
        return self

    def __exit__(self, *exc):
        self._stop()

    def _read(self):
        for line in self.process.stderr:
            self.log.append(line)
            found = _PORT_LINE.search(line)
            if found and self.port is None:
                self.port = int(found.group(1))
                self._ready.set()
        self._ready.set()  # the process ended

    def _stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=10)
        for line in self.log:
            found = _BATCH_SIZES_LINE.search(line)
            if found:
                try:
                    self.batch_sizes = ast.literal_eval(found.group(1))
                except (ValueError, SyntaxError):
                    pass

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def peak_rss_mib(self):
        """The server process's peak resident memory so far (VmHWM), MiB; None if unknown."""
        try:
            with open(f"/proc/{self.process.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare_latency(in_process, over_grpc, pairs: int) -> dict:
    """Median latencies (s) of `pairs` pairs of calls back to back (order alternating, after two
    warm-up calls each), and `ratio`, the median of the pairs' gRPC / in-process ratios."""
    for _ in range(2):
        in_process()
        over_grpc()
    times = {"in_process": [], "grpc": []}
    calls = {"in_process": in_process, "grpc": over_grpc}
    for i in range(pairs):
        for name in (("in_process", "grpc") if i % 2 == 0 else ("grpc", "in_process")):
            times[name].append(_timed(calls[name]))
    ratio = statistics.median(g / i for g, i in zip(times["grpc"], times["in_process"]))
    return {name: statistics.median(t) for name, t in times.items()} | {"ratio": ratio, "times_s": times}


def measure_throughput(address, inputs, clients: int, requests: int, timeout=300.0) -> dict:
    """`clients` threads, each with its own client, send `requests // clients` batch-1 requests
    (after one warm-up request each); images/s over the wall time."""
    from serving.client import SpadeClient

    per_client = max(1, requests // clients)
    start_line = threading.Barrier(clients + 1, timeout=timeout)

    def client_loop():
        with SpadeClient(address, timeout=timeout) as client:
            client.synthesize(**inputs)
            start_line.wait()
            latencies = []
            for _ in range(per_client):
                latencies.append(_timed(lambda: client.synthesize(**inputs)))
            return latencies

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client_loop) for _ in range(clients)]
        try:
            start_line.wait()
        except threading.BrokenBarrierError:
            for future in futures:
                future.result()  # raises the client's error, if one failed before the start
            raise
        start = time.perf_counter()
        latencies = [t for future in futures for t in future.result()]
    elapsed = time.perf_counter() - start
    return {"images_per_s": len(latencies) / elapsed, "median_latency_s": statistics.median(latencies),
            "requests": len(latencies)}


def run(quick: bool = False, overrides=MODEL) -> list:
    """Result rows. `quick`: fewer calls and requests. `overrides`: config `section.field=value` for
    the model (the built-in data's preset), e.g. smaller ones in tests."""
    import tensorflow as tf

    from serving.client import SpadeClient
    from spade_tf.config import load_config
    from spade_tf.export import export_model
    from spade_tf.models import build_generator

    cfg = load_config("synthetic", list(overrides))
    h, w = cfg.image_size
    tag = f"{h}x{w}, ngf {cfg.model.ngf}"
    pairs, requests, rounds_of_levels = (10, 16, 1) if quick else (40, 32, 3)
    labels, instances = random_layouts(cfg, 1)
    inputs = {"label_map": labels[0]} | ({} if instances is None else {"instance_map": instances[0]})
    with tempfile.TemporaryDirectory(prefix="spade-bench-serving-") as tmp:
        base = pathlib.Path(tmp) / "spade"
        version = export_model(cfg, build_generator(cfg), export_dir=base)
        loaded = tf.saved_model.load(str(version))
        serve = loaded.signatures["serving_default"]
        tensors = {key: tf.constant(value[None]) for key, value in inputs.items()}

        def in_process():
            return serve(**tensors)["image"].numpy()[0]

        with ServerProcess(base) as server:
            with SpadeClient(server.address, timeout=300) as client:
                difference = int(np.max(np.abs(in_process().astype(int) - client.synthesize(**inputs).astype(int))))
                latency = compare_latency(in_process, lambda: client.synthesize(**inputs), pairs)
            rounds = [{n: measure_throughput(server.address, inputs, n, requests) for n in CLIENTS}
                      for _ in range(rounds_of_levels)]
            server_peak = server.peak_rss_mib()
    rows = [
        {"name": f"serving/in-process SavedModel latency, batch 1 ({tag})", "value": 1000 * latency["in_process"],
         "unit": "ms"},
        {"name": f"serving/gRPC latency, embedded server, batch 1 ({tag})", "value": 1000 * latency["grpc"],
         "unit": "ms", "max_abs_diff_uint8_vs_in_process": difference, "times_s": latency["times_s"]},
        {"name": f"serving/gRPC latency / in-process latency, batch 1 ({tag})",
         "value": latency["ratio"], "unit": "x", "target": {"max": TARGET_GRPC_RATIO}},
    ]
    throughput = {}
    for n in CLIENTS:
        by_round = [r[n]["images_per_s"] for r in rounds]
        throughput[n] = statistics.median(by_round)
        rows.append({"name": f"serving/throughput, {n} concurrent client{'s' if n > 1 else ''} ({tag})",
                     "value": throughput[n], "unit": "images/s", "images_per_s_by_round": by_round,
                     "median_latency_s": statistics.median(r[n]["median_latency_s"] for r in rounds),
                     "requests_per_round": rounds[0][n]["requests"]})
    scaling = min(throughput[b] / throughput[a] for a, b in zip(CLIENTS, CLIENTS[1:]))
    steps = " and ".join(f"{b} vs {a}" for a, b in zip(CLIENTS, CLIENTS[1:]))
    rows.append({"name": f"serving/throughput ratio when adding clients, lowest of {steps}", "value": scaling,
                 "unit": "x", "server_batch_sizes": server.batch_sizes,
                 "target": {"min": TARGET_SCALING, "note": "throughput does not fall; 5% allowed for timing noise"}})
    if server_peak is not None:
        rows.append({"name": f"serving/server process peak RSS ({tag})", "value": server_peak, "unit": "MiB",
                     "peak_rss_mib": server_peak})
    if not quick:
        rows += regions_rows(regions_vs_dense_grpc(pairs=10))
    return rows


REGIONS_MODEL = ("model.ngf=64",)  # on the ade20k preset: ADE20K 256x256


def regions_vs_dense_grpc(pairs: int, preset="ade20k", overrides=REGIONS_MODEL) -> dict:
    """gRPC latency at batch 1 of a region-wise and a dense export of the same weights, each
    served by its own embedded server, calls back to back (order alternating); built-in
    landscape layout. `ratio`: median of the pairs' dense / region-wise latencies."""
    from bench.layouts import landscapes
    from serving.client import SpadeClient
    from spade_tf.config import load_config, replace
    from spade_tf.export import export_model
    from spade_tf.models import build_generator

    cfg = load_config(preset, list(overrides))
    source = build_generator(cfg)
    h, w = cfg.image_size
    labels, instances = landscapes(1, h, w, cfg.data.label_nc)
    inputs = {"label_map": labels[0]} | ({} if cfg.data.no_instance else {"instance_map": instances[0]})
    with tempfile.TemporaryDirectory(prefix="spade-bench-regions-serving-") as tmp:
        bases = {}
        for impl in ("dense", "regions"):
            bases[impl] = pathlib.Path(tmp) / impl / "spade"
            export_model(replace(cfg, {"model": {"spade_impl": impl}}), source, export_dir=bases[impl])
        with ServerProcess(bases["dense"]) as dense_server, ServerProcess(bases["regions"]) as regions_server:
            with SpadeClient(dense_server.address, timeout=600) as dense, \
                    SpadeClient(regions_server.address, timeout=600) as regions:
                calls = {"dense": lambda: dense.synthesize(**inputs), "regions": lambda: regions.synthesize(**inputs)}
                difference = int(np.max(np.abs(calls["dense"]().astype(int) - calls["regions"]().astype(int))))
                times = {"dense": [], "regions": []}
                for i in range(pairs):
                    for name in ("dense", "regions") if i % 2 == 0 else ("regions", "dense"):
                        times[name].append(_timed(calls[name]))
    return {"ratio": statistics.median(d / r for d, r in zip(times["dense"], times["regions"])),
            "dense_ms": 1000 * statistics.median(times["dense"]),
            "regions_ms": 1000 * statistics.median(times["regions"]),
            "times_s": times, "max_abs_diff_uint8": difference, "tag": f"{preset} {h}x{w}, ngf {cfg.model.ngf}"}


def regions_rows(result) -> list:
    tag = result["tag"]
    return [
        {"name": f"serving/gRPC latency, batch 1, region-wise export ({tag})", "value": result["regions_ms"],
         "unit": "ms"},
        {"name": f"serving/gRPC latency, batch 1, dense export ({tag})", "value": result["dense_ms"], "unit": "ms"},
        {"name": f"serving/gRPC latency dense / region-wise, batch 1 ({tag})", "value": result["ratio"], "unit": "x",
         "times_s": result["times_s"], "max_abs_diff_uint8": result["max_abs_diff_uint8"]},
    ]


if __name__ == "__main__":
    from bench.runner import command_line

    command_line(run, __doc__, "fewer calls and requests")
