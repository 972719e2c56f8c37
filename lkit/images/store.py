"""The image store: an OCI image layout that LinuxKit's `linuxkit cache` can read as its own.

Layout: oci-layout, index.json, blobs/sha256/<hex>. Names live in index.json as the annotation
org.opencontainers.image.ref.name holding the fully expanded reference (LinuxKit's convention).
Every blob is hashed before it becomes visible and re-verified when read, so a corrupt or truncated
file is an ImageError, never silently bad bytes. lkit's own scratch lives beside blobs/ (lkit-tmp/,
lkit-uncompressed/) where OCI tools ignore it. Index updates hold fcntl locks on <root>/.lock and on
index.json (the file `linuxkit cache` locks), and replace index.json atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from lkit.core import arch as arch_table
from lkit.core.files import COPY_BUFSIZE
from lkit.errors import ImageError
from lkit.images import refs

# Media types lkit writes and understands.
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
LOCK_FILE = ".lock"  # LinuxKit's cache lock: fcntl F_WRLCK over the whole of <cache>/.lock
GZIP_MAGIC = b"\x1f\x8b"
# fcntl locks belong to the process, not the thread: threads of one process (`lkit pkg build -j`)
# take this first, so two of them never rewrite index.json at once; re-entered by its holder.
_THREAD_LOCK = threading.RLock()
_HELD = threading.local()
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor (what points at a blob)."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] | None = None
    platform: dict | None = None

    def to_json(self) -> dict:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        if self.platform:
            out["platform"] = self.platform
        return out

    @classmethod
    def from_json(cls, data: Any, where: str) -> "Descriptor":
        """Validate a descriptor read from JSON; ImageError names the file holding it."""
        if not isinstance(data, dict):
            raise ImageError(f"{where}: a descriptor must be an object, got {type(data).__name__}")
        digest, size, media = data.get("digest"), data.get("size"), data.get("mediaType", "")
        if not isinstance(digest, str) or not refs.is_digest(digest):
            raise ImageError(f"{where}: descriptor digest {digest!r} is not sha256:<64 hex>")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ImageError(f"{where}: descriptor size {size!r} for {digest} is not a non-negative integer")
        if not isinstance(media, str):
            raise ImageError(f"{where}: descriptor mediaType {media!r} is not a string")
        annotations = data.get("annotations")
        platform = data.get("platform")
        return cls(media_type=media, digest=digest, size=size,
                   annotations=dict(annotations) if isinstance(annotations, dict) else None,
                   platform=dict(platform) if isinstance(platform, dict) else None)


@dataclass
class Image:
    """One resolved single-platform image: its manifest, config and layer descriptors."""

    ref: str
    digest: str
    manifest: dict
    config: dict
    layers: list[Descriptor] = field(default_factory=list)

    @property
    def labels(self) -> dict[str, str]:
        return dict((self.config.get("config") or {}).get("Labels") or {})

    @property
    def diff_ids(self) -> list[str]:
        return list((self.config.get("rootfs") or {}).get("diff_ids") or [])


def parse_platform(platform: str) -> dict[str, str]:
    """'linux/arm64/v8' -> {'os': 'linux', 'architecture': 'arm64', 'variant': 'v8'}."""
    parts = platform.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ImageError(f"platform {platform!r} is not OS/ARCH[/VARIANT]", hint="e.g. linux/amd64")
    out = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        out["variant"] = parts[2]
    return out


def platform_string(platform: dict | None) -> str:
    if not platform:
        return "unknown"
    text = f"{platform.get('os', '?')}/{platform.get('architecture', '?')}"
    return text + (f"/{platform['variant']}" if platform.get("variant") else "")


def _variant(platform: dict) -> str | None:
    """The variant, with OCI's normalisation: arm64 without one is arm64/v8 (what every arm64 image means)."""
    variant = platform.get("variant") or None
    if variant is None and platform.get("architecture") == "arm64":
        return "v8"
    return variant


