"""A spec's built outputs as an OCI artifact in a registry: build once, test the same bytes everywhere.

`lkit build --push REGISTRY/REPO:TAG` puts each output file in as a layer (its file name in the
`org.opencontainers.image.title` annotation, as ORAS does), under `REGISTRY/REPO/<spec name>:TAG`;
`--lkit-prebuilt oci://REGISTRY/REPO:TAG` fetches them back, every blob checked against its digest,
into a folder the plugin tests as prebuilt artifacts. `oci+http://` talks plain HTTP to a loopback
registry (CI's `docker-registry` service).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lkit.build.builder import BuiltImage
from lkit.core.files import atomic_open
from lkit.errors import ImageError
from lkit.images import refs
from lkit.images.registry import RegistryClient
from lkit.images.store import OCI_MANIFEST, Descriptor, Store

ARTIFACT_TYPE = "application/vnd.lkit.build.v1"
EMPTY_CONFIG = b"{}"
EMPTY_MEDIA = "application/vnd.oci.empty.v1+json"
TITLE = "org.opencontainers.image.title"
SCHEMES = {"oci://": False, "oci+http://": True}   # scheme -> plain HTTP (loopback registries only)


def parse_location(text: str) -> tuple[str, bool]:
    """'oci://REGISTRY/REPO:TAG' -> ('REGISTRY/REPO:TAG', plain_http)."""
    for scheme, plain in SCHEMES.items():
        if text.startswith(scheme):
            return text[len(scheme):], plain
    raise ImageError(f"{text!r} is not an oci:// location", hint="write oci://REGISTRY/REPO:TAG "
                     "(oci+http:// for a plain-HTTP registry on localhost)")


def spec_ref(location: str, spec_name: str) -> refs.Reference:
    """Where a spec's build lives: REGISTRY/REPO/<spec name>:TAG."""
    base = refs.Reference.parse(location)
    if base.digest:
        raise ImageError(f"{location}: give a tag, not a digest", hint="e.g. oci://localhost:5000/builds:ci-123")
    return refs.Reference.parse(f"{base.domain}/{base.path}/{spec_name}:{base.tag or refs.DEFAULT_TAG}")


def push_build(built: BuiltImage, location: str, *, store: Store, plain_http: bool = False) -> tuple[str, str]:
    """Push every output file of `built`; returns (reference, manifest digest)."""
    target = spec_ref(location, built.name)
    files: dict[str, tuple[Path, list[str]]] = {}
    for fmt, artifacts in sorted(built.artifacts.items()):
        for artifact in artifacts:
            files.setdefault(artifact.path.name, (artifact.path, []))[1].append(fmt)
    layers: list[dict] = []
    blobs: list[str] = []
    for name, (path, formats) in sorted(files.items()):
        digest, size = store.put_blob(path)
        blobs.append(digest)
        layers.append({"mediaType": "application/octet-stream", "digest": digest, "size": size,
                       "annotations": {TITLE: name, "dev.lkit.formats": ",".join(sorted(formats))}})
    config_digest, _ = store.put_blob(EMPTY_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
                "config": {"mediaType": EMPTY_MEDIA, "digest": config_digest, "size": len(EMPTY_CONFIG)},
                "layers": layers,
                "annotations": {"dev.lkit.spec": built.name, "dev.lkit.build-key": built.key}}
    body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    client = RegistryClient.for_ref(target, insecure=plain_http)
    for blob in [config_digest, *blobs]:
        client.upload_blob(store, blob)
    client.put_manifest(target.tag or refs.DEFAULT_TAG, body, OCI_MANIFEST)
    manifest_digest, _ = store.put_blob(body)
    return str(target), manifest_digest


def fetch_build(location: str, spec_name: str, dest: Path, *, store: Store, plain_http: bool = False) -> Path:
    """The spec's pushed outputs, verified, as files in `dest` (made complete or not at all)."""
    target = spec_ref(location, spec_name)
    client = RegistryClient.for_ref(target, insecure=plain_http)
    body, _media, digest = client.get_manifest(target.tag or refs.DEFAULT_TAG)
    data = json.loads(body)
    if data.get("artifactType") != ARTIFACT_TYPE:
        raise ImageError(f"{target} ({digest}) is not an lkit build (artifactType {data.get('artifactType')!r})",
                         hint="push builds with: lkit build --push REGISTRY/REPO:TAG SPEC.yml")
    dest.mkdir(parents=True, exist_ok=True)
    for layer in data.get("layers") or []:
        desc = Descriptor.from_json(layer, f"manifest {digest} of {target}")
        name = str((layer.get("annotations") or {}).get(TITLE, ""))
        if not name or "/" in name or name in (".", ".."):
            raise ImageError(f"{target}: a layer has no plain file name ({name!r})")
        client.fetch_blob(store, desc)   # verified against its digest on the way in
        with store.open_blob(desc.digest) as src, atomic_open(dest / name, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    return dest
