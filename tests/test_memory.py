"""fw.memory: the heap keeps freed large blocks, so repeated large allocations stop faulting."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
if sys.argv[1] == "reuse":
    from fw.memory import reuse_freed_memory
    assert reuse_freed_memory() and reuse_freed_memory()  # once; later calls report the first
for _ in range(10):  # 64 MB: above glibc's default mmap threshold, below fw's
    torch.ones(16 << 20).sum()  # with reuse, the heap grows to hold it (faults once)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(16 << 20).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_freed_large_blocks_are_reused_instead_of_faulted_again():
    default, reused = _faults("default"), _faults("reuse")
    assert default >= 10 * 16_000  # each 64 MB tensor (16,384 pages) faults afresh
    assert reused < default / 4  # the grown heap serves them again
