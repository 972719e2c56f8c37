"""add_image(): uncompressed layer tars + a config -> a tagged OCI image in the store, byte-reproducibly.

Tagged per platform (Store.tag_platform): an image of one platform under a name that holds another
platform's makes the name an OCI image index of both.

Reproducible because gzip is written with mtime 0, no file name, a fixed level and the stdlib zlib,
JSON is serialised with sorted keys and no spaces, and `created` is LinuxKit's fixed timestamp.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from lkit.core import buildtime
from lkit.core.files import COPY_BUFSIZE
from lkit.errors import ImageError
from lkit.images import refs
from lkit.images.store import (OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Descriptor, Image, Store,
                               parse_platform)

CREATED = buildtime.ISO8601
GZIP_LEVEL = 6


def canonical_json(data: Any) -> bytes:
    """The one JSON encoding lkit hashes: sorted keys, compact separators, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class _HashingSink:
    """A write-only file object that forwards to a blob writer (gzip output goes straight into the store)."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def write(self, data: bytes) -> int:
        return self._writer.write(bytes(data))

    def flush(self) -> None:
        pass


def add_layer(store: Store, tar_path: Path) -> tuple[Descriptor, str]:
    """Gzip one uncompressed tar into the store; returns (layer descriptor, diff_id)."""
    try:
        with open(tar_path, "rb") as src:
            return gzip_into_store(store, src)
    except OSError as exc:
        raise ImageError(f"cannot read layer tar {tar_path}: {exc.strerror or exc}") from None


def gzip_into_store(store: Store, src: IO[bytes]) -> tuple[Descriptor, str]:
    """Deterministically gzip an uncompressed tar stream straight into a blob; (descriptor, diff_id)."""
    diff = hashlib.sha256()
    with store.blob_writer() as writer:
        with gzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=_HashingSink(writer),
                           mtime=0) as gz:
            while chunk := src.read(COPY_BUFSIZE):
                diff.update(chunk)
                gz.write(chunk)
    assert writer.result is not None
    digest, size = writer.result
    return Descriptor(OCI_LAYER_GZIP, digest, size), "sha256:" + diff.hexdigest()


def make_config(config: dict, diff_ids: Sequence[str], platform: dict[str, str]) -> dict:
    """The OCI image config: the caller's runtime config plus lkit's fixed metadata."""
    image_config = {k: v for k, v in config.items() if v is not None}
    out: dict[str, Any] = {
        "architecture": platform["architecture"],
        "os": platform["os"],
        "created": CREATED,
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
    }
    if "variant" in platform:
        out["variant"] = platform["variant"]
    return out


def add_image(store: Store, ref: str, layer_tars: Sequence[Path], *, config: dict,
              platform: str = "linux/amd64") -> Image:
    """Write layers, config and manifest for `ref` into `store` and tag it. Same inputs -> same digests."""
    name = refs.normalise(ref)
    plat = parse_platform(platform)
    layers: list[Descriptor] = []
    diff_ids: list[str] = []
    for tar_path in layer_tars:
        desc, diff_id = add_layer(store, Path(tar_path))
        layers.append(desc)
        diff_ids.append(diff_id)
    config_json = make_config(config, diff_ids, plat)
    config_bytes = canonical_json(config_json)
    config_digest, config_size = store.put_blob(config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": Descriptor(OCI_CONFIG, config_digest, config_size).to_json(),
        "layers": [d.to_json() for d in layers],
    }
    manifest_bytes = canonical_json(manifest)
    manifest_digest, manifest_size = store.put_blob(manifest_bytes)
    # per platform: another platform's image under the same name stays (the name becomes an index)
    store.tag_platform(name, Descriptor(OCI_MANIFEST, manifest_digest, manifest_size, platform=dict(plat)))
    return Image(ref=name, digest=manifest_digest, manifest=manifest, config=config_json, layers=layers)
