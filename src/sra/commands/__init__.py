"""One module per `sra` subcommand: `add_parser(subparsers)` and `run(args) -> exit code`."""
