"""glibc malloc thresholds (hardware.malloc_keep_mb): what they buy and how they are refused."""

import ctypes
import subprocess
import sys

import pytest

from ssl_lightning.errors import UserError
from ssl_lightning.host_memory import keep_freed_memory

GLIBC = hasattr(ctypes.CDLL(None), "gnu_get_libc_version")

# Allocates and frees a 96 MiB tensor (above glibc's largest dynamic mmap threshold, 32 MiB)
# as a training step frees its activations, and prints the page faults per round once the heap
# has grown to its working size (the first rounds fault in any case).
FAULTS_PER_ROUND = """
import resource, sys, torch
from ssl_lightning.host_memory import keep_freed_memory
print(keep_freed_memory(None if sys.argv[1] == "null" else int(sys.argv[1])))
x = torch.ones(24 * 2**20)
def faults(): return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    (x + 1).sum()
before = faults()
for _ in range(10):
    (x + 1).sum()
print((faults() - before) / 10)
"""


def faults_per_round(limit_mb: str) -> tuple[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_ROUND, limit_mb],
        capture_output=True,
        text=True,
        check=True,
        env={"OMP_NUM_THREADS": "1", "PATH": ""},
    )
    was_set, faults = done.stdout.split()
    return was_set, float(faults)


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_kept_memory_is_not_faulted_in_again_each_round():
    default_set, default_faults = faults_per_round("null")
    kept_set, kept_faults = faults_per_round("1024")
    assert (default_set, kept_set) == ("False", "True")
    assert default_faults > 20_000  # 96 MiB = 24,576 pages, mapped afresh each round
    assert kept_faults < default_faults / 10  # 0 when measured


@pytest.mark.parametrize("limit_mb", [0, 4096])
def test_a_threshold_out_of_range_is_refused(limit_mb):
    with pytest.raises(UserError, match=r"hardware.malloc_keep_mb=.*\[1, 2047\]"):
        keep_freed_memory(limit_mb)
