"""``fw table``: print (and draw) the periodic table, or write a runnable recipe for a cell."""

from __future__ import annotations

import argparse
from pathlib import Path

from fw.api import Command
from fw.errors import FwError


def configure(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``fw table``."""
    parser.add_argument("--png", help="also draw the table into this PNG file")
    parser.add_argument(
        "--recipe",
        metavar="CELL",
        help="write a runnable recipe for a cell, given as a method name or 'p_name,q_name'",
    )
    parser.add_argument("--out", help="where --recipe writes (default: stdout)")
    parser.add_argument(
        "--scale",
        metavar="NAME",
        help="with --recipe: the cell's variant NAME (e.g. 'sparse', large data)",
    )


def main(args: argparse.Namespace) -> int:
    """Print (and optionally draw) the table, or write a cell's recipe."""
    from fw.registry import get_registry
    from fw_table import table
    from fw_table.picture import periodic_table

    registry = get_registry()
    if args.scale and not args.recipe:
        raise FwError("--scale needs --recipe CELL (the cell whose recipe it scales)")
    if args.recipe:
        if args.scale:
            text = table.scaled_recipe(args.recipe, args.scale, registry)
        else:
            text = table.cell_recipe(args.recipe, registry)
        if args.out:
            Path(args.out).write_text(text)
            print(f"wrote {args.out}")
        else:
            print(text, end="" if text.endswith("\n") else "\n")
        return 0
    built = table.build_table(registry)
    print(table.render_text(built, registry))
    if args.png:
        print(f"wrote {periodic_table(built, Path(args.png), registry=registry)}")
    return 0


COMMAND = Command(
    help="print the periodic table of I-Con methods",
    description="Rows are learned q families, columns supervisory p families.",
    configure=configure,
    main=main,
)
