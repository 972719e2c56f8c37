"""Cache import/export: OCI layout tars (linuxkit cache export/import), `docker save` tars, OCI dirs.

Import is all-or-nothing for names: every blob is hashed into the store first (unnamed blobs are
invisible), and index.json gets the new names in one locked update at the very end.
Export writes the OCI layout tar `linuxkit cache import` reads: blobs/sha256/<hex> entries and an
index.json whose manifests carry the fully expanded name in io.containerd.image.name (and in
org.opencontainers.image.ref.name). The tar is deterministic: sorted entries, fixed mtime, root owner.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from lkit.core import buildtime
from lkit.core.files import COPY_BUFSIZE
from lkit.errors import ImageError
from lkit.images import refs
from lkit.images.oci import canonical_json, gzip_into_store
from lkit.images.store import (CONTAINERD_NAME, GZIP_MAGIC, LAYOUT_VERSION, OCI_CONFIG, OCI_INDEX,
                               OCI_LAYER_GZIP, OCI_MANIFEST, REF_NAME, ZSTD_MAGIC, Descriptor, Store,
                               content_media_type)

MTIME = buildtime.EPOCH


@dataclass(frozen=True)
class Imported:
    """One name an import added to the store."""

    ref: str
    descriptor: Descriptor


# -- sources: a tar (any compression tarfile reads) or an OCI layout directory ----------------


class _Source:
    """Read-only access to the members of an archive by normalised name."""

    def __init__(self, label: str) -> None:
        self.label = label

    def names(self) -> set[str]:
        raise NotImplementedError

    def open(self, name: str) -> IO[bytes]:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()

    def read_json(self, name: str) -> Any:
        try:
            return json.loads(self.read(name))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ImageError(f"{self.label}: {name} is not valid JSON: {exc}") from None


def _member_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def _link_target(name: str, target: str) -> str | None:
    """The member a relative symlink at `name` points to, or None when it leaves the archive."""
    if target.startswith("/"):
        return None
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    return None if resolved == ".." or resolved.startswith("../") else resolved


class _TarSource(_Source):
    """Regular members, plus links whose target is a regular member (old `docker save` shares layers
    that way); a link out of the archive is simply not a member."""

    def __init__(self, path: Path, stack: contextlib.ExitStack) -> None:
        super().__init__(str(path))
        try:
            self._tar = stack.enter_context(tarfile.open(path, "r:*"))
            members = self._tar.getmembers()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ImageError(f"{path} is not a readable tar archive: {exc}",
                             hint="give an OCI layout tar (linuxkit cache export), a `docker save` tar, "
                                  "or an OCI layout directory") from None
        self._members = {_member_name(m.name): m for m in members if m.isreg()}
        for m in members:
            if m.issym():
                target = _link_target(_member_name(m.name), m.linkname)
            elif m.islnk():
                target = _member_name(m.linkname)
            else:
                continue
            if target is not None and target in self._members:
                self._members[_member_name(m.name)] = self._members[target]

    def names(self) -> set[str]:
        return set(self._members)

    def open(self, name: str) -> IO[bytes]:
        f = self._tar.extractfile(self._members[name])
        assert f is not None
        return f


class _DirSource(_Source):
    """Regular files under the directory; a symlink counts only if it resolves to one inside it, so
    an archive directory cannot make lkit read host files into the store."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        root = path.resolve()
        self._files: dict[str, Path] = {}
        for dirpath, _dirs, files in os.walk(root):  # does not descend into symlinked directories
            for fname in files:
                full = Path(dirpath, fname)
                real = full.resolve()
                if real.is_relative_to(root) and real.is_file() and not real.is_symlink():
                    self._files[full.relative_to(root).as_posix()] = real

    def names(self) -> set[str]:
        return set(self._files)

    def open(self, name: str) -> IO[bytes]:
        fd = os.open(self._files[name], os.O_RDONLY | os.O_NOFOLLOW)
        return os.fdopen(fd, "rb")


# -- import ----------------------------------------------------------------------------------


