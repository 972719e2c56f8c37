"""`lkit build`: LinuxKit's `linuxkit build`, in process."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from lkit.build.outputs.base import FORMAT_NAMES
from lkit.images.store import Store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build a LinuxKit spec into output formats",
                       description="Build one spec (several files merge as LinuxKit merges them).")
    p.add_argument("specs", nargs="+", type=Path, metavar="SPEC.yml")
    p.add_argument("--format", "-f", action="append", dest="formats", choices=FORMAT_NAMES, metavar="FORMAT",
                   help="output format, repeatable (default: the spec's `outputs:`, else kernel+initrd). "
                        "One of: " + ", ".join(FORMAT_NAMES))
    p.add_argument("--dir", "-d", type=Path, default=Path("."), help="directory for the outputs (default: .)")
    p.add_argument("--name", help="base name of the outputs (default: the first spec's file name)")
    p.add_argument("--store", type=Path, help="image store (default: $LKIT_STORE or ~/.cache/lkit/store)")
    p.add_argument("--arch", default="amd64", metavar="ARCH",
                   help="architecture to build for: amd64 (default) or arm64; images resolve to its platform")
    p.add_argument("--dry-run", action="store_true", help="validate and print the merged spec; build nothing")
    p.add_argument("--no-cache", action="store_true", help="rebuild even if nothing changed")
    p.add_argument("--pull", action="store_true", help="pull every image from its registry even if it is in the store")
    p.add_argument("--offline", action="store_true", help="never contact a registry: a missing image is an error")
    p.add_argument("--no-sbom", action="store_true", help="leave out sbom.spdx.json (LinuxKit writes it by default)")
    p.add_argument("--plain-http", action="store_true", help="talk plain HTTP to loopback registries (localhost:5000 ...)")
    p.add_argument("--push", metavar="REGISTRY/REPO:TAG",
                   help="also push the outputs as an OCI artifact to REGISTRY/REPO/<name>:TAG "
                        "(what shards test with --lkit-prebuilt oci://REGISTRY/REPO:TAG)")
    p.add_argument("--sign", action="store_true",
                   help="sign the EFI binary (UKI) of iso-efi, raw-efi, qcow2-efi for Secure Boot with lkit's "
                        "test keys (~/.cache/lkit/secureboot-test-keys; never for production)")
    p.add_argument("--sign-keys", type=Path, metavar="DIR",
                   help="sign with these keys instead: DIR/db.key and DIR/db.crt (and pk.crt, kek.crt for `lkit run`)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lkit.spec import load_spec

    spec = load_spec(args.specs)
    if args.name:
        spec.name = args.name
    for notice in spec.notices:
        print(f"lkit: notice: {notice}", file=sys.stderr)
    if args.dry_run:
        yaml.safe_dump(spec.to_dict(), sys.stdout, sort_keys=False, default_flow_style=False)
        return 0
    from lkit.build.builder import build
    from lkit.core import arch as arch_table

    arch = arch_table.get(args.arch, where="--arch")
    formats = args.formats or spec.outputs or ["kernel+initrd"]
    store = Store(args.store) if args.store else Store.default()
    keys = None
    if args.sign or args.sign_keys:
        from lkit.core.secureboot import generated_keys, keys_in

        keys = keys_in(args.sign_keys) if args.sign_keys else generated_keys()
    result = build(spec, formats, args.dir, store=store, use_cache=not args.no_cache,
                   pull=args.pull, offline=args.offline, insecure=args.plain_http, sbom=not args.no_sbom,
                   keys=keys, arch=arch)
    for fmt in formats:
        state = "unchanged" if fmt in result.reused else "built"
        for art in result.artifacts[fmt]:
            print(f"{fmt:18} {state:9} {art.size:>12,}  {art.path}")
    print(f"lkit: {spec.name}: {len(formats)} format(s) in {result.seconds:.2f} s")
    if args.push:
        from lkit.build.publish import SCHEMES, parse_location, push_build

        location, plain = (parse_location(args.push) if args.push.startswith(tuple(SCHEMES))
                           else (args.push, args.plain_http))
        ref, digest = push_build(result, location, store=store, plain_http=plain or args.plain_http)
        print(f"lkit: pushed {ref}@{digest}")
    return 0
