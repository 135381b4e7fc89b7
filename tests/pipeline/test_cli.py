"""The ``seg25d`` command line: every command and subcommand says what it does."""

from __future__ import annotations

import argparse

import pytest

from seg25d.pipeline.cli import COMMANDS, build_parser, main


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """``(command path, parser, the help it is listed with)`` for every subcommand, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), sub, listed.get(name)
                yield from _walk(sub, (*path, name))


def test_every_command_and_subcommand_has_help_and_a_description():
    parser = build_parser()
    assert parser.description
    found = list(_walk(parser))
    assert {path[0] for path, _, _ in found} == set(COMMANDS) | {"plan"}  # commands/dataset.py also adds plan
    assert {("bench", "compare"), ("bench", "ablation"), ("demo",), ("kaggle", "train")} <= {p for p, _, _ in found}
    for path, sub, listed in found:
        assert listed and listed.strip(), f"seg25d {' '.join(path)} is listed without help"
        assert sub.description and sub.description.strip(), f"seg25d {' '.join(path)} --help has no description"


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["bench", "--help"], ["bench", "scaling", "--help"]])
def test_help_prints_the_description(argv, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("usage: seg25d")
    description = lines[lines.index("") + 1]  # the first line after the usage block
    assert description and not description.startswith(("positional", "options", "  "))
