"""The `lkit` command: argument parsing only; each area registers its own sub-commands.

Sub-command modules expose `register(subparsers)` (or the function named after a colon:
"module:function"); each parser sets `func(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from lkit.errors import LkitError

# Sub-command -> the module that registers it, in the order they appear in `lkit --help`.
COMMAND_MODULES = {
    "build": "lkit.build.cli",
    "cache": "lkit.images.cli",
    "pkg": "lkit.images.pkg_cli",
    "run": "lkit.machine.cli",
    "report": "lkit.report.cli",
    "diff": "lkit.report.cli:register_diff",
}


def make_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `command`, only that sub-command's module is imported (a quick start matters:
    a no-change `lkit build` takes milliseconds, importing every area takes a third of a second)."""
    parser = argparse.ArgumentParser(prog="lkit", description="Build LinuxKit specs in process, boot every output "
                                     "format under QEMU, check and report. `pytest suites/` runs it all as tests.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    names = [command] if command in COMMAND_MODULES else list(COMMAND_MODULES)
    for name in names:
        module, _, function = COMMAND_MODULES[name].partition(":")
        getattr(importlib.import_module(module), function or "register")(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = make_parser(argv[0] if argv else None).parse_args(argv)
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
