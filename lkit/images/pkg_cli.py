"""`lkit pkg build DIR... [--update] [--store DIR] [-j N]`: build lkit's base images from Debian packages."""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lkit.images import pkgbuild
from lkit.images.store import Store


def register(subparsers: argparse._SubParsersAction) -> None:
    pkg = subparsers.add_parser("pkg", help="base images built from Debian packages")
    sub = pkg.add_subparsers(dest="pkg_command", metavar="SUBCOMMAND")
    sub.required = True
    build = sub.add_parser("build", help="build fixtures/pkgs/<name>/build.yml images into the store",
                           description="Build each DIR/build.yml (or every sub-folder of DIR holding one). "
                                       "Prints one line per image: name, digest, compressed size, "
                                       "built/unchanged. See fixtures/pkgs/README.md for the format.")
    build.add_argument("dirs", nargs="+", type=Path, metavar="DIR")
    build.add_argument("--update", action="store_true",
                       help="re-resolve Debian versions (apt candidates) and rewrite build.lock")
    build.add_argument("--store", type=Path, default=None,
                       help="image store (default: LKIT_STORE or ~/.cache/lkit/store)")
    build.add_argument("-j", "--jobs", type=int, default=min(4, os.cpu_count() or 1),
                       help="images built at once (compression runs in parallel; default: CPUs, at most 4)")
    build.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    store = Store(args.store) if args.store else Store.default()
    dirs = pkgbuild.find_build_dirs(args.dirs)
    for d in dirs:  # every build.yml is checked before anything is fetched or built
        pkgbuild.load_build(d)
    jobs = 1 if args.update else max(1, args.jobs)  # apt downloads one at a time

    def one(directory: Path) -> pkgbuild.BuildResult:
        return pkgbuild.build(directory, store, update=args.update, log=lambda msg: print(msg, file=sys.stderr))

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for result in pool.map(one, dirs):  # printed in argument order as each finishes
            print(result.line(), flush=True)
    return 0
