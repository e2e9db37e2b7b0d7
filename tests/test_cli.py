"""The `sra` dispatcher: its command list is the command modules that exist."""
import argparse
import ast
from pathlib import Path

import pytest

import sra.commands
from sra.cli import build_parser, main


def command_files() -> set[str]:
    """Modules in sra/commands defining top-level `add_parser` and `run` functions, read from the source files."""
    names = set()
    for path in Path(sra.commands.__file__).parent.glob("*.py"):
        if path.name.startswith("_"):
            continue
        defs = {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}
        if {"add_parser", "run"} <= defs:
            names.add(path.stem)
    return names


def test_commands_are_the_modules_that_exist(capsys):
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == command_files()
    assert {"train", "sample", "generate", "eval"} <= set(sub.choices) and "study" not in sub.choices
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in command_files())


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out
