"""glibc malloc settings for training on the CPU: keep freed memory mapped between steps.

Every training step allocates and frees the same large tensors (activations, gradients, views).
By default glibc serves blocks above an adaptive threshold (at most 32 MiB) with fresh mmaps and
returns freed memory at the top of the heap to the kernel, so each step can page-fault its
tensors back in. Raising the mmap and trim thresholds removes those page faults, at the price
of a higher peak RSS, as freed memory now stays in the process. What it measured on the CPU
(`make bench`): docs/results/hardware_switches.md.
"""

from __future__ import annotations

import ctypes
import logging

from ssl_lightning.errors import UserError

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
MAX_MB = (2**31 - 1) >> 20  # mallopt takes a C int in bytes


def keep_freed_memory(limit_mb: int | None) -> bool:
    """Serve blocks up to `limit_mb` MiB from the heap and keep up to that much freed memory.

    None leaves glibc's defaults. Returns whether the thresholds were set: other C libraries
    (macOS, musl) have no such knobs and are left alone.
    """
    if limit_mb is None:
        return False
    if not 1 <= limit_mb <= MAX_MB:
        raise UserError(
            f"hardware.malloc_keep_mb={limit_mb} must lie in [1, {MAX_MB}] (MiB), or be null "
            "to keep the C library's defaults"
        )
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version"):
        log.info("hardware.malloc_keep_mb ignored: the C library is not glibc")
        return False
    size = limit_mb << 20
    # The mmap threshold first: a raised trim threshold alone turns off glibc's dynamic mmap
    # threshold and sends every block over 128 KiB to mmap, which halves the step rate.
    if libc.mallopt(M_MMAP_THRESHOLD, size) != 1:
        log.warning("glibc refused an mmap threshold of %d MiB: malloc left as it was", limit_mb)
        return False
    return libc.mallopt(M_TRIM_THRESHOLD, size) == 1
