"""The ``seg25d`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from seg25d import __version__
from seg25d.pipeline.errors import InputError

# Subcommand modules in seg25d.pipeline.commands, in the order `seg25d --help` lists them.
COMMANDS = (
    "demo",
    "synth",
    "manifest",
    "dataset",
    "preprocess",
    "train",
    "predict",
    "evaluate",
    "report",
    "kaggle",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seg25d",
        description="Volumetric segmentation without 3D convolutions (random 2.5D U-Net and baselines).",
    )
    parser.add_argument("--version", action="version", version=f"seg25d {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"seg25d.pipeline.commands.{name}").register(sub)
    _describe(parser)
    return parser


def _describe(parser: argparse.ArgumentParser) -> None:
    """Every subcommand's --help opens with a description: its own, or the line it is listed with."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {choice.dest: choice.help for choice in action._choices_actions}
            for name, subparser in action.choices.items():
                subparser.description = subparser.description or listed.get(name)
                _describe(subparser)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except InputError as err:
        print(f"seg25d {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
