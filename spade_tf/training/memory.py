"""Give freed activation memory back to the system between the steps of training.

TensorFlow's CPU build (oneDNN) allocates tensors from its own pool by default, which keeps every
page it ever held and fragments across the forward and backward passes of a GAN step. Training
therefore asks for the system allocator (`TF_ONEDNN_USE_SYSTEM_ALLOCATOR`), and tells glibc to map
every block of 1 MiB or more on its own (`mallopt(M_MMAP_THRESHOLD)`), so that a freed activation
is returned at once instead of staying in a heap. Measured at ADE20K 256x256 batch 2 fp32 on
2026-12-03: the step's peak resident memory falls by 600-650 MiB, and the step takes about 6 % longer
(fresh mappings are faulted in and zeroed on every step); see the README's memory section.

Both must happen before TensorFlow allocates its first tensor, so the training command calls
`release_freed_memory()` first thing. A value the user set in the environment is kept.
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


def release_freed_memory() -> None:
    """Sets both, unless the user did; call before TensorFlow allocates (it reads the first once)."""
    if "tensorflow" in sys.modules:
        log.debug("TensorFlow is already imported: %s may be read too late", SYSTEM_ALLOCATOR)
    os.environ.setdefault(SYSTEM_ALLOCATOR, "1")
    if _GLIBC_MMAP_ENV in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if not libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES):
            log.debug("mallopt(M_MMAP_THRESHOLD) was refused")
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to tune
        log.debug("no glibc mallopt here; freed memory is returned as the C library decides")
