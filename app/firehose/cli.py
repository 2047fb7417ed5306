"""The one command-line entry point: `firehose <subcommand>`.

Each subcommand lives in the module of its pipeline stage, which provides
`configure_parser(parser: argparse.ArgumentParser) -> None` and `run(args, settings: Settings) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from firehose import __version__
from firehose.config import ConfigError, Settings

SUBCOMMANDS = {
    "simulate": ("firehose.simulator.command", "run a local Jetstream-compatible websocket server"),
    "ingest": ("firehose.ingest", "read Jetstream into the Redis Stream buffer"),
    "flush": ("firehose.flush", "move buffered events into date-partitioned Parquet"),
    "compact": ("firehose.compact", "merge a finished day's Parquet files into a few large sorted files"),
    "reindex": ("firehose.index", "rebuild the full-text index of days that lack it or disagree with the Parquet"),
    "dev": ("firehose.devstack", "run the whole pipeline on this machine (what `make run` starts)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser with one sub-parser per stage.

    Only the chosen stage's module is imported (an ingester never loads DuckDB); with no command, all are.
    """
    parser = argparse.ArgumentParser(prog="firehose", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"firehose {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if command in (None, name):
            module = importlib.import_module(module_name)
            module.configure_parser(p)
            p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, read settings once, and run the chosen stage."""
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if a in SUBCOMMANDS), None)
    args = build_parser(command).parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"firehose: configuration error: {exc}", file=sys.stderr)
        return 2
    return int(args._module.run(args, settings) or 0)


if __name__ == "__main__":
    sys.exit(main())
