"""The `sra` command line: a thin dispatcher. Each subcommand lives in `sra.commands.<name>` with `add_parser` (flags
into a config) and `run` (calls the library); errors the user can fix print as one line with a non-zero exit.

The command list is discovered from the modules of `sra.commands` (not kept in a table), so it always names exactly
the commands that exist: adding a command is adding a module."""
from __future__ import annotations

import argparse
import importlib
import pkgutil

from . import __version__

DISTRIBUTION = "sra-diffusion"  # the package index name (`sra` there is another project); import name and command: sra


def user_errors() -> tuple[type[BaseException], ...]:
    from .checkpoint import CheckpointError
    from .data import DataError
    from .runfolder import RunFolderError

    return (DataError, CheckpointError, RunFolderError, ValueError, FileNotFoundError, NotADirectoryError,
            PermissionError)


def command_modules() -> dict:
    """{name: module} of every public module in sra.commands that defines both `add_parser` and `run`, by name
    (modules without them are shared helpers, not commands)."""
    from . import commands

    found = {}
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if callable(getattr(module, "add_parser", None)) and callable(getattr(module, "run", None)):
            found[info.name] = module
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sra", description="Train, sample and evaluate diffusion transformers with Self-Representation Alignment.")
    # answered after torch is imported (~2.5 s): `sra/__init__` imports the public API eagerly and runs before this
    parser.add_argument("--version", action="version", version=f"sra {__version__} (distribution {DISTRIBUTION})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in command_modules().values():
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    from .runfolder import say
    from .runfolder import Stopped

    try:
        return int(args._run(args) or 0)
    except Stopped as e:  # a signal or divergence: the run folder is consistent, the message says what to do
        say(f"sra {args.command}: {e}")
        return e.code
    except user_errors() as e:
        say(f"sra {args.command}: error: {e}")
        return 2
    except OSError as e:  # a file system refusal no command turned into words (read-only, full, ...): still one line
        where = f"{e.filename}: " if e.filename else ""
        say(f"sra {args.command}: error: {where}{e.strerror or e}")
        return 2
    except KeyboardInterrupt:
        say(f"sra {args.command}: interrupted")
        return 130
