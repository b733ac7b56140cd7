"""The sparse attraction's per-pair loop compiled with numba: one pass instead of a dozen.

`fw_sne.scale.attraction` in torch sweeps the ``nnz`` pairs about fifteen times a step
(gathers, element-wise products, scatters); this loop reads each pair once. It reproduces the
torch path's float32 arithmetic and summation order (each row's pairs summed in list order,
then each column's; the gradient their difference), so both give the same bits
(`tests/test_sne_scale.py`). numba is optional (``pip install 'fw[scale]'``): without it, or
off the CPU, the torch path runs.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor


@functools.cache
def has_numba() -> bool:
    """Whether numba is installed (imported only when the loop is first compiled)."""
    return importlib.util.find_spec("numba") is not None


def available(z: Tensor) -> bool:
    """Whether the compiled loop can take ``z``: numba installed, float32 on the CPU."""
    return z.device.type == "cpu" and z.dtype == torch.float32 and has_numba()


def _add_square(d, a):  # pragma: no cover
    """``d + a·a`` with one rounding (a fused multiply-add), as torch's ``addcmul_`` on CPUs."""
    return d + a * a


def _loop(y, starts, cols, p, student_t, param, d_out, row_sum, col_sum):  # pragma: no cover
    """Per pair e = (i, cols[e]) of row i (pairs ``starts[i]:starts[i+1]``): squared distance
    into ``d_out``, ``2·h_e (y_i - y_j)`` summed into ``row_sum[:, i]`` and ``col_sum[:, j]``."""
    n, dim = y.shape
    one = np.float32(1.0)
    nu = np.float32(param)
    scale = np.float32((param + 1.0) / param) if student_t else np.float32(2.0 * param)
    diff = np.empty(dim, dtype=np.float32)
    for i in range(n):
        if dim == 2:  # the usual map: coordinates in registers
            y0, y1 = y[i, 0], y[i, 1]
            r0, r1 = np.float32(0.0), np.float32(0.0)
            for e in range(starts[i], starts[i + 1]):
                j = cols[e]
                a, b = y0 - y[j, 0], y1 - y[j, 1]
                d = _add_square(a * a, b)
                d_out[e] = d
                if student_t:
                    h = p[e] / ((d / nu if param != 1.0 else d) + one) * scale
                else:
                    h = p[e] * scale
                ga, gb = a * h, b * h
                r0 += ga
                r1 += gb
                col_sum[0, j] += ga
                col_sum[1, j] += gb
            row_sum[0, i] = r0
            row_sum[1, i] = r1
            continue
        for e in range(starts[i], starts[i + 1]):
            j = cols[e]
            for c in range(dim):
                diff[c] = y[i, c] - y[j, c]
            d = diff[0] * diff[0]
            for c in range(1, dim):
                d = _add_square(d, diff[c])
            d_out[e] = d
            if student_t:
                h = p[e] / ((d / nu if param != 1.0 else d) + one) * scale
            else:
                h = p[e] * scale
            for c in range(dim):
                g = diff[c] * h
                row_sum[c, i] += g
                col_sum[c, j] += g


_compiled = None


def _jit() -> Callable[..., None]:
    """The compiled loop, compiled (or read from numba's cache) on first use."""
    global _compiled
    if _compiled is None:
        import numba

        # only this product and sum may fuse: every other operation rounds alone
        globals()["_add_square"] = numba.njit(fastmath={"contract"}, cache=True)(_add_square)
        _compiled = numba.njit(cache=True, nogil=True, boundscheck=False)(_loop)
    return _compiled


def attraction_pairs(
    z: Tensor, lengths: Tensor, cols: Tensor, p: Tensor, kind: str, param: float
) -> tuple[Tensor, Tensor]:
    """``(squared distances [nnz], gradient rows [dim, N])`` of row-sorted pairs, as
    `fw_sne.scale`'s torch path computes them (before the division by the row count)."""
    n, dim = z.shape
    y = z.detach().contiguous().numpy()
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths.numpy(), out=starts[1:])
    d = np.empty(cols.numel(), dtype=np.float32)
    row_sum = np.zeros((dim, n), dtype=np.float32)
    col_sum = np.zeros((dim, n), dtype=np.float32)
    _jit()(
        y,
        starts,
        cols.numpy(),
        p.detach().contiguous().numpy(),
        kind == "student_t",
        float(param),
        d,
        row_sum,
        col_sum,
    )
    return torch.from_numpy(d), torch.from_numpy(row_sum - col_sum)
