"""The JBU adaptive convolution: fw's offset loop against the ``unfold`` formulation.

For each formulation, channel count C ∈ {64, 384}, output map 56² and 112², window k = 7 and
batch 1, one fresh subprocess per case measures:

- **peak memory** of one forward + backward, above the inputs (``x_pad``, the kernel and the
  incoming gradient, which both formulations share). Method: allocate the inputs, reset the
  kernel's resident-set high-water mark (``echo 5 > /proc/self/clear_refs``), run forward +
  backward once, then read ``VmHWM − VmRSS(before)`` from ``/proc/self/status``. That is the
  OS's own count of pages touched at the peak, so it sees every allocation (torch's CPU
  allocator returns large blocks to the OS, and the subprocess starts clean); it is at page
  granularity and includes allocator slack, which is what an out-of-memory cares about;
- **time** of forward + backward: the median (and min) over repetitions after that first run.

It also prints the analytic size of the ``C·k²·H·W`` unfold buffer, and the largest square
map each formulation fits in 8 GiB: peak bytes (inputs included) grow linearly in the number
of output pixels, ``peak(HW) = a + b·HW`` with b fitted from the 56² and 112² points of the
same C, so the largest side is ``⌊√((8 GiB − a) / b)⌋``. Linear is exact here: every buffer
of either formulation is a multiple of H·W (or (H+k−1)(W+k−1), whose excess is in a).

    python bench/jbu.py                     # the full table (a few minutes)
    python bench/jbu.py --channels 64 --sizes 56 --reps 2   # a quick look

Timings are reported, never asserted. Single-threaded (torch.set_num_threads(1)).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time

GIB = 1 << 30


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        return int(re.search(rf"{field}:\s+(\d+)", fh.read()).group(1))


def run_case(method: str, channels: int, size: int, k: int, reps: int) -> dict[str, float]:
    """Inside the subprocess: peak memory of one forward+backward, then timed repetitions."""
    import torch

    from fw_featup.ops import adaptive_conv, adaptive_conv_unfold

    torch.set_num_threads(1)
    op = adaptive_conv if method == "ours" else adaptive_conv_unfold
    pad = size + k - 1
    # warm-up on a tiny map: loads kernels and sets up autograd before the measurement
    xs = torch.randn(1, channels, 8 + k - 1, 8 + k - 1, requires_grad=True)
    ks = torch.randn(1, 8, 8, k, k, requires_grad=True)
    op(xs, ks).backward(torch.ones(1, channels, 8, 8))
    del xs, ks
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, channels, pad, pad, generator=gen).requires_grad_()
    kern = torch.randn(1, size, size, k, k, generator=gen).requires_grad_()
    grad = torch.randn(1, channels, size, size, generator=gen)
    input_bytes = sum(t.numel() * t.element_size() for t in (x, kern, grad))
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current RSS
    out = op(x, kern)
    out.backward(grad)
    peak_extra = (_status_kib("VmHWM") - before) * 1024
    del out
    times = []
    for _ in range(reps):
        x.grad = kern.grad = None
        start = time.perf_counter()
        op(x, kern).backward(grad)
        times.append(time.perf_counter() - start)
    return {
        "peak_extra": float(peak_extra),
        "peak_total": float(peak_extra + input_bytes),
        "time_median": statistics.median(times),
        "time_min": min(times),
    }


def spawn(method: str, channels: int, size: int, k: int, reps: int) -> dict[str, float]:
    """Run one case in a fresh interpreter (a clean heap and high-water mark per case)."""
    cmd = [sys.executable, __file__, "--case", method, str(channels), str(size), str(k)]
    cmd += ["--reps", str(reps)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"case {method} C={channels} {size}² failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def largest_side(points: dict[int, float]) -> int:
    """Largest square output side within 8 GiB from peak = a + b·HW at two sizes."""
    (s1, p1), (s2, p2) = sorted(points.items())
    slope = (p2 - p1) / (s2 * s2 - s1 * s1)
    intercept = p1 - slope * s1 * s1
    return int(math.isqrt(int(max(8 * GIB - intercept, 0) / slope)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", nargs=4, metavar=("METHOD", "C", "SIZE", "K"))
    parser.add_argument("--channels", type=int, nargs="+", default=[64, 384])
    parser.add_argument("--sizes", type=int, nargs="+", default=[56, 112])
    parser.add_argument("--window", type=int, default=7)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    if args.case:
        method, c, s, k = args.case
        print(json.dumps(run_case(method, int(c), int(s), int(k), args.reps)))
        return

    k = args.window
    mib = 1 << 20
    print(f"adaptive conv, window {k}, batch 1, 1 thread; forward + backward")
    head = (
        f"{'C':>4} {'out':>5} | {'ours MiB':>9} {'unfold MiB':>10} {'ratio':>6} | "
        f"{'ours ms':>8} {'unfold ms':>9} {'speed-up':>8} | {'C·k²·HW MiB':>11}"
    )
    print(head)
    print("-" * len(head))
    peaks: dict[tuple[str, int], dict[int, float]] = {}
    for c in args.channels:
        for s in args.sizes:
            res = {m: spawn(m, c, s, k, args.reps) for m in ("ours", "unfold")}
            for m in res:
                peaks.setdefault((m, c), {})[s] = res[m]["peak_total"]
            o, u = res["ours"], res["unfold"]
            buffer = c * k * k * s * s * 4 / mib
            print(
                f"{c:>4} {s:>4}² | {o['peak_extra'] / mib:>9.1f} {u['peak_extra'] / mib:>10.1f} "
                f"{u['peak_extra'] / o['peak_extra']:>5.1f}× | {o['time_median'] * 1e3:>8.1f} "
                f"{u['time_median'] * 1e3:>9.1f} {u['time_median'] / o['time_median']:>7.2f}× | "
                f"{buffer:>11.1f}"
            )
            print(
                f"{'':>11}  total with inputs: ours {o['peak_total'] / mib:.1f} MiB, unfold "
                f"{u['peak_total'] / mib:.1f} MiB ({u['peak_total'] / o['peak_total']:.1f}×); "
                f"min ms: ours {o['time_min'] * 1e3:.1f}, unfold {u['time_min'] * 1e3:.1f}"
            )
    if len(args.sizes) >= 2:
        print("\nlargest square output map (batch 1, window", k, ") within 8 GiB, inputs included:")
        for c in args.channels:
            sides = {
                m: largest_side(dict(list(peaks[(m, c)].items())[:2])) for m in ("ours", "unfold")
            }
            print(f"  C={c:>4}: ours {sides['ours']}², unfold {sides['unfold']}²")


if __name__ == "__main__":
    main()
