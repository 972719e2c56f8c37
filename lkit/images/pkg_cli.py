"""`lkit pkg build DIR... [--update] [--store DIR]`: build lkit's base images from Debian packages."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lkit.images import pkgbuild
from lkit.images.store import Store


def register(subparsers: argparse._SubParsersAction) -> None:
    pkg = subparsers.add_parser("pkg", help="base images built from Debian packages")
    sub = pkg.add_subparsers(dest="pkg_command", metavar="SUBCOMMAND")
    sub.required = True
    build = sub.add_parser("build", help="build fixtures/pkgs/<name>/build.yml images into the store",
                           description="Build each DIR/build.yml (or every sub-folder of DIR holding one). "
                                       "Prints: image, digest, compressed size, built/unchanged.")
    build.add_argument("dirs", nargs="+", type=Path, metavar="DIR")
    build.add_argument("--update", action="store_true",
                       help="re-resolve Debian versions (apt candidates) and rewrite build.lock")
    build.add_argument("--store", type=Path, default=None,
                       help="image store (default: LKIT_STORE or ~/.cache/lkit/store)")
    build.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    store = Store(args.store) if args.store else Store.default()
    for directory in pkgbuild.find_build_dirs(args.dirs):
        result = pkgbuild.build(directory, store, update=args.update,
                                log=lambda msg: print(msg, file=sys.stderr))
        print(result.line(), flush=True)
    return 0
