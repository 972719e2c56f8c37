"""`lkit pkg build DIR... [--arch A[,B]]... [--update] [--store DIR] [-j N] [--push [REGISTRY] [--plain-http]]`.

Builds lkit's base images from Debian packages; `--push` then shares them through a registry so a
team builds each base image once (issue 7). `--arch arm64` builds them from arm64 packages (lock:
build.arm64.lock); `--arch amd64,arm64` both, after which each name is an index of the two.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lkit.core import arch as arch_table
from lkit.core.arch import Arch
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
    build.add_argument("--arch", action="append", default=None, metavar="ARCH[,ARCH]",
                       help=f"architecture(s) to build ({', '.join(arch_table.NAMES)}; comma-separated or "
                            f"repeated; default {arch_table.DEFAULT.name}). Each has its own lock: build.lock "
                            "(amd64), build.<arch>.lock")
    build.add_argument("--update", action="store_true",
                       help="re-resolve Debian versions (apt candidates) and rewrite the lock")
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


def parse_arches(values: list[str] | None) -> list[Arch]:
    """--arch amd64,arm64 / --arch amd64 --arch arm64 -> the architectures, in the order given, once each."""
    out: list[Arch] = []
    for value in values or [arch_table.DEFAULT.name]:
        for name in value.split(","):
            if not name.strip():
                continue
            arch = arch_table.get(name.strip(), where="--arch")
            if arch not in out:
                out.append(arch)
    if not out:
        raise ImageError("--arch names no architecture", hint=f"one of: {', '.join(arch_table.NAMES)}")
    return out


def run_build(args: argparse.Namespace) -> int:
    from lkit.images import registry

    _split_push_arg(args)
    arches = parse_arches(args.arch)
    store = Store(args.store) if args.store else Store.default()
    dirs = pkgbuild.find_build_dirs(args.dirs)
    # every build.yml is checked, for every architecture, before anything is built
    specs = [pkgbuild.load_build(d, arch) for arch in arches for d in dirs]
    _check_push_target(args, specs)
    jobs = 1 if args.update else max(1, args.jobs)  # apt downloads one at a time

    def one(item: tuple[Arch, Path]) -> pkgbuild.BuildResult:
        arch, directory = item
        return pkgbuild.build(directory, store, update=args.update, arch=arch,
                              log=lambda msg: print(msg if arch is arch_table.DEFAULT else f"[{arch.name}] {msg}",
                                                    file=sys.stderr))

    results = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for result in pool.map(one, [(arch, d) for arch in arches for d in dirs]):  # in argument order
            print(result.line(), flush=True)
            results.append(result)
    if args.push is not None:
        # one at a time: a registry error names the image it stopped at; a name built for several
        # architectures is pushed once, as its index (registry.push sends every platform's manifest)
        results = list({r.ref: r for r in results}.values())
        for result in results:
            dest = push_destination(result.ref, args.push)
            digest = registry.push(store, result.ref, dest=dest, insecure=args.plain_http)
            print(f"pushed {dest} {digest}", flush=True)
    return 0
