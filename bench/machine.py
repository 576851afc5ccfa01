"""What the machine can do, and how much memory a piece of work takes.

- `matmul_rate(dtype)`: GFLOP/s of `tf.linalg.matmul` on 2048x2048 matrices in graph mode (no XLA),
  the ceiling every benchmark is compared with (a plain Keras SPADE generator reaches about 1.0 of it
  on this kind of CPU: 0.98-1.01 measured at the ADE20K setting, fp32, graph mode without XLA).
- `run_in_child(fn, ...)`: runs `fn` in a fresh Python process (its own TensorFlow state and dtype
  policy) and returns its result with the child's peak resident memory (ru_maxrss).
- `reset_peak_rss()`: starts the peak over from the current resident memory, so that a child can
  leave its set-up out of the peak.

TensorFlow is imported inside the functions that need it, so the runner itself stays light.
"""

import concurrent.futures
import datetime
import importlib.metadata
import multiprocessing
import os
import platform
import resource
import statistics
import time

MATMUL_SIZE = 2048
DTYPES = ("float32", "bfloat16")


def matmul_timer(dtype="float32", n=MATMUL_SIZE):
    """`rate(repeats=10)` -> GFLOP/s (2 n^3 FLOP per product) of `tf.linalg.matmul` on two n x n
    matrices of `dtype` in a `tf.function` without XLA: the median of `repeats` timed products.
    Traced and warmed up here, so that `rate` can be called between other measurements."""
    import tensorflow as tf

    a = tf.cast(tf.random.uniform((n, n), seed=1), dtype)
    b = tf.cast(tf.random.uniform((n, n), seed=2), dtype)
    product = tf.function(lambda a, b: tf.reduce_sum(tf.cast(tf.linalg.matmul(a, b)[:1, :1], tf.float32)),
                          jit_compile=False)
    product(a, b).numpy()

    def rate(repeats=10):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            product(a, b).numpy()
            times.append(time.perf_counter() - start)
        return 2 * n**3 / statistics.median(times) / 1e9

    return rate


def matmul_rate(dtype="float32", n=MATMUL_SIZE, repeats=10) -> float:
    """GFLOP/s of `matmul_timer(dtype, n)`, median of `repeats` products after a warm-up."""
    return matmul_timer(dtype, n)(repeats)


def matmul_rates(repeats=10) -> dict:
    """{"float32": GFLOP/s, "bfloat16": GFLOP/s} of `matmul_rate`."""
    return {dtype: matmul_rate(dtype, repeats=repeats) for dtype in DTYPES}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list:
    """The CPU features that decide fast paths here (AVX-512, its BF16 instructions, AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags")).split(":", 1)[1].split()
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"))


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict:
    """CPU model, cores, library versions and the date, without importing TensorFlow."""
    return {
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "tensorflow": _version("tensorflow"),
        "keras": _version("keras"),
        "python": platform.python_version(),
        "oneDNN": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
    }


def load_average() -> list:
    """1, 5 and 15 minute load averages (other work on a shared machine slows every figure)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (since start, or since `reset_peak_rss`), MiB.

    Linux's VmHWM belongs to the process image, so a spawned child does not inherit its parent's
    peak (`ru_maxrss` carries over fork + exec); elsewhere `ru_maxrss`.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Lowers this process's peak resident memory to the current one (Linux >= 4.0); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _measured(fn, args, kwargs):
    result = fn(*args, **kwargs)
    return result, peak_rss_mib()


def run_in_child(fn, *args, **kwargs):
    """`(fn(*args, **kwargs), peak RSS of the child in MiB)`, computed in a fresh (spawned) process.

    `fn` must be importable (a module-level function); arguments and result must pickle. An
    exception in the child is raised here; a child that dies (e.g. out of memory) raises
    `concurrent.futures.process.BrokenProcessPool`.
    """
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_measured, fn, args, kwargs).result()
