"""The embedded builder: Spec + image store -> output files, in process, deterministic, cached.

A build is keyed by everything that can change its bytes (the merged spec, the digest of every image
it uses, the content of every `files` source, lkit's version). Finished outputs carry a stamp in
`<outdir>/.lkit/`; when the key and the files on disk match it, nothing is rebuilt. The kernel and
initrd of a key are kept in the build cache, so asking for another format later does not reassemble.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import BinaryIO
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from lkit.core.files import sha256_file, write_text
from lkit.core.secureboot import KeySet
import lkit
from lkit.build import gotar, manifest as build_manifest
from lkit.build.tree_archive import write_initrd, write_tar
from lkit.build.outputs.base import FORMAT_NAMES, BootFiles, get_format
from lkit.core import arch as arch_table
from lkit.core.arch import Arch
from lkit.build.rootfs import RootfsAssembler, Assembly, allowed_source

from lkit.errors import BuildError, ImageError, InfraError, LkitError
from lkit.images import refs, registry
from lkit.images.store import Image, Store
from lkit.spec.model import Spec

# The initrd leaves out everything under boot/ (the kernel, its cmdline and ucode ride beside it),
# keeping the empty boot/ itself, as LinuxKit's tar-to-initrd conversion does.
BOOT_DIR = "boot"


def initrd_exclude(assembly: Assembly) -> frozenset[str]:
    boot = assembly.tree.lookup(BOOT_DIR)
    if boot is None or boot.kind != "dir":
        return frozenset()
    return frozenset(f"{BOOT_DIR}/{name}" for name in boot.children)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(os.environ.get("LKIT_BUILD_CACHE", Path(base) / "lkit" / "build"))


@dataclass
class Artifact:
    path: Path
    size: int
    sha256: str


@dataclass
class BuiltImage:
    """What a build produced, per format, with the figures reports need."""

    name: str
    outdir: Path
    key: str
    artifacts: dict[str, list[Artifact]] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)   # reference -> manifest digest
    seconds: float = 0.0
    reused: list[str] = field(default_factory=list)        # formats taken from an earlier identical build
    manifest: Path | None = None                           # <outdir>/.lkit/<name>.manifest.json

    def files(self, fmt: str) -> list[Path]:
        return [a.path for a in self.artifacts[fmt]]

    def total_size(self, fmt: str) -> int:
        return sum(a.size for a in self.artifacts[fmt])


def _code_digest() -> str:
    """Digest of lkit's own build code: a changed builder must not reuse an old build."""
    root = Path(lkit.__file__).parent
    h = hashlib.sha256()
    for sub in ("build", "spec", "images"):
        for path in sorted((root / sub).rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _where_of(spec: Spec, ref: str) -> str | None:
    """The spec line that names an image, for errors about that image."""
    if spec.kernel is not None and spec.kernel.image == ref and spec.kernel.where:
        return f"{spec.kernel.where}: kernel.image"
    if ref in spec.init:
        return f"{spec.sources[0]}: init {ref}" if spec.sources else None
    for section, _, entry in spec.entries():
        if entry.image == ref:
            return f"{entry.where}: {section} {entry.name}"
    return None


def build_key(spec: Spec, resolve: Callable[[str], Image], *, sbom: bool = True,
              arch: Arch = arch_table.DEFAULT) -> tuple[str, dict[str, str]]:
    """Hash of everything the outputs depend on; also returns the resolved image digests."""
    digests = {}
    for ref in spec.images():
        try:
            digests[ref] = resolve(ref).digest
        except (ImageError, InfraError) as exc:  # missing, unsafe, or its registry unreachable
            name = refs.normalise(ref)
            message = exc.message if name in exc.message else f"image {name}: {exc.message}"
            raise type(exc)(message, where=_where_of(spec, ref) or exc.where, hint=exc.hint) from None
    sources = {}
    for entry in spec.files:
        if entry.source is not None:
            path = allowed_source(entry, spec)
            sources[entry.path] = sha256_file(path) if path else None
    material = {"lkit": lkit.__version__, "code": _code_digest(), "spec": spec.to_dict(), "images": digests,
                "sources": sources, "sbom": sbom}
    if arch != arch_table.DEFAULT:  # amd64 keys (and so amd64 caches) stay what they were before arm64
        material["arch"] = arch.name
    blob = json.dumps(material, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest(), digests


class _Stamp:
    """The record of a finished build in <outdir>/.lkit/<name>.json."""

    def __init__(self, outdir: Path, name: str) -> None:
        self.path = outdir / ".lkit" / f"{name}.json"

    def load(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def save(self, data: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        try:
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)


def _still_valid(record: list[dict], outdir: Path) -> list[Artifact] | None:
    out = []
    for item in record:
        path = outdir / item["name"]
        try:
            st = path.stat()
        except OSError:
            return None
        if st.st_size != item["size"] or st.st_mtime_ns != item["mtime_ns"]:
            return None
        out.append(Artifact(path, item["size"], item["sha256"]))
    return out


class _BootFilesMaker:
    """Assembles the root once per key, on demand, and keeps kernel + initrd in the build cache."""

    def __init__(self, spec: Spec, store: Store, resolve: Callable[[str], Image], key: str, cache_dir: Path,
                 workdir: Path, *, sbom: bool = True, arch: Arch = arch_table.DEFAULT) -> None:
        self.spec, self.store, self.resolve, self.key, self.workdir = spec, store, resolve, key, workdir
        self.arch = arch
        self.cached = cache_dir / key
        self.sbom = sbom
        self._assembly: Assembly | None = None

    def assembly(self) -> Assembly:
        if self._assembly is None:
            self._assembly = RootfsAssembler(self.spec, self.store, resolve=self.resolve, with_sbom=self.sbom).assemble()
        return self._assembly

    def manifest(self) -> build_manifest.BuildManifest:
        """What the outputs hold, file by file (lkit.build.manifest), without the formats; kept in
        the build cache beside the key's kernel and initrd, so a cached build does not reassemble."""
        cached = self.cached.with_name(f"{self.key}.manifest.json")
        if self._assembly is None and cached.exists():
            try:
                return build_manifest.BuildManifest.load(cached)
            except LkitError:
                pass  # damaged: made again below
        made = build_manifest.manifest_of(self.spec, self.assembly(), self.resolve, self.key)
        made.save(cached)
        return made

    def root_only(self) -> BootFiles:
        """For formats that need no kernel (tar): no kernel or initrd is made."""
        missing = self.workdir / "no-kernel"
        return BootFiles(name=self.spec.name, kernel=missing, initrd=missing, cmdline="",
                         rootfs_tar=self.rootfs_tar, linuxkit_tar=self.linuxkit_tar, workdir=self.workdir,
                         arch=self.arch)

    def boot_files(self) -> BootFiles:
        kernel, initrd, cmdline = self.cached / "kernel", self.cached / "initrd.img", self.cached / "cmdline"
        if not (kernel.exists() and initrd.exists() and cmdline.exists()):
            self._write_boot_files()
        return BootFiles(name=self.spec.name, kernel=kernel, initrd=initrd, cmdline=cmdline.read_text(),
                         rootfs_tar=self.rootfs_tar, linuxkit_tar=self.linuxkit_tar, workdir=self.workdir,
                         arch=self.arch)

    def _write_boot_files(self) -> None:
        assembly = self.assembly()
        if assembly.kernel is None:
            raise BuildError("this format needs a kernel, and the spec has no `kernel:` section",
                             where=str(self.spec.sources[0]) if self.spec.sources else None)
        tmp = Path(tempfile.mkdtemp(prefix=f"{self.key[:12]}.", dir=self.cached.parent))
        try:
            with open(tmp / "kernel", "wb") as f:
                for chunk in assembly.kernel.kernel.chunks():
                    f.write(chunk)
            prefix = b"".join(assembly.kernel.ucode.chunks()) if assembly.kernel.ucode else b""
            with open(tmp / "initrd.img", "wb") as f:
                write_initrd(assembly.tree, f, exclude=initrd_exclude(assembly), prefix=prefix)
            (tmp / "cmdline").write_text(assembly.cmdline)
            try:
                os.replace(tmp, self.cached)
            except OSError:  # another process finished the same key first: theirs is identical
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def rootfs_tar(self) -> Path:
        """The whole root as a tar of its final state: one entry per path (for mksquashfs and tools)."""
        return self._tar("rootfs.tar", lambda f: write_tar(self.assembly().tree, f))

    def linuxkit_tar(self) -> Path:
        """LinuxKit's `tar` output: its build stream, byte for byte (lkit.build.gotar)."""
        return self._tar("linuxkit.tar", lambda f: gotar.write(self.assembly().stream, f))

    def _tar(self, name: str, writer: Callable[[BinaryIO], None]) -> Path:
        path = self.workdir / name
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                writer(f)
            os.replace(tmp, path)
        return path


def _manifest_current(recorded: object, path: Path, formats: dict[str, list[dict]]) -> bool:
    """Whether the manifest the stamp recorded is still there, for the same formats."""
    if not isinstance(recorded, dict) or recorded.get("formats") != sorted(formats):
        return False
    try:
        return path.stat().st_size == recorded.get("size")
    except OSError:
        return False


def _write_manifest(maker: _BootFilesMaker, outdir: Path, formats: dict[str, list[dict]]) -> Path:
    """<outdir>/.lkit/<name>.manifest.json: beside the outputs, never inside one (they stay LinuxKit's
    bytes); rewritten only when its content changes."""
    path = build_manifest.manifest_path(outdir, maker.spec.name)
    made = build_manifest.with_formats(maker.manifest(), {
        fmt: [(a["name"], a["size"], a["sha256"]) for a in arts] for fmt, arts in formats.items()})
    text = made.dumps()
    try:
        if path.read_text(encoding="utf-8") == text:
            return path
    except (OSError, UnicodeDecodeError):
        pass
    write_text(path, text)
    return path


# Formats whose EFI binary lkit can sign (a UKI as EFI/BOOT/BOOTX64.EFI). iso-efi-initrd is not among
# them: its systemd-boot would also need the kernel it loads signed.
SIGNABLE = ("iso-efi", "raw-efi", "qcow2-efi")


def build(spec: Spec, formats: Sequence[str], outdir: Path, *, store: Store | None = None,
          cache_dir: Path | None = None, use_cache: bool = True, pull: bool = False, offline: bool = False,
          insecure: bool = False, sbom: bool = True, keys: KeySet | None = None,
          arch: Arch = arch_table.DEFAULT) -> BuiltImage:
    """Build `formats` of `spec` into `outdir`; unchanged inputs are not rebuilt.

    Images are looked up as LinuxKit does: the local store first, then the registry (`pull` forces a
    fresh pull, `offline` never touches the network and names the missing image instead). `sbom`
    writes LinuxKit's sbom.spdx.json into the root (LinuxKit's default; its --no-sbom is sbom=False).
    A host failure while writing (disk full, read-only, permissions) is an InfraError naming the file;
    outputs only ever appear complete (written aside, then renamed), so none is left half-written.
    `keys` signs the EFI binary of each format (Secure Boot; SIGNABLE formats only) with its db key:
    other bytes than the unsigned build's, so give such a build its own `outdir`.
    `arch` picks each image's platform (an index resolves to it; a single-platform image of another
    architecture is refused by name) and the architecture the boot formats are written for.
    """
    if not spec.name or spec.name in (".", "..") or any(c in spec.name for c in "/\0"):
        raise BuildError(f"output name {spec.name!r} is not a plain file name",
                         hint="give --name (or the spec file) a name without '/' such as 'myimage'")
    for fmt in formats:
        why = arch.refuse_format(fmt)
        if why is not None and fmt in FORMAT_NAMES:
            raise BuildError(f"cannot build {fmt} for {arch.name}: {why}",
                             where=str(spec.sources[0]) if spec.sources else None,
                             hint=f"formats for {arch.name}: {', '.join(f for f in FORMAT_NAMES if f in arch.formats)}")
    unsignable = [f for f in formats if keys is not None and f not in SIGNABLE]
    if unsignable:
        raise BuildError(f"cannot sign format(s) {', '.join(unsignable)} for Secure Boot",
                         hint="formats lkit signs: " + ", ".join(SIGNABLE))
    try:
        return _build(spec, formats, outdir, store=store, cache_dir=cache_dir, use_cache=use_cache, pull=pull,
                      offline=offline, insecure=insecure, sbom=sbom, keys=keys, arch=arch)
    except OSError as exc:
        where = exc.filename or outdir
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        raise InfraError(f"cannot write the build of {spec.name}: {exc.strerror or exc} ({where})",
                         hint="free some space or choose another --dir / LKIT_BUILD_CACHE" if full else
                         "--dir and LKIT_BUILD_CACHE must be writable folders") from None


def _build(spec: Spec, formats: Sequence[str], outdir: Path, *, store: Store | None,
           cache_dir: Path | None, use_cache: bool, pull: bool, offline: bool, insecure: bool,
           sbom: bool, keys: KeySet | None = None, arch: Arch = arch_table.DEFAULT) -> BuiltImage:
    started = time.monotonic()
    store = store or Store.default()
    resolved: dict[str, Image] = {}

    def resolve(ref: str) -> Image:
        if ref not in resolved:
            resolved[ref] = registry.ensure(store, ref, platform=arch.platform, pull_policy=pull,
                                             offline=offline, insecure=insecure)
        return resolved[ref]

    cache_dir = cache_dir or default_cache_dir()
    outdir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key, digests = build_key(spec, resolve, sbom=sbom, arch=arch)
    # kernel and initrd are the same signed or not (cached under `key`); the outputs are not
    out_key = key if keys is None else f"{key}+signed-{keys.identity}"
    result = BuiltImage(name=spec.name, outdir=outdir, key=out_key, images=digests)
    stamp = _Stamp(outdir, spec.name)
    record = stamp.load() if use_cache else {}
    previous = record.get("formats", {}) if record.get("key") == out_key else {}
    todo = []
    for fmt in formats:
        if get_format(fmt).needs_kernel and spec.kernel is None:  # unknown formats fail before any work too
            raise BuildError(f"format {fmt} needs a kernel, and the spec has no `kernel:` section",
                             where=str(spec.sources[0]) if spec.sources else None,
                             hint="add kernel: image: ..., or build only -f tar (LinuxKit builds a tar without a kernel)")
        reused = _still_valid(previous[fmt], outdir) if fmt in previous else None
        if reused is not None:
            result.artifacts[fmt] = reused
            result.reused.append(fmt)
        else:
            todo.append(fmt)
    manifest_file = build_manifest.manifest_path(outdir, spec.name)
    if not todo and _manifest_current(record.get("manifest"), manifest_file, previous):
        result.manifest = manifest_file   # nothing changed: outputs and their manifest are as recorded
        result.seconds = time.monotonic() - started
        return result
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lkit-build.", dir=outdir)))
        if not use_cache:
            cache_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lkit-cache.", dir=outdir)))
        maker = _BootFilesMaker(spec, store, resolve, key, cache_dir, workdir, sbom=sbom, arch=arch)
        if todo:
            files = maker.boot_files() if any(get_format(f).needs_kernel for f in todo) else maker.root_only()
            if keys is not None:
                from dataclasses import replace

                from lkit.build.signing import sign_efi

                files = replace(files, sign=lambda src, out: sign_efi(src, out, keys))
            for fmt in todo:
                staging = workdir / f"out-{fmt.replace('+', '_')}"
                staging.mkdir()
                written = get_format(fmt).write(files, staging)
                arts = []
                for tmp_path in written:
                    final = outdir / tmp_path.name
                    os.replace(tmp_path, final)
                    arts.append(Artifact(final, final.stat().st_size, sha256_file(final)))
                result.artifacts[fmt] = arts
        all_formats = {**previous,
                       **{fmt: [{"name": a.path.name, "size": a.size, "sha256": a.sha256,
                                 "mtime_ns": a.path.stat().st_mtime_ns} for a in arts]
                          for fmt, arts in result.artifacts.items()}}
        result.manifest = _write_manifest(maker, outdir, all_formats)
        stamp.save({"key": out_key, "formats": all_formats, "images": digests,
                    "manifest": {"size": result.manifest.stat().st_size, "formats": sorted(all_formats)}})
    result.seconds = time.monotonic() - started
    return result
