"""One module per `sra` subcommand: `add_parser(subparsers)` and `run(args) -> exit code`; what they share lives here."""
from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None ones (their help text says what None means) and those of on/off switches."""

    def _get_help_string(self, action):
        if action.default is None or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)