def platform_matches(offered: dict | None, wanted: dict[str, str]) -> bool:
    """Does an image or index entry for `offered` serve `wanted`? A wanted platform without a variant
    takes any variant; arm64 entries with variant v8 and without one are the same platform."""
    if not offered:
        return False
    if offered.get("os") != wanted["os"] or offered.get("architecture") != wanted["architecture"]:
        return False
    return "variant" not in wanted or _variant(offered) == _variant(wanted)


def same_platform(a: dict | None, b: dict | None) -> bool:
    """Two entries for one platform (an index holds at most one of them)."""
    if not a or not b:
        return False
    return (a.get("os"), a.get("architecture"), _variant(a)) == (b.get("os"), b.get("architecture"), _variant(b))


class PlatformMismatch(ImageError):
    """A single-platform image resolved for another platform (an amd64-only image in an arm64 build)."""


def _hex(digest: str) -> str:
    if not refs.is_digest(digest):
        raise ImageError(f"{digest!r} is not a sha256 digest (sha256:<64 lower-case hex>)")
    return digest.split(":", 1)[1]


class _VerifyingReader(io.RawIOBase):
    """Streams a blob and raises ImageError at EOF if its bytes do not hash to the digest."""

    def __init__(self, path: Path, digest: str) -> None:
        super().__init__()
        self._file: io.BufferedReader = open(path, "rb")
        self._digest = digest
        self._hash = hashlib.sha256()
        self._path = path
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._file.readinto(buffer)
        if n:
            self._hash.update(memoryview(buffer)[:n])
        elif not self._checked:
            self._checked = True
            actual = "sha256:" + self._hash.hexdigest()
            if actual != self._digest:
                raise ImageError(f"blob {self._path} is corrupt: its content hashes to {actual}, "
                                 f"not {self._digest}",
                                 hint="remove the image (lkit cache rm REF) and build, pull or import it again")
        return n or 0

    def close(self) -> None:
        self._file.close()
        super().close()


class BlobWriter:
    """Writes one blob to a temp file inside the store; `commit()` verifies and publishes it."""

    def __init__(self, store: "Store", expected: str | None) -> None:
        self._store = store
        self._expected = expected
        fd, name = tempfile.mkstemp(prefix="blob-", dir=store.tmp_dir)
        self._tmp = Path(name)
        self._file: IO[bytes] = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self.result: tuple[str, int] | None = None

    def write(self, data: bytes) -> int:
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def commit(self) -> tuple[str, int]:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        digest = "sha256:" + self._hash.hexdigest()
        if self._expected is not None and digest != self._expected:
            self.discard()
            raise ImageError(f"content does not match its digest: expected {self._expected}, "
                             f"got {digest} ({self.size} bytes)",
                             hint="the source is corrupt or truncated; fetch or rebuild it")
        os.chmod(self._tmp, 0o644)
        os.replace(self._tmp, self._store.blob_path(digest))
        self.result = (digest, self.size)
        return self.result

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()


