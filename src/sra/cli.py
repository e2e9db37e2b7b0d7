"""The `sra` command line: a thin dispatcher. Each subcommand lives in `sra.commands.<name>` with `add_parser` (flags
into a config) and `run` (calls the library); errors the user can fix print as one line with a non-zero exit."""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("train", "sample", "generate", "eval", "prepare", "bench", "probe", "pca", "study")


def user_errors() -> tuple[type[BaseException], ...]:
    from .data import DataError
    from .train import CheckpointError, RunFolderError

    return (DataError, CheckpointError, RunFolderError, ValueError, FileNotFoundError, NotADirectoryError,
            PermissionError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sra", description="Train, sample and evaluate diffusion transformers with Self-Representation Alignment.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"sra.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"sra.commands.{name}":
                continue  # command not part of this build
            raise
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except user_errors() as e:
        print(f"sra {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sra {args.command}: interrupted", file=sys.stderr)
        return 130
