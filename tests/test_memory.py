"""`spade_tf.training.memory`: the training command's allocator settings, in fresh processes."""

import os
import subprocess
import sys

import pytest

PROBE = """
import ctypes, os, resource
import sys
from spade_tf.training.memory import release_freed_memory
if sys.argv[1] != "no":
    release_freed_memory(low_memory=sys.argv[1] == "low")
print(os.environ.get("TF_ONEDNN_USE_SYSTEM_ALLOCATOR"))
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
# A 4 MiB block with a small one after it, then the 4 MiB block freed: from a heap it stays resident
# (a hole below the small block), as its own mapping (threshold 1 MiB) it is given back. glibc's
# default raises its threshold after the first free of a mapped block, so the second round counts.
for _ in range(2):
    p = libc.malloc(4 << 20); ctypes.memset(p, 1, 4 << 20); libc.malloc(64); before = rss()
    libc.free(ctypes.c_void_p(p))
print(before - rss())
"""


def _probe(call="call", **env):
    environment = {k: v for k, v in os.environ.items() if k not in ("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "MALLOC_MMAP_THRESHOLD_")}
    out = subprocess.run([sys.executable, "-c", PROBE, call], env={**environment, **env}, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_training_returns_freed_blocks_and_keeps_the_users_settings():
    allocator, returned_kib = _probe(call="no")
    assert allocator == "None" and returned_kib < 1024  # glibc's own rule: the freed 4 MiB block stays resident
    allocator, returned_kib = _probe()
    assert allocator == "None"  # by default oneDNN keeps its own pool (no page faults every step)
    assert returned_kib >= 3 * 1024  # the freed 4 MiB block left the process
    allocator, returned_kib = _probe(call="low")  # train.low_memory=true
    assert allocator == "1" and returned_kib >= 3 * 1024
    allocator, _ = _probe(call="low", TF_ONEDNN_USE_SYSTEM_ALLOCATOR="0")
    assert allocator == "0"  # the user's own choice stays