def import_archive(store: Store, source: Path, *, name: str | None = None) -> list[Imported]:
    """Import every image in `source`; `name` names an archive holding a single unnamed image."""
    source = Path(source)
    if not source.exists():
        raise ImageError(f"{source} does not exist", hint="give the path of a tar or an OCI layout directory")
    with contextlib.ExitStack() as stack:
        src: _Source = _DirSource(source) if source.is_dir() else _TarSource(source, stack)
        names = src.names()
        if "index.json" in names and any(n.startswith("blobs/") for n in names):
            named = _import_oci(store, src, name)
        elif "manifest.json" in names:
            named = _import_docker_save(store, src, name)
        else:
            raise ImageError(f"{source} is neither an OCI image layout (index.json + blobs/) nor a "
                             "`docker save` archive (manifest.json)",
                             hint="export images with `lkit cache export`, `linuxkit cache export` or `docker save`")
    # per platform, as a build tags: an arm64-only image imported under a name that holds amd64 keeps
    # the amd64 one (the name becomes an index of both); an imported index replaces the name whole
    store.tag_platforms([(i.ref, i.descriptor) for i in named])
    return named


def _blob_name(digest: str) -> str:
    algo, hexpart = digest.split(":", 1)
    return f"blobs/{algo}/{hexpart}"


def _copy_blob(store: Store, src: _Source, desc: Descriptor, why: str) -> None:
    """Copy one blob into the store, verified against its descriptor's digest and size."""
    if store.has_blob(desc.digest):
        return
    member = _blob_name(desc.digest)
    if member not in src.names():
        raise ImageError(f"{src.label}: {why} names blob {desc.digest}, which the archive does not contain",
                         hint="the archive is incomplete; export it again")
    with src.open(member) as f:
        try:
            digest, size = store.put_blob(f, desc.digest)
        except ImageError as exc:
            raise ImageError(f"{src.label}: {member} is corrupt: {exc.message}") from None
    if size != desc.size:
        raise ImageError(f"{src.label}: blob {digest} is {size} bytes but {why} says {desc.size}")


def _import_tree(store: Store, src: _Source, desc: Descriptor, label: str) -> None:
    """Copy a manifest or index and everything it names (index children the archive lacks are skipped)."""
    _copy_blob(store, src, desc, label)
    data = store.read_json(desc.digest, "manifest")
    if "manifests" in data:
        children = [Descriptor.from_json(c, f"{src.label}: index {desc.digest}") for c in data.get("manifests") or []]
        present = [c for c in children if store.has_blob(c.digest) or _blob_name(c.digest) in src.names()]
        if not present:
            raise ImageError(f"{src.label}: index {desc.digest} of {label} names no manifest the archive contains")
        for child in present:
            _import_tree(store, src, child, label)
        return
    where = f"manifest {desc.digest} of {label}"
    _copy_blob(store, src, Descriptor.from_json(data.get("config"), where), where)
    for layer in data.get("layers") or []:
        _copy_blob(store, src, Descriptor.from_json(layer, where), where)


def _oci_name(desc: Descriptor, override: str | None, label: str) -> str:
    ann = desc.annotations or {}
    candidate = override or ann.get(CONTAINERD_NAME) or ann.get(REF_NAME)
    if not candidate or ("/" not in candidate and ":" not in candidate and override is None
                         and CONTAINERD_NAME not in ann):
        raise ImageError(f"{label}: manifest {desc.digest} in index.json has no image name "
                         f"(annotation {CONTAINERD_NAME} or a full {REF_NAME})",
                         hint="name it: lkit cache import FILE --name REF")
    return refs.normalise(candidate)


def _import_oci(store: Store, src: _Source, override: str | None) -> list[Imported]:
    index = src.read_json("index.json")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list) or not index["manifests"]:
        raise ImageError(f"{src.label}: index.json lists no manifests")
    descs = [Descriptor.from_json(d, f"{src.label}: index.json") for d in index["manifests"]]
    if override is not None and len(descs) != 1:
        raise ImageError(f"{src.label}: --name needs an archive with one image; it has {len(descs)}")
    out = []
    for desc in descs:
        name = _oci_name(desc, override, src.label)
        _import_tree(store, src, desc, name)
        media = content_media_type(store.read_json(desc.digest, "manifest"), desc.media_type)
        out.append(Imported(name, Descriptor(media, desc.digest, desc.size, platform=desc.platform)))
    return out


