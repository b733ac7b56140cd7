"""The ``fw`` command: dispatch to the sub-commands that plugins (the host included) contribute."""

from __future__ import annotations

import argparse
import sys
import textwrap
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from fw import __version__
from fw.errors import FwError, Interrupted

EXIT_USAGE = 2


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
        "--skip-broken-plugins",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="skip (with a warning) installed plugins that fail to import",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="also print the traceback of an error (the exit status stays 2)",
    )


def build_parser(commands: Mapping[str, Any]) -> argparse.ArgumentParser:
    """The argument parser of ``fw``: one sub-parser per contributed command (registry entries)."""
    common = argparse.ArgumentParser(add_help=False)
    _common(common, top=False)
    parser = argparse.ArgumentParser(
        prog="fw",
        description="I-Con representation learning from plugins and YAML recipes. Each "
        "command names the plugin that provides it in [brackets].",
    )
    _common(parser, top=True)
    parser.add_argument("--version", action="version", version=f"fw {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, entry in sorted(commands.items()):
        command = entry.factory
        sub_parser = sub.add_parser(
            name,
            parents=[common],
            help=f"{command.help} [{entry.plugin}]",
            description=command.description or command.help,
        )
        command.configure(sub_parser)
    return parser


def _error(exc: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    message = textwrap.fill(str(exc), width=100, break_long_words=False, break_on_hyphens=False)
    print(f"fw: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fw`` console script."""
    from fw import commands
    from fw.registry import get_registry, set_registry

    argv = list(sys.argv[1:] if argv is None else argv)
    early = argparse.ArgumentParser(add_help=False)
    _common(early, top=True)
    options, _ = early.parse_known_args(argv)
    try:
        registry = get_registry(
            plugins=options.plugin, skip_broken=options.skip_broken_plugins or None
        )
        registry.add_plugin(commands, commands.PLUGIN_NAME)
        commands_of = registry.commands
    except FwError as exc:
        return _error(exc, options.debug)
    set_registry(registry)
    parser = build_parser(commands_of)
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
        status = commands_of[args.command].factory.main(args)
    except Interrupted as exc:
        print(f"fw: {exc}", file=sys.stderr)
        return 128 + exc.signum  # the shell's convention: 130 after Ctrl-C, 143 after SIGTERM
    except FwError as exc:
        return _error(exc, args.debug)
    return 0 if status is None else int(status)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