class Store:
    """An OCI image layout directory holding lkit's (and LinuxKit-compatible) images."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs" / "sha256"
        self.tmp_dir = self.root / "lkit-tmp"
        self.uncompressed_dir = self.root / "lkit-uncompressed" / "sha256"
        try:
            for d in (self.blobs_dir, self.tmp_dir, self.uncompressed_dir):
                d.mkdir(parents=True, exist_ok=True)
            if not (self.root / "oci-layout").exists():
                self._write_json_atomic(self.root / "oci-layout", LAYOUT_VERSION)
            if not (self.root / "index.json").exists():
                with self.lock():
                    if not (self.root / "index.json").exists():
                        self._write_json_atomic(self.root / "index.json", _empty_index())
        except OSError as exc:
            raise ImageError(f"cannot use {self.root} as the image store: {exc.strerror or exc}",
                             hint="give a writable directory (--lkit-store / LKIT_STORE)") from None

    @classmethod
    def default(cls) -> "Store":
        """LKIT_STORE (set from --lkit-store), else $XDG_CACHE_HOME/lkit/store (~/.cache/lkit/store)."""
        env = os.environ.get("LKIT_STORE")
        if env:
            return cls(Path(env).expanduser())
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return cls(Path(cache) / "lkit" / "store")

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # -- blobs -------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs_dir / _hex(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    @contextlib.contextmanager
    def blob_writer(self, digest: str | None = None) -> Iterator[BlobWriter]:
        """Write a blob in pieces; it becomes visible only if the body completes and the hash matches."""
        if digest is not None:
            _hex(digest)
        writer = BlobWriter(self, digest)
        try:
            yield writer
        except BaseException:
            writer.discard()
            raise
        writer.commit()

    def put_blob(self, data: bytes | Path | IO[bytes], digest: str | None = None) -> tuple[str, int]:
        """Store bytes, a file or a stream; verified against `digest` if given; a present blob is reused."""
        if digest is not None and self.has_blob(digest):
            if isinstance(data, (bytes, bytearray)) and "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                raise ImageError(f"content does not match its digest: expected {digest}")
            return digest, self.blob_path(digest).stat().st_size
        with contextlib.ExitStack() as stack:
            if isinstance(data, (bytes, bytearray)):
                source: IO[bytes] = io.BytesIO(bytes(data))
            elif isinstance(data, Path):
                source = stack.enter_context(open(data, "rb"))
            else:
                source = data
            writer = stack.enter_context(self.blob_writer(digest))
            while chunk := source.read(COPY_BUFSIZE):
                writer.write(chunk)
        assert writer.result is not None
        return writer.result

    def read_blob(self, digest: str) -> bytes:
        """A small blob (JSON), verified; ImageError if missing or corrupt."""
        with self.open_blob(digest) as f:
            return f.read()

    def open_blob(self, digest: str) -> BinaryIO:
        """A streaming reader that raises ImageError at EOF if the content does not match."""
        path = self.blob_path(digest)
        if not path.is_file():
            raise ImageError(f"blob {digest} is missing from the store {self.root}",
                             hint="the image is incomplete; remove it (lkit cache rm REF) and build, "
                                  "pull or import it again")
        return io.BufferedReader(_VerifyingReader(path, digest), COPY_BUFSIZE)

    def read_json(self, digest: str, what: str) -> dict:
        try:
            data = json.loads(self.read_blob(digest))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ImageError(f"{what} {digest} in {self.root} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ImageError(f"{what} {digest} in {self.root} is not a JSON object")
        return data

    # -- index -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive inter-process lock for index updates.

        Two fcntl write locks (F_SETLKW over the whole file, what LinuxKit's util.Lock takes):
        <root>/.lock, stable across index rewrites, orders lkit processes; then index.json itself,
        which is the file `linuxkit cache` locks before it edits the index, so neither tool
        rewrites the index while the other holds it.
        """
        with _THREAD_LOCK, contextlib.ExitStack() as stack:
            if getattr(_HELD, "depth", 0):  # this thread holds it already (tag_platform -> tag)
                _HELD.depth += 1
                stack.callback(setattr, _HELD, "depth", _HELD.depth - 1)
                yield
                return
            _HELD.depth = 1
            stack.callback(setattr, _HELD, "depth", 0)
            lock_file = stack.enter_context(open(self.root / LOCK_FILE, "a+b"))
            fcntl.lockf(lock_file.fileno(), fcntl.LOCK_EX)
            stack.callback(fcntl.lockf, lock_file.fileno(), fcntl.LOCK_UN)
            try:
                index_fd = os.open(self.root / "index.json", os.O_RDWR)
            except FileNotFoundError:
                index_fd = -1
            if index_fd >= 0:
                stack.callback(os.close, index_fd)
                fcntl.lockf(index_fd, fcntl.LOCK_EX)
                stack.callback(fcntl.lockf, index_fd, fcntl.LOCK_UN)
            yield

    def _read_index(self) -> dict:
        path = self.root / "index.json"
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return _empty_index()
        except ValueError as exc:
            raise ImageError(f"{path} is not valid JSON: {exc}",
                             hint=f"restore it or remove the store {self.root} and rebuild") from None
        if not isinstance(data, dict) or not isinstance(data.get("manifests", []), list):
            raise ImageError(f"{path} is not an OCI image index (no 'manifests' list)")
        data.setdefault("manifests", [])
        return data

    def _write_json_atomic(self, path: Path, data: dict) -> None:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(json.dumps(data, indent=2).encode() + b"\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(name, 0o644)
            os.replace(name, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    def _entries(self) -> list[Descriptor]:
        where = str(self.root / "index.json")
        return [Descriptor.from_json(d, where) for d in self._read_index()["manifests"]]

    def tag(self, ref: str, manifest: Descriptor) -> None:
        """Name `manifest` (an image manifest or index) as `ref`, replacing any old entry; atomic."""
        self.tag_many([(ref, manifest)])

    def tag_many(self, entries: list[tuple[str, Descriptor]]) -> None:
        """Several names in one index update: an import becomes visible all at once."""
        named = [(refs.normalise(r), d) for r, d in entries]
        for _, desc in named:
            if not self.has_blob(desc.digest):
                raise ImageError(f"cannot tag {desc.digest}: the blob is not in the store {self.root}")
        with self.lock():
            index = self._read_index()
            names = {n for n, _ in named}
            kept = [d for d in index["manifests"]
                    if not (isinstance(d, dict) and (d.get("annotations") or {}).get(REF_NAME) in names)]
            for name, desc in named:
                annotations = dict(desc.annotations or {})
                annotations[REF_NAME] = name
                kept.append(Descriptor(desc.media_type, desc.digest, desc.size, annotations,
                                       desc.platform).to_json())
            index["manifests"] = sorted(kept, key=lambda d: ((d.get("annotations") or {}).get(REF_NAME, ""),
                                                             d.get("digest", "")))
            self._write_json_atomic(self.root / "index.json", index)

    def tag_platform(self, ref: str, manifest: Descriptor) -> Descriptor:
        """Name a single-platform `manifest` as `ref` for its platform, keeping the name's other platforms.

        The first platform is tagged as the plain manifest (what a one-architecture store always held);
        a second one turns the name into an OCI image index of both. The index's bytes depend only on
        its manifests (sorted by platform, no annotations), so building amd64 then arm64 or the
        reverse gives the same index, and resolving it for linux/amd64 gives the same manifest digest
        as the amd64-only build. A platform already there is replaced. Returns what `ref` now names.
        """
        return self.tag_platforms([(ref, manifest)])[0]

    def tag_platforms(self, entries: list[tuple[str, Descriptor]]) -> list[Descriptor]:
        """tag_platform for several names in one index update (an import becomes visible at once).

        An entry that is itself an index replaces the name whole (it says which platforms it has);
        a single-platform manifest is merged as tag_platform says. Returns each entry's new root.
        """
        with self.lock():
            pending: dict[str, Descriptor | list[Descriptor]] = {}
            for ref, desc in entries:
                name = refs.normalise(ref)
                data = self.read_json(desc.digest, "manifest")
                if "manifests" in data:
                    pending[name] = Descriptor(content_media_type(data, desc.media_type), desc.digest, desc.size)
                    continue
                platform = desc.platform or self.manifest_platform(desc.digest)
                new = Descriptor(content_media_type(data, desc.media_type or OCI_MANIFEST), desc.digest, desc.size,
                                 platform=platform)
                before = pending.get(name)
                current = before if isinstance(before, list) else (
                    self._entries_of(before) if before is not None else self._platform_entries(name))
                pending[name] = [c for c in current if not same_platform(c.platform, platform)] + [new]
            roots = {name: value if isinstance(value, Descriptor) else self._root_for(value)
                     for name, value in pending.items()}
            self.tag_many(list(roots.items()))
        return [roots[refs.normalise(ref)] for ref, _ in entries]

    def _root_for(self, children: list[Descriptor]) -> Descriptor:
        """One platform: its manifest; several: a deterministic index of them (stored)."""
        if len(children) == 1:
            return children[0]
        ordered = sorted(children, key=lambda c: platform_string(c.platform))
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
                 "manifests": [Descriptor(c.media_type, c.digest, c.size, platform=c.platform).to_json()
                               for c in ordered]}
        digest, size = self.put_blob(json.dumps(index, sort_keys=True, separators=(",", ":")).encode())
        return Descriptor(OCI_INDEX, digest, size)

    def _entries_of(self, index: Descriptor) -> list[Descriptor]:
        data = self.read_json(index.digest, "manifest")
        children = [Descriptor.from_json(c, f"index {index.digest}") for c in data.get("manifests") or []]
        return [Descriptor(c.media_type, c.digest, c.size, platform=c.platform) for c in children if c.platform]

    def _platform_entries(self, name: str) -> list[Descriptor]:
        """What `name` holds now, one descriptor (with its platform) per platform; unreadable ones left out."""
        current = self.lookup(name)
        if current is None:
            return []
        try:
            data = self.read_json(current.digest, "manifest")
            if "manifests" not in data:
                return [Descriptor(current.media_type or OCI_MANIFEST, current.digest, current.size,
                                   platform=self.manifest_platform(current.digest))]
            return self._entries_of(current)
        except ImageError:
            return []  # a broken old entry is replaced, not carried along

    def manifest_platform(self, digest: str) -> dict[str, str]:
        """The platform a single-platform manifest's config declares (os, architecture, variant)."""
        data = self.read_json(digest, "manifest")
        config = self.read_json(Descriptor.from_json(data.get("config"), f"manifest {digest}").digest, "config")
        out = {"architecture": str(config.get("architecture") or "unknown"), "os": str(config.get("os") or "unknown")}
        if config.get("variant"):
            out["variant"] = str(config["variant"])
        return out

    def platforms(self, desc: Descriptor) -> list[str]:
        """The platforms a stored entry serves ('linux/amd64', 'linux/arm64/v8'), for listings."""
        try:
            data = self.read_json(desc.digest, "manifest")
            if "manifests" in data:
                return [platform_string(c.get("platform")) for c in data.get("manifests") or []
                        if isinstance(c, dict) and (c.get("platform") or {}).get("os") != "unknown"]
            return [platform_string(desc.platform or self.manifest_platform(desc.digest))]
        except ImageError:
            return [platform_string(desc.platform)] if desc.platform else []

    def list_images(self) -> list[tuple[str, Descriptor]]:
        out = [((d.annotations or {}).get(REF_NAME, ""), d) for d in self._entries()]
        return sorted((n, d) for n, d in out if n)

    def lookup(self, ref: str) -> Descriptor | None:
        """The index entry named `ref` (normalised), or None."""
        name = refs.normalise(ref)
        for entry_name, desc in self.list_images():
            if entry_name == name:
                return desc
        return None

    def remove(self, ref: str) -> None:
        """Drop the name from index.json (blobs stay until a gc; other names may share them)."""
        name = refs.normalise(ref)
        with self.lock():
            index = self._read_index()
            kept = [d for d in index["manifests"]
                    if not (isinstance(d, dict) and (d.get("annotations") or {}).get(REF_NAME) == name)]
            if len(kept) == len(index["manifests"]):
                raise ImageError(f"image {name} is not in the store {self.root}", hint="see: lkit cache ls")
            index["manifests"] = kept
            self._write_json_atomic(self.root / "index.json", index)

    # -- resolution --------------------------------------------------------------------------

    def resolve(self, ref: str, platform: str = "linux/amd64") -> Image:
        """Follow index.json -> (image index -> platform) -> manifest -> config."""
        parsed = refs.Reference.parse(ref)
        name = str(parsed)
        wanted = parse_platform(platform)
        desc = self.lookup(name)
        if desc is None and parsed.digest and self.has_blob(parsed.digest):
            desc = self._descriptor_for_blob(parsed.digest)
        if desc is None:
            raise ImageError(f"image {name} is not in the store {self.root}", hint=_missing_hint(parsed))
        if parsed.digest and desc.digest != parsed.digest:
            raise ImageError(f"image {name}: the store holds {desc.digest}, not the pinned {parsed.digest}",
                             hint=_missing_hint(parsed))
        return self._resolve_descriptor(name, desc, wanted, platform)

    def resolve_descriptor(self, name: str, desc: Descriptor, platform: str = "linux/amd64") -> Image:
        """Resolve an arbitrary manifest/index descriptor (e.g. from an archive) to one image."""
        return self._resolve_descriptor(name, desc, parse_platform(platform), platform)

    def _descriptor_for_blob(self, digest: str) -> Descriptor:
        data = self.read_json(digest, "manifest")
        media = data.get("mediaType") or (OCI_INDEX if "manifests" in data else OCI_MANIFEST)
        return Descriptor(media, digest, self.blob_path(digest).stat().st_size)

    def _resolve_descriptor(self, name: str, desc: Descriptor, wanted: dict[str, str], platform: str) -> Image:
        data = self.read_json(desc.digest, "manifest")
        # The content decides, not the descriptor: `linuxkit cache export` labels plain manifests
        # with the index media type.
        media = data.get("mediaType") or desc.media_type or ""
        if "manifests" in data:
            children = [Descriptor.from_json(d, f"index {desc.digest}") for d in data.get("manifests") or []]
            matches = [c for c in children if platform_matches(c.platform, wanted)]
            if not matches:
                offered = sorted({platform_string(c.platform) for c in children
                                  if c.platform and c.platform.get("os") != "unknown"})
                raise PlatformMismatch(f"image {name} has no {platform} variant; it offers: "
                                       f"{', '.join(offered) or 'none'}", hint=_platform_hint(name, platform))
            return self._resolve_descriptor(name, matches[0], wanted, platform)
        if media not in MANIFEST_TYPES and "config" not in data:
            raise ImageError(f"image {name}: {desc.digest} has unsupported media type {media!r}")
        where = f"manifest {desc.digest} of {name}"
        config_desc = Descriptor.from_json(data.get("config"), where)
        layers = [Descriptor.from_json(d, where) for d in data.get("layers") or []]
        for layer in layers:
            if not self.has_blob(layer.digest):
                raise ImageError(f"image {name}: layer {layer.digest} named by {where} is missing from "
                                 f"the store {self.root}",
                                 hint="the image is incomplete; remove it (lkit cache rm) and build, "
                                      "pull or import it again")
        config = self.read_json(config_desc.digest, f"config of {name}")
        if config.get("architecture"):  # a config without one (hand-made test images) serves any platform
            have = {"os": str(config.get("os") or "linux"), "architecture": str(config["architecture"])}
            if config.get("variant"):
                have["variant"] = str(config["variant"])
            if not platform_matches(have, wanted):
                raise PlatformMismatch(
                    f"image {name} is built for {_arch_words(have)} only, not for {_arch_words(wanted)}",
                    hint=_platform_hint(name, platform))
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(layers):
            raise ImageError(f"image {name}: config lists {len(diff_ids)} diff_ids but the manifest has "
                             f"{len(layers)} layers")
        return Image(ref=name, digest=desc.digest, manifest=data, config=config, layers=layers)

    # -- uncompressed layers -----------------------------------------------------------------

    def uncompress_layers(self, images: Iterable[Image], workers: int | None = None) -> None:
        """Uncompress, several at a time, the layers of `images` not uncompressed yet: inflate, sha256
        and the writes release the GIL, so a cold build uses every core (largest layers first). A
        layer that fails here is left to uncompressed_layer, which says what is wrong and where."""
        todo = {diff_id: layer for image in images for layer, diff_id in zip(image.layers, image.diff_ids)
                if not (self.uncompressed_dir / _hex(diff_id)).is_file()}
        if len(todo) < 2:
            return
        largest_first = sorted(todo.items(), key=lambda item: -item[1].size)
        with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
            futures = [pool.submit(self.uncompressed_layer, layer, diff_id) for diff_id, layer in largest_first]
            try:
                for future in futures:
                    with contextlib.suppress(ImageError, OSError):
                        future.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    def uncompressed_layer(self, layer: Descriptor, diff_id: str) -> Path:
        """An uncompressed copy of `layer`, verified once against `diff_id`, reused afterwards."""
        target = self.uncompressed_dir / _hex(diff_id)
        if target.is_file():
            return target
        fd, name = tempfile.mkstemp(prefix="layer-", dir=self.tmp_dir)
        tmp = Path(name)
        try:
            digest = hashlib.sha256()
            with contextlib.ExitStack() as stack:
                out = stack.enter_context(os.fdopen(fd, "wb"))
                src = stack.enter_context(self.open_blob(layer.digest))
                for chunk in _decompress(src, layer):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            actual = "sha256:" + digest.hexdigest()
            if actual != diff_id:
                raise ImageError(f"layer {layer.digest} uncompresses to {actual}, not the diff_id {diff_id} "
                                 "its image config promises",
                                 hint="the image is corrupt; remove it (lkit cache rm) and build or pull it again")
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return target


def _decompress(src: BinaryIO, layer: Descriptor) -> Iterator[bytes]:
    """Yield the uncompressed bytes of a gzip, zstd or plain layer (sniffed from its magic)."""
    head = src.peek(4)[:4] if hasattr(src, "peek") else b""
    if head[:2] == GZIP_MAGIC:
        decomp = zlib.decompressobj(wbits=47)
        while chunk := src.read(COPY_BUFSIZE):
            while chunk:
                yield decomp.decompress(chunk)
                if decomp.eof:  # concatenated gzip members
                    chunk = decomp.unused_data
                    decomp = zlib.decompressobj(wbits=47)
                else:
                    chunk = b""
        try:
            yield decomp.flush()
        except zlib.error as exc:
            raise ImageError(f"layer {layer.digest}: broken gzip stream: {exc}") from None
    elif head == ZSTD_MAGIC:
        yield from _zstd_decompress(src, layer)
    else:
        while chunk := src.read(COPY_BUFSIZE):
            yield chunk


def _zstd_decompress(src: BinaryIO, layer: Descriptor) -> Iterator[bytes]:
    """zstd has no stdlib module in 3.11: stream through the `zstd` tool (argument list, no shell)."""
    exe = shutil.which("zstd")
    if exe is None:
        from lkit.errors import InfraError
        raise InfraError(f"layer {layer.digest} is zstd-compressed and the zstd tool is missing",
                         hint="apt-get install zstd")
    with tempfile.TemporaryFile() as raw:
        shutil.copyfileobj(src, raw, COPY_BUFSIZE)  # reading to EOF verifies the blob digest
        raw.seek(0)
        proc = subprocess.Popen([exe, "-d", "-c", "-q"], stdin=raw, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            while chunk := proc.stdout.read(COPY_BUFSIZE):
                yield chunk
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        if proc.returncode != 0:
            raise ImageError(f"layer {layer.digest}: broken zstd stream: {err.decode(errors='replace').strip()}")


def content_media_type(data: dict, fallback: str = "") -> str:
    """The media type a manifest/index JSON really is (its own field, else its shape)."""
    if data.get("mediaType"):
        return str(data["mediaType"])
    if "manifests" in data:
        return OCI_INDEX
    return OCI_MANIFEST if "config" in data else fallback


def _empty_index() -> dict:
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


def _arch_words(platform: dict) -> str:
    """'arm64 (linux/arm64/v8)': the architecture first, as a person says it."""
    return f"{platform.get('architecture', '?')} ({platform_string(platform)})"


def _platform_hint(name: str, platform: str) -> str:
    parsed = refs.Reference.parse(name)
    arch = arch_table.of_platform(platform)
    if arch is not None and parsed.domain == refs.DEFAULT_DOMAIN and parsed.path.startswith("lkit/"):
        return (f"build it for {arch.name}: lkit pkg build --arch {arch.name} "
                f"fixtures/pkgs/{parsed.path.split('/', 1)[1]}")
    return (f"pull it for {platform} (lkit cache pull --platform {platform} {name}), or import an archive "
            f"that has it (lkit cache import FILE)")


def _missing_hint(parsed: refs.Reference) -> str:
    if parsed.domain == refs.DEFAULT_DOMAIN and parsed.path.startswith("lkit/"):
        return f"build it: lkit pkg build fixtures/pkgs/{parsed.path.split('/', 1)[1]}"
    return "import it: lkit cache import FILE (or pull it from a registry)"