def _import_docker_save(store: Store, src: _Source, override: str | None) -> list[Imported]:
    """Convert `docker save` (manifest.json + config + layer tars) into OCI manifests in the store."""
    manifest = src.read_json("manifest.json")
    if not isinstance(manifest, list) or not manifest:
        raise ImageError(f"{src.label}: manifest.json is not a non-empty list of images")
    if override is not None and len(manifest) != 1:
        raise ImageError(f"{src.label}: --name needs an archive with one image; it has {len(manifest)}")
    out = []
    for i, entry in enumerate(manifest):
        where = f"{src.label}: manifest.json[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
                or not isinstance(entry.get("Layers"), list):
            raise ImageError(f"{where} needs Config (a file name) and Layers (a list)")
        tags = [override] if override else list(entry.get("RepoTags") or [])
        if not tags:
            raise ImageError(f"{where} has no RepoTags", hint="name it: lkit cache import FILE --name REF")
        config_bytes = _member_bytes(src, entry["Config"], where)
        config_digest, config_size = store.put_blob(config_bytes)
        try:
            config = json.loads(config_bytes)
            diff_ids = list(config["rootfs"]["diff_ids"])
        except (ValueError, KeyError, TypeError):
            raise ImageError(f"{where}: config {entry['Config']} has no rootfs.diff_ids") from None
        if len(diff_ids) != len(entry["Layers"]):
            raise ImageError(f"{where}: {len(entry['Layers'])} layers but the config lists {len(diff_ids)} diff_ids")
        layers = [_docker_layer(store, src, name, diff_id, where)
                  for name, diff_id in zip(entry["Layers"], diff_ids)]
        man_bytes = canonical_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                    "config": Descriptor(OCI_CONFIG, config_digest, config_size).to_json(),
                                    "layers": [d.to_json() for d in layers]})
        digest, size = store.put_blob(man_bytes)
        platform = {"os": config.get("os", "linux"), "architecture": config.get("architecture", "amd64")}
        if config.get("variant"):
            platform["variant"] = config["variant"]
        for tag in tags:
            out.append(Imported(refs.normalise(tag), Descriptor(OCI_MANIFEST, digest, size, platform=platform)))
    return out


def _member_bytes(src: _Source, name: Any, where: str) -> bytes:
    member = _member_name(str(name))
    if member not in src.names():
        raise ImageError(f"{where} names {name!r}, which the archive does not contain")
    return src.read(member)


def _docker_layer(store: Store, src: _Source, name: str, diff_id: str, where: str) -> Descriptor:
    """Store one docker-save layer as gzip; plain tars are gzipped deterministically, diff_id checked."""
    member = _member_name(str(name))
    if member not in src.names():
        raise ImageError(f"{where} names layer {name!r}, which the archive does not contain")
    with src.open(member) as f:
        head = f.read(4)
    if head[:2] == GZIP_MAGIC or head == ZSTD_MAGIC:
        with src.open(member) as f:
            digest, size = store.put_blob(f)
        media = OCI_LAYER_GZIP if head[:2] == GZIP_MAGIC else "application/vnd.oci.image.layer.v1.tar+zstd"
        desc = Descriptor(media, digest, size)
        store.uncompressed_layer(desc, diff_id)  # verifies diff_id (and caches the tar)
        return desc
    with src.open(member) as f:
        desc, actual = gzip_into_store(store, f)
    if actual != diff_id:
        raise ImageError(f"{where}: layer {name} hashes to {actual}, but the config says {diff_id}",
                         hint="the archive is corrupt; save it again")
    return desc


# -- export ----------------------------------------------------------------------------------


