"""`lkit cache ls|import|export|rm`: look after the image store from the shell."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from pathlib import Path

from lkit.images.cache_archive import export_archive, import_archive
from lkit.images.store import Store, platform_string


def _store(args: argparse.Namespace) -> Store:
    return Store(Path(args.store)) if args.store else Store.default()


def cmd_ls(args: argparse.Namespace) -> int:
    store = _store(args)
    for name, desc in store.list_images():
        kind = "index" if "index" in desc.media_type or "list" in desc.media_type else "image"
        # an index lists the platforms it holds (linux/amd64,linux/arm64/v8)
        plat = platform_string(desc.platform) if desc.platform else ",".join(store.platforms(desc)) or "-"
        print(f"{name}\t{desc.digest}\t{kind}\t{plat}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    store = _store(args)
    for path in args.files:
        with contextlib.ExitStack() as stack:
            if path == "-":  # like `linuxkit cache import -`: spool stdin (tar needs random access)
                spool = stack.enter_context(tempfile.NamedTemporaryFile(dir=store.tmp_dir, suffix=".tar"))
                shutil.copyfileobj(sys.stdin.buffer, spool, 1 << 20)
                spool.flush()
                path = spool.name
            for item in import_archive(store, Path(path), name=args.name):
                print(f"imported {item.ref} {item.descriptor.digest}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    out = export_archive(_store(args), args.images, Path(args.output), platform=args.platform)
    print(f"wrote {out}")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    store = _store(args)
    for ref in args.images:
        store.remove(ref)
        print(f"removed {ref}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from lkit.images.registry import pull
    store = _store(args)
    for ref in args.images:
        image = pull(store, ref, platform=args.platform, insecure=args.plain_http)
        print(f"pulled {image.ref} {image.digest}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from lkit.images.registry import push
    digest = push(_store(args), args.image, dest=args.dest, insecure=args.plain_http, platform=args.platform)
    print(f"pushed {args.dest or args.image} {digest}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cache", help="list, import, export and remove images in the lkit store")
    parser.add_argument("--store", default=None,
                        help="store directory (default: $LKIT_STORE, else $XDG_CACHE_HOME/lkit/store)")
    sub = parser.add_subparsers(dest="cache_command", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("ls", help="list named images: NAME DIGEST KIND PLATFORM")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("import", help="import OCI layout tars (linuxkit cache export), docker save tars "
                                      "or OCI layout directories")
    p.add_argument("files", nargs="+", metavar="FILE", help="archive, OCI layout directory, or - for stdin")
    p.add_argument("--name", default=None, help="name for an archive holding one unnamed image")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("export", help="write images as an OCI layout tar (readable by linuxkit cache import)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-o", "--output", required=True, help="tar file to write")
    p.add_argument("--platform", default="linux/amd64", help="platform to export when only part of an "
                                                             "index is present (default linux/amd64)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("pull", help="fetch images from a registry into the store (credentials: "
                                    "~/.docker/config.json)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--platform", default="linux/amd64")
    p.add_argument("--plain-http", action="store_true", help="use HTTP, not HTTPS (loopback registries only)")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("push", help="push a stored image to a registry")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("dest", nargs="?", default=None, metavar="DEST", help="push under this name instead")
    p.add_argument("--platform", default="linux/amd64")
    p.add_argument("--plain-http", action="store_true", help="use HTTP, not HTTPS (loopback registries only)")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("rm", help="remove image names from the store")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=cmd_rm)
