"""The ``fw`` command: run recipes, list plugins, show resolved recipes, print the table."""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from fw import __version__, explain_cli, localize_cli
from fw.errors import FwError, Interrupted

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _common(parser: argparse.ArgumentParser, top: bool) -> None:
    # Sub-commands repeat the options with SUPPRESS defaults so values given before the
    # sub-command are not reset by the sub-parser.
    parser.add_argument(
        "--plugin",
        "-p",
        action="append",
        default=[] if top else argparse.SUPPRESS,
        metavar="NAME",
        help="load this entry-point plugin (repeatable); with FW_DISABLE_PLUGIN_AUTOLOAD=1 "
        "only the named plugins are loaded",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="show tracebacks of errors",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fw`` and its sub-commands."""
    common = argparse.ArgumentParser(add_help=False)
    _common(common, top=False)
    parser = argparse.ArgumentParser(
        prog="fw",
        description="I-Con representation learning from plugins and YAML recipes.",
    )
    _common(parser, top=True)
    parser.add_argument("--version", action="version", version=f"fw {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        parents=[common],
        help="train and evaluate a recipe",
        description="Train the recipe's learner, then evaluate it. Overrides are dotted "
        "key=value pairs, e.g. `learner.q.dof=2 trainer.max_steps=200`.",
    )
    run.add_argument("recipe", help="path of a YAML recipe")
    run.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    run.add_argument("--out", help="run directory (default runs/<recipe>-<time>)")
    run.add_argument(
        "--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt"
    )
    run.add_argument("--overwrite", action="store_true", help="replace the run OUT already holds")

    show = sub.add_parser(
        "show",
        parents=[common],
        help="print the fully resolved recipe",
        description="Print the recipe after `extends`, overrides and defaults.",
    )
    show.add_argument("recipe")
    show.add_argument("overrides", nargs="*")

    sub.add_parser(
        "plugins",
        parents=[common],
        help="list every registered component by kind",
        description="List registered components with the plugin and distribution of each.",
    )

    table = sub.add_parser(
        "table",
        parents=[common],
        help="print the periodic table of I-Con methods",
        description="Rows are learned q families, columns supervisory p families.",
    )
    table.add_argument("--png", help="also draw the table into this PNG file")
    table.add_argument(
        "--recipe",
        metavar="CELL",
        help="write a runnable recipe for a cell, given as a method name or 'p_name,q_name'",
    )
    table.add_argument("--out", help="where --recipe writes (default: stdout)")
    explain_cli.add_parser(sub, common)
    localize_cli.add_parser(sub, common)
    table.add_argument(
        "--scale",
        metavar="NAME",
        help="with --recipe: the cell's variant NAME (e.g. 'sparse', large data)",
    )
    return parser


def _registry(args: argparse.Namespace):
    from fw.registry import get_registry, set_registry

    registry = get_registry(plugins=args.plugin) if args.plugin else get_registry()
    set_registry(registry)
    return registry


def cmd_run(args: argparse.Namespace) -> int:
    from fw.recipe import load_recipe
    from fw.train import default_run_dir, train

    registry = _registry(args)
    recipe = load_recipe(args.recipe, args.overrides, registry)
    run_dir = Path(args.out) if args.out else default_run_dir(recipe)
    final = train(recipe, run_dir, resume=args.resume, registry=registry, overwrite=args.overwrite)
    if final:
        print(summary_line(final, run_dir))
    return 0


#: metric name fragments that make a headline, most telling first
HEADLINE = ("hungarian_accuracy", "miou", "accuracy", "top1", "map", "nmi", "trustworthiness")


def summary_line(final: dict[str, float], run_dir: Path) -> str:
    """One line: the headline metrics of a run and the files it wrote."""
    keys = [k for frag in HEADLINE for k in final if frag in k]
    picked = list(dict.fromkeys(keys))[:4] or [k for k in final if k != "train_seconds"][:3]
    metrics = ", ".join(f"{k} {final[k]:.4g}" for k in picked)
    files = sorted(p.name for p in run_dir.iterdir() if p.is_file()) if run_dir.is_dir() else []
    seconds = final.get("train_seconds", 0.0)
    return f"{metrics} ({seconds:.0f} s) -> {run_dir}/ [{', '.join(files)}]"


def cmd_show(args: argparse.Namespace) -> int:
    from fw.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides, _registry(args))
    print(recipe.to_yaml(), end="")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    registry = _registry(args)
    for kind in registry.kinds():
        entries = registry.entries(kind)
        print(f"{kind} ({len(entries)})")
        if not entries:
            print("  (none registered)")
        for e in entries:
            doc = (e.factory.__doc__ or "").strip().splitlines()
            summary = doc[0] if doc else ""
            print(f"  {e.name:<22} {e.plugin:<10} [{e.distribution}]  {summary}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    """`fw table`: print (and optionally draw) the table, or write a cell's recipe."""
    from fw import table
    from fw.plots import periodic_table

    registry = _registry(args)
    scale = getattr(args, "scale", None)
    if scale and not args.recipe:
        raise FwError("--scale needs --recipe CELL (the cell whose recipe it scales)")
    if args.recipe:
        if scale:
            text = table.scaled_recipe(args.recipe, scale, registry)
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


COMMANDS = {"run": cmd_run, "show": cmd_show, "plugins": cmd_plugins, "table": cmd_table}
COMMANDS["explain"] = explain_cli.cmd_explain
COMMANDS["localize"] = localize_cli.cmd_localize


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fw`` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides may come after options (`fw run r.yaml --out d a.b=1`): argparse leaves them over.
    if (
        extra
        and hasattr(args, "overrides")
        and all("=" in e and not e.startswith("-") for e in extra)
    ):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except Interrupted as exc:
        print(f"fw: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except FwError as exc:
        if args.debug:
            raise
        message = textwrap.fill(str(exc), width=100, break_long_words=False, break_on_hyphens=False)
        print(f"fw: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