def _export_root(store: Store, ref: str, platform: str) -> tuple[str, Descriptor]:
    """The descriptor to export for `ref`: the whole index if every child is present, else one platform."""
    name = refs.normalise(ref)
    desc = store.lookup(name)
    if desc is None:
        image = store.resolve(name, platform)  # raises the usual "not in the store" error
        return name, Descriptor(OCI_MANIFEST, image.digest, store.blob_path(image.digest).stat().st_size)
    data = store.read_json(desc.digest, "manifest")
    if "manifests" in data:
        children = [Descriptor.from_json(c, f"index {desc.digest}") for c in data.get("manifests") or []]
        if not all(_complete(store, c) for c in children):
            image = store.resolve(name, platform)
            media = image.manifest.get("mediaType") or OCI_MANIFEST
            return name, Descriptor(media, image.digest, store.blob_path(image.digest).stat().st_size)
    else:
        store.resolve_descriptor(name, desc, platform=_platform_of(desc) or platform)  # validates presence
    return name, Descriptor(desc.media_type, desc.digest, desc.size, platform=desc.platform)


def _platform_of(desc: Descriptor) -> str | None:
    p = desc.platform or {}
    if p.get("os") and p.get("architecture"):
        return f"{p['os']}/{p['architecture']}" + (f"/{p['variant']}" if p.get("variant") else "")
    return None


def _complete(store: Store, desc: Descriptor) -> bool:
    if not store.has_blob(desc.digest):
        return False
    data = store.read_json(desc.digest, "manifest")
    if "manifests" in data:
        return all(_complete(store, Descriptor.from_json(c, desc.digest)) for c in data["manifests"])
    blobs = [data.get("config")] + list(data.get("layers") or [])
    return all(isinstance(b, dict) and store.has_blob(str(b.get("digest"))) for b in blobs)


def _blobs_of(store: Store, desc: Descriptor) -> Iterator[str]:
    yield desc.digest
    data = store.read_json(desc.digest, "manifest")
    if "manifests" in data:
        for c in data["manifests"]:
            yield from _blobs_of(store, Descriptor.from_json(c, desc.digest))
        return
    yield Descriptor.from_json(data.get("config"), desc.digest).digest
    for layer in data.get("layers") or []:
        yield Descriptor.from_json(layer, desc.digest).digest


def _tarinfo(name: str, size: int, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = MTIME, 0, 0, "", ""
    if directory:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    else:
        info.size, info.mode = size, 0o644
    return info


def export_archive(store: Store, images: Sequence[str], dest: Path, *, platform: str = "linux/amd64") -> Path:
    """Write the named images as one OCI layout tar (what `linuxkit cache import` reads), atomically."""
    if not images:
        raise ImageError("nothing to export: name at least one image", hint="see: lkit cache ls")
    roots = [_export_root(store, ref, platform) for ref in images]
    blobs = sorted({d for _, desc in roots for d in _blobs_of(store, desc)})
    for digest in blobs:
        if not store.has_blob(digest):
            raise ImageError(f"cannot export: blob {digest} is missing from the store {store.root}")
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        Descriptor(d.media_type, d.digest, d.size, {CONTAINERD_NAME: n, REF_NAME: n}, d.platform).to_json()
        for n, d in sorted(roots, key=lambda r: r[0])]}
    dest = Path(dest)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in (("oci-layout", canonical_json(LAYOUT_VERSION)),
                               ("index.json", canonical_json(index))):
                tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
            tar.addfile(_tarinfo("blobs", 0, True))
            tar.addfile(_tarinfo("blobs/sha256", 0, True))
            for digest in blobs:
                size = store.blob_path(digest).stat().st_size
                with store.open_blob(digest) as f:
                    tar.addfile(_tarinfo(_blob_name(digest), size), _Exact(f, size))
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return dest


class _Exact:
    """Reads the verified stream; draining it to EOF triggers the digest check of open_blob."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f, self._left = f, size

    def read(self, n: int = COPY_BUFSIZE) -> bytes:
        data = self._f.read(min(n, self._left) if n >= 0 else self._left)
        self._left -= len(data)
        if self._left == 0:
            self._f.read(1)  # EOF: verify
        return data
