"""``fw laplace-row``: print one row p(j|i) of the Laplace kernel for given distances."""

from __future__ import annotations

import argparse

import torch

from fw.api import Command
from fw.errors import FwError


def configure(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``fw laplace-row``."""
    parser.add_argument("distances", nargs="+", type=float, help="distances ||x_i - x_j||")
    parser.add_argument("--scale", type=float, default=1.0, help="the kernel's scale b")


def main(args: argparse.Namespace) -> int:
    """Print p(j|i) = softmax_j(-d_ij / b) for the given distances."""
    if args.scale <= 0:
        raise FwError(f"--scale must be positive, got {args.scale}")
    p = torch.softmax(-torch.tensor(args.distances) / args.scale, dim=0)
    print(" ".join(f"{v:.4f}" for v in p.tolist()))
    return 0


COMMAND = Command(
    help="print one row p(j|i) of the Laplace kernel",
    configure=configure,
    main=main,
)
