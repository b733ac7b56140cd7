"""Keep freed large blocks in the process heap (glibc) instead of returning them to the kernel."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

_done: list[bool] = []


def reuse_freed_memory(mmap_threshold: int = 256 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Raise glibc's mmap and trim thresholds once per process; False where not glibc."""
    if _done:
        return _done[0]
    ok = False
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            ok = bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(
                libc.mallopt(M_TRIM_THRESHOLD, trim_threshold)
            )
        except (OSError, AttributeError):
            ok = False
    _done.append(ok)
    return ok
