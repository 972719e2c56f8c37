"""The `lkit` command: argument parsing only; each area registers its own sub-commands.

Sub-command modules expose `register(subparsers)`; each parser sets `func(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from lkit.errors import LkitError

# Modules that contribute sub-commands, in the order they appear in `lkit --help`.
COMMAND_MODULES = (
    "lkit.build.cli",       # build
    "lkit.images.cli",      # cache
    "lkit.images.pkg_cli",  # pkg
    "lkit.machine.cli",     # run
    "lkit.report.cli",      # report
)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lkit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # the area has no commands yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LkitError as exc:
        print(f"lkit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("lkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`lkit ... | head`): not worth a traceback. Point stdout at /dev/null
        # so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
