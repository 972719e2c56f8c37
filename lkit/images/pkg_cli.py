"""`lkit pkg build DIR... [--update] [--store DIR] [-j N] [--push [REGISTRY] [--plain-http]]`.

Builds lkit's base images from Debian packages; `--push` then shares them through a registry so a
team builds each base image once (issue 7).
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lkit.errors import ImageError
from lkit.images import pkgbuild, refs
from lkit.images.store import Store

OWN_NAME = ""  # `--push` without a value: push each image under its own name (docker.io/lkit/...)


def register(subparsers: argparse._SubParsersAction) -> None:
    pkg = subparsers.add_parser("pkg", help="base images built from Debian packages")
    sub = pkg.add_subparsers(dest="pkg_command", metavar="SUBCOMMAND")
    sub.required = True
    build = sub.add_parser("build", help="build fixtures/pkgs/<name>/build.yml images into the store",
                           description="Build each DIR/build.yml (or every sub-folder of DIR holding one). "
                                       "Prints one line per image: name, digest, compressed size, "
                                       "built/unchanged. See fixtures/pkgs/README.md for the format.")
    build.add_argument("dirs", nargs="*", type=Path, metavar="DIR")  # "*": `--push DIR` may have taken one
    build.add_argument("--update", action="store_true",
                       help="re-resolve Debian versions (apt candidates) and rewrite build.lock")
    build.add_argument("--store", type=Path, default=None,
                       help="image store (default: LKIT_STORE or ~/.cache/lkit/store)")
    build.add_argument("-j", "--jobs", type=int, default=min(4, os.cpu_count() or 1),
                       help="images built at once (compression runs in parallel; default: CPUs, at most 4)")
    build.add_argument("--push", nargs="?", const=OWN_NAME, default=None, metavar="REGISTRY",
                       help="after building, push each image to REGISTRY (host[:port][/prefix]) as "
                            "REGISTRY/lkit/<name>:<tag>; without REGISTRY, under its own name. "
                            "Credentials: ~/.docker/config.json (DOCKER_CONFIG)")
    build.add_argument("--plain-http", action="store_true",
                       help="push over plain HTTP (loopback registries such as localhost:5000 only)")
    build.set_defaults(func=run_build)


def push_destination(image_ref: str, registry: str) -> str:
    """Where `image_ref` goes: `localhost:5000` + `lkit/nginx:1.22` -> `localhost:5000/lkit/nginx:1.22`."""
    parsed = refs.Reference.parse(image_ref)
    if registry == OWN_NAME:
        return str(parsed)
    prefix = registry.strip().rstrip("/")
    host = prefix.split("/", 1)[0]
    if "://" in prefix or "@" in prefix or not ("." in host or ":" in host or host == "localhost"):
        raise ImageError(f"--push {registry!r} is not a registry address",
                         hint="give host[:port] or host[:port]/prefix (a host has a '.', a ':port' or is "
                              "'localhost'), e.g. --push localhost:5000")
    dest = refs.Reference.parse(f"{prefix}/{parsed.path}:{parsed.tag or refs.DEFAULT_TAG}")
    return str(dest)


def _split_push_arg(args: argparse.Namespace) -> None:
    """`--push fixtures/pkgs/x` means `--push` with no value followed by a DIR: argparse cannot tell."""
    if args.push and Path(args.push).is_dir():
        args.dirs.insert(0, Path(args.push))
        args.push = OWN_NAME
    if not args.dirs:
        raise ImageError("lkit pkg build: no DIR given", hint="name package folders, e.g. lkit pkg build fixtures/pkgs/*")


def _check_push_target(args: argparse.Namespace, specs: list[pkgbuild.BuildSpec]) -> None:
    """Fail on a bad --push/--plain-http before minutes of building, not after."""
    from lkit.images.registry_http import Transport
    if args.push is None:
        if args.plain_http:
            raise ImageError("--plain-http only applies with --push", hint="add --push REGISTRY or drop --plain-http")
        return
    for spec in specs:
        dest = refs.Reference.parse(push_destination(spec.ref, args.push))
        Transport(dest.domain, insecure=args.plain_http)  # refuses plain HTTP to a non-loopback host


def run_build(args: argparse.Namespace) -> int:
    from lkit.images import registry

    _split_push_arg(args)
    store = Store(args.store) if args.store else Store.default()
    dirs = pkgbuild.find_build_dirs(args.dirs)
    specs = [pkgbuild.load_build(d) for d in dirs]  # every build.yml is checked before anything is built
    _check_push_target(args, specs)
    jobs = 1 if args.update else max(1, args.jobs)  # apt downloads one at a time

    def one(directory: Path) -> pkgbuild.BuildResult:
        return pkgbuild.build(directory, store, update=args.update, log=lambda msg: print(msg, file=sys.stderr))

    results = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for result in pool.map(one, dirs):  # printed in argument order as each finishes
            print(result.line(), flush=True)
            results.append(result)
    if args.push is not None:
        for result in results:  # one at a time: a registry error names the image it stopped at
            dest = push_destination(result.ref, args.push)
            digest = registry.push(store, result.ref, dest=dest, insecure=args.plain_http)
            print(f"pushed {dest} {digest}", flush=True)
    return 0
