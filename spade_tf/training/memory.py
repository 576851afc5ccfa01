"""Give freed activation memory back to the system between the steps of training.

Two allocators hold a training step's tensors on TensorFlow's CPU build: oneDNN's pool for the
tensors of its ops (convolutions, matrix products: most of the step's), and glibc's malloc for the
rest. The training command always tells glibc to map every block of 1 MiB or more on its own
(`mallopt(M_MMAP_THRESHOLD)`), so that a freed tensor of TensorFlow's own ops is returned at once
instead of staying in a fragmented heap. With `train.low_memory=true` it also sends oneDNN's
tensors to the system allocator (`TF_ONEDNN_USE_SYSTEM_ALLOCATOR`), so that they are returned too.

Measured at ADE20K 256x256 batch 2 fp32 on 2026-12-03 (whole-process peak, page faults and CPU time
per step; README, "Training memory"): the threshold alone costs nothing measurable (0.45 million
page faults a step against 0.27 million, the same system time) and lowers the peak; `low_memory`
(with the VGG loss's rematerialisation) lowers it by 600-900 MiB more, but every step then faults
in and zeroes its activations afresh (3.4 million page faults, 5-6 more CPU-seconds of system time
a step; the step 6-21 % slower).

Both must happen before TensorFlow allocates its first tensor, so the training command calls
`release_freed_memory(cfg.train.low_memory)` right after reading its config (which imports no
TensorFlow). A value the user set in the environment is kept.
"""

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

SYSTEM_ALLOCATOR = "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"
MMAP_THRESHOLD_BYTES = 1 << 20
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_GLIBC_MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"


def release_freed_memory(low_memory: bool = False) -> None:
    """The mmap threshold, and with `low_memory` the system allocator for oneDNN, unless the user set
    them; call before TensorFlow allocates (it reads the allocator's variable once)."""
    if "tensorflow" in sys.modules:
        log.debug("TensorFlow is already imported: %s may be read too late", SYSTEM_ALLOCATOR)
    if low_memory:
        os.environ.setdefault(SYSTEM_ALLOCATOR, "1")
    if _GLIBC_MMAP_ENV in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if not libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES):
            log.debug("mallopt(M_MMAP_THRESHOLD) was refused")
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to tune
        log.debug("no glibc mallopt here; freed memory is returned as the C library decides")
