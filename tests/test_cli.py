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


def test_an_error_reaches_stderr_as_one_whole_write(monkeypatch, tmp_path):
    """Under torchrun every rank writes to the same pipe; with PYTHONUNBUFFERED set each write() is a system call, so
    a line written in two pieces (print's text, then its newline) can run into another rank's line. The error line
    must arrive in a single write, newline included."""
    import io
    import sys

    class Recorder(io.StringIO):
        def __init__(self):
            super().__init__()
            self.writes = []

        def write(self, s):
            self.writes.append(s)
            return super().write(s)

    err = Recorder()
    monkeypatch.setattr(sys, "stderr", err)
    assert main(["generate", str(tmp_path / "missing.pt"), "--output-dir", str(tmp_path / "out")]) == 2
    lines = [w for w in err.writes if w.startswith("sra generate: error:")]
    assert len(lines) == 1 and lines[0].endswith("\n") and lines[0].count("\n") == 1, err.writes
    assert "".join(err.writes) == lines[0]
