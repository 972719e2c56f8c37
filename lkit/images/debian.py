"""Debian packages as a read-only file system: resolve versions, fetch .debs, read their files.

Why in Python: lkit builds images without Docker, chroots or maintainer scripts. A .deb is an `ar`
archive whose `data.tar.*` member holds the files; we index that tar in place (nothing is written
outside a scratch directory) and let the image builder pick files out of it. apt is only asked
which version is the candidate and to download a pinned `name=version` into the package cache.

Architecture: every apt question names the package as NAME:ARCH (Debian's multiarch), falling back
to NAME:all for architecture-independent packages; the cache file name says which architecture a
.deb was fetched for (NAME_VERSION_ARCH.deb).

Also here: the two ELF readers the builder needs to choose files from packages: a binary's
PT_INTERP / DT_NEEDED / DT_RUNPATH (shared-library closure) and a kernel module's `.modinfo`.
"""

from __future__ import annotations

import lzma
import os
import posixpath
import re
import struct
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from lkit.core import arch as arch_table
from lkit.core.arch import Arch
from lkit.core.files import COPY_BUFSIZE, sha256_file
from lkit.errors import ImageError, InfraError

APT_LISTS = Path("/var/lib/apt/lists")
APT_TIMEOUT = 900  # seconds for one `apt-get download`; the kernel .deb is ~70 MB
QUERY_TIMEOUT = 120


def cache_root() -> Path:
    """$XDG_CACHE_HOME/lkit (~/.cache/lkit), shared by every lkit cache."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lkit"


def debs_dir() -> Path:
    return cache_root() / "debs"


# -- apt ----------------------------------------------------------------------------------------


def check_apt_lists(lists: Path = APT_LISTS) -> None:
    """apt knows no packages until `apt-get update` has run once: say that, not 'package not found'."""
    if not any(lists.glob("*_Packages*")):
        raise InfraError(f"apt has no package lists in {lists}: `apt-get update` has never been run",
                         hint="run `apt-get update` (as root) once, then retry")


def _run(argv: Sequence[str], *, cwd: Path | None = None, timeout: int = QUERY_TIMEOUT) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "LC_ALL": "C"})
    except FileNotFoundError as exc:
        raise InfraError(f"{argv[0]} is not installed", hint="lkit pkg build needs apt (Debian/Ubuntu host)") from exc
    except subprocess.TimeoutExpired as exc:
        raise InfraError(f"`{' '.join(argv)}` did not finish in {timeout} s") from exc


def _policy(qualified: Sequence[str]) -> dict[str, str]:
    """{name: candidate} from one `apt-cache policy` call (names without their :ARCH)."""
    out = _run(["apt-cache", "policy", "--", *qualified]).stdout
    found: dict[str, str] = {}
    current = None
    for line in out.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            current = line[:-1].split(":")[0]
        match = re.match(r"^\s+Candidate:\s*(\S+)", line)
        if match and current and match.group(1) != "(none)":
            found[current] = match.group(1)
    return found


def candidate_versions(names: Sequence[str], arch: Arch = arch_table.DEFAULT) -> dict[str, str]:
    """The version `apt-get install NAME:ARCH` would pick now (apt-cache policy's Candidate)."""
    check_apt_lists()
    found = _policy([f"{n}:{arch.debian}" for n in names])
    rest = [n for n in names if n not in found]
    if rest:  # architecture-independent packages are NAME:all
        found.update(_policy([f"{n}:all" for n in rest]))
    for name in names:
        if name not in found:
            foreign = arch.debian != arch_table.host().debian
            raise ImageError(f"Debian package {name!r} has no installable candidate version for {arch.debian}",
                             hint=(f"is {arch.debian} a dpkg architecture here? `dpkg --add-architecture "
                                   f"{arch.debian} && apt-get update` (scripts/setup does it); " if foreign else "")
                             + "check the name with `apt-cache search`; run `apt-get update` if lists are old")
    return found


def candidate_version(name: str, arch: Arch = arch_table.DEFAULT) -> str:
    return candidate_versions([name], arch)[name]


def depends(name: str, version: str, arch: Arch = arch_table.DEFAULT) -> list[str]:
    """Package names in the Depends field of NAME:ARCH=VERSION (alternatives flattened, in order)."""
    out = _run(["apt-cache", "show", "--", f"{name}:{arch.debian}={version}"]).stdout
    if not out.strip():
        out = _run(["apt-cache", "show", "--", f"{name}:all={version}"]).stdout
    match = re.search(r"^Depends:\s*(.+)$", out, re.M)
    if not match:
        return []
    names = []
    for alt in match.group(1).split(","):
        for item in alt.split("|"):
            names.append(item.strip().split()[0].split(":")[0])
    return names


def deb_file_name(name: str, version: str, arch: Arch = arch_table.DEFAULT) -> str:
    """The package cache's name for NAME=VERSION fetched for `arch` (an `all` package is cached per arch)."""
    return f"{name}_{version.replace(':', '%3a')}_{arch.debian}.deb"


def download(name: str, version: str, sha256: str | None, cache: Path | None = None,
             arch: Arch = arch_table.DEFAULT) -> tuple[Path, str]:
    """NAME:ARCH=VERSION's .deb in the package cache (downloaded if absent), checked against `sha256`.

    Returns (path, sha256). `apt-get download` runs from an argument list in a fresh directory inside
    the cache, so a half-finished download never looks like a cached one.
    """
    cache = cache or debs_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / deb_file_name(name, version, arch)
    if not target.exists():
        check_apt_lists()
        with tempfile.TemporaryDirectory(dir=cache, prefix=".dl-") as tmp:
            failed: subprocess.CompletedProcess | None = None
            for qualifier in (arch.debian, "all"):  # an architecture-independent package is NAME:all
                proc = _run(["apt-get", "download", "-q", "--", f"{name}:{qualifier}={version}"], cwd=Path(tmp),
                            timeout=APT_TIMEOUT)
                debs = sorted(Path(tmp).glob("*.deb"))
                if proc.returncode == 0 and len(debs) == 1:
                    break
                failed = failed or proc  # the NAME:ARCH attempt says what went wrong
            else:
                assert failed is not None
                detail = (failed.stderr or failed.stdout).strip().splitlines()
                gone = any("not found" in line or "Unable to locate" in line for line in detail)
                update = "`lkit pkg build --update" + ("`" if arch is arch_table.DEFAULT else f" --arch {arch.name}`")
                raise ImageError(
                    f"cannot download Debian package {name}={version} ({arch.debian}): "
                    f"{detail[-1] if detail else 'no .deb'}",
                    hint=(f"that version is no longer in the archive: re-resolve the lock with {update}"
                          if gone else "check the network and `apt-get update`"))
            os.replace(debs[0], target)
    actual = sha256_file(target)
    if sha256 is not None and actual != sha256:
        target.unlink()
        raise ImageError(f"{target.name}: sha256 {actual} does not match the lock's {sha256}",
                         hint="the archive changed this version's bytes; re-resolve with `lkit pkg build --update`")
    return target, actual


# -- .deb reading -------------------------------------------------------------------------------


def _ar_members(fh: BinaryIO, where: str) -> Iterator[tuple[str, int, int]]:
    """(name, offset, size) of each member of an `ar` archive."""
    if fh.read(8) != b"!<arch>\n":
        raise ImageError(f"{where}: not a Debian package (no ar header)")
    while True:
        header = fh.read(60)
        if len(header) < 60:
            return
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        offset = fh.tell()
        yield name, offset, size
        fh.seek(offset + size + (size & 1))


def _unzstd(chunks: Iterator[bytes], dest: BinaryIO, what: str) -> None:
    """Pipe `chunks` through `zstd -dc` into `dest`; the child never outlives an error (killed, reaped)."""
    try:
        proc = subprocess.Popen(["zstd", "-dc", "-q"], stdin=subprocess.PIPE, stdout=dest)
    except OSError as exc:
        raise ImageError(f"{what}: cannot run zstd: {exc.strerror or exc}",
                         hint="install zstd (apt-get install zstd)") from None
    assert proc.stdin is not None
    try:
        try:
            for data in chunks:
                proc.stdin.write(data)
        except BrokenPipeError:
            pass  # zstd stopped reading (bad data): its exit status below says so
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            status = proc.wait(timeout=QUERY_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise ImageError(f"{what}: zstd did not finish within {QUERY_TIMEOUT} s") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if status != 0:
        raise ImageError(f"{what}: cannot decompress (zstd exit status {status})")


def _decompress_member(src: BinaryIO, name: str, size: int, dest: BinaryIO, where: str) -> None:
    """data.tar{,.xz,.gz,.zst} -> plain tar in `dest`, streamed."""
    remaining = size

    def chunks() -> Iterator[bytes]:
        nonlocal remaining
        while remaining:
            data = src.read(min(COPY_BUFSIZE, remaining))
            if not data:
                raise ImageError(f"{where}: truncated {name}")
            remaining -= len(data)
            yield data

    if name.endswith(".zst"):
        _unzstd(chunks(), dest, f"{where}: {name}")
        return
    if name.endswith(".xz"):
        dec: lzma.LZMADecompressor | zlib._Decompress | None = lzma.LZMADecompressor()
    elif name.endswith(".gz"):
        dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif name == "data.tar":
        dec = None
    else:
        raise ImageError(f"{where}: unsupported package member {name}")
    for data in chunks():
        dest.write(dec.decompress(data) if dec else data)


@dataclass
class FsEntry:
    """One file of an unpacked package: where its bytes are in the package's plain data tar."""

    path: str            # normalised, relative: "usr/bin/runc"
    kind: str            # "file", "dir", "symlink"
    mode: int
    package: str
    linkname: str = ""   # symlink target as written in the package
    tar: Path | None = None
    offset: int = 0
    size: int = 0


def norm(path: str) -> str:
    """'/usr//bin/./x' -> 'usr/bin/x' ('' is the root)."""
    out = posixpath.normpath("/" + path.lstrip("./")).lstrip("/")
    return "" if out == "." else out


@dataclass
class PackageFS:
    """The merged file tree of several .debs (later packages win), read straight from their data tars."""

    entries: dict[str, FsEntry] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)  # packages whose file contents were read

    @classmethod
    def open(cls, debs: Sequence[tuple[str, Path]], scratch: Path) -> "PackageFS":
        fs = cls()
        for name, deb in debs:
            fs.add_deb(name, deb, scratch)
        return fs

    def add_deb(self, package: str, deb: Path, scratch: Path) -> None:
        plain = scratch / f"{package}.data.tar"
        with open(deb, "rb") as fh:
            members = list(_ar_members(fh, str(deb)))
            data = [m for m in members if m[0].startswith("data.tar")]
            if len(data) != 1:
                raise ImageError(f"{deb}: no data.tar member")
            name, offset, size = data[0]
            fh.seek(offset)
            with open(plain, "wb") as out:
                _decompress_member(fh, name, size, out, str(deb))
        with tarfile.open(plain, "r:") as tf:
            for info in tf:
                path = norm(info.name)
                if not path:
                    continue
                parent = posixpath.dirname(path)
                while parent and parent not in self.entries:  # implied directories
                    self.entries[parent] = FsEntry(parent, "dir", 0o755, package)
                    parent = posixpath.dirname(parent)
                if info.isdir():
                    if path not in self.entries:
                        self.entries[path] = FsEntry(path, "dir", info.mode & 0o7777, package)
                elif info.issym():
                    self.entries[path] = FsEntry(path, "symlink", 0o777, package, linkname=info.linkname)
                elif info.islnk():
                    src = self.entries.get(norm(info.linkname))
                    if src is None or src.kind != "file":
                        raise ImageError(f"{deb}: hard link {path} to a missing file {info.linkname}")
                    self.entries[path] = FsEntry(path, "file", info.mode & 0o7777, package, tar=src.tar,
                                                 offset=src.offset, size=src.size)
                elif info.isreg():
                    self.entries[path] = FsEntry(path, "file", info.mode & 0o7777, package, tar=plain,
                                                 offset=info.offset_data, size=info.size)
                # devices and fifos in packages are ignored: images get theirs at run time

    def read(self, path: str) -> bytes:
        entry = self.entries[self.resolve(path)]
        if entry.kind != "file" or entry.tar is None:
            raise ImageError(f"/{path} in the packages is a {entry.kind}, not a file")
        self.used.add(entry.package)
        with open(entry.tar, "rb") as fh:
            fh.seek(entry.offset)
            return fh.read(entry.size)

    def resolve(self, path: str, *, follow_last: bool = True) -> str:
        """Follow symlinks inside the package tree (as the kernel would inside the image)."""
        parts = [p for p in norm(path).split("/") if p]
        done: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            entry = self.entries.get("/".join(done + [part]))
            if entry is not None and entry.kind == "symlink" and (parts or follow_last):
                hops += 1
                if hops > 40:
                    raise ImageError(f"too many levels of symbolic links at /{path}")
                target = entry.linkname if entry.linkname.startswith("/") else "/".join(done) + "/" + entry.linkname
                parts = [p for p in norm(target).split("/") if p] + parts
                done = []
                continue
            done.append(part)
        return "/".join(done)

    def exists(self, path: str) -> bool:
        return self.resolve(path) in self.entries

    def walk(self, top: str) -> list[str]:
        """`top` and every path under it, sorted."""
        top = norm(top)
        prefix = top + "/"
        return sorted(p for p in self.entries if p == top or p.startswith(prefix))


# -- ELF ----------------------------------------------------------------------------------------

PT_INTERP, PT_DYNAMIC, PT_LOAD = 3, 2, 1
DT_NEEDED, DT_STRTAB, DT_RPATH, DT_RUNPATH = 1, 5, 15, 29


@dataclass(frozen=True)
class ElfDeps:
    interp: str | None
    needed: tuple[str, ...]
    runpath: tuple[str, ...]


def is_elf(data: bytes) -> bool:
    return data[:4] == b"\x7fELF"


def elf_machine(data: bytes) -> int:
    """e_machine of an ELF file (62 x86-64, 183 AArch64), read with the file's own byte order."""
    return struct.unpack_from("<H" if data[5] == 1 else ">H", data, 0x12)[0]


def check_elf_machine(data: bytes, arch: Arch, where: str) -> None:
    """Refuse an ELF file built for another machine than `arch`'s (a wrong-architecture package or file)."""
    machine = elf_machine(data)
    if machine != arch.elf_machine:
        other = arch_table.of_elf_machine(machine)
        what = f"{other.elf_machine_name} ({other.name})" if other else f"ELF machine {machine}"
        raise ImageError(f"{where} is an {what} binary, not {arch.elf_machine_name} ({arch.name})",
                         hint=f"an {arch.name} image takes {arch.name} files only: check the .deb's "
                              f"architecture and files/ of build.yml")


def elf_deps(data: bytes, where: str) -> ElfDeps:
    """PT_INTERP, DT_NEEDED and DT_RUNPATH/DT_RPATH of a 64-bit little-endian ELF."""
    if not is_elf(data) or data[4] != 2 or data[5] != 1:
        raise ImageError(f"{where}: not a 64-bit little-endian ELF file")
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    interp = None
    loads: list[tuple[int, int, int]] = []
    dynamic: tuple[int, int] | None = None
    for i in range(phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if p_type == PT_INTERP:
            interp = data[p_offset:p_offset + p_filesz].rstrip(b"\0").decode()
        elif p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
    if dynamic is None:
        return ElfDeps(interp, (), ())
    tags: list[tuple[int, int]] = []
    off, size = dynamic
    for pos in range(off, off + size, 16):
        tag, val = struct.unpack_from("<qQ", data, pos)
        if tag == 0:
            break
        tags.append((tag, val))
    strtab_vaddr = next((v for t, v in tags if t == DT_STRTAB), None)
    if strtab_vaddr is None:
        raise ImageError(f"{where}: dynamic section without a string table")
    strtab = next((o + strtab_vaddr - va for va, o, sz in loads if va <= strtab_vaddr < va + sz), None)
    if strtab is None:
        raise ImageError(f"{where}: string table outside the loaded segments")

    def string(index: int) -> str:
        end = data.index(b"\0", strtab + index)
        return data[strtab + index:end].decode()

    needed = tuple(string(v) for t, v in tags if t == DT_NEEDED)
    runpath: list[str] = []
    for t, v in tags:
        if t in (DT_RUNPATH, DT_RPATH):
            runpath.extend(p for p in string(v).split(":") if p)
    return ElfDeps(interp, needed, tuple(runpath))


def elf_section(data: bytes, name: str) -> bytes | None:
    """The bytes of the section called `name` (kernel modules keep `.modinfo` there)."""
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if shoff == 0 or shnum == 0:
        return None
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_off = headers[shstrndx][4]
    wanted = name.encode()
    for h in headers:
        start = names_off + h[0]
        if data[start:data.index(b"\0", start)] == wanted:
            return data[h[4]:h[4] + h[5]]
    return None


def modinfo(data: bytes, where: str) -> dict[str, list[str]]:
    """A kernel module's `.modinfo` key=value strings (keys like depends, alias, name) as lists."""
    if not is_elf(data):
        raise ImageError(f"{where}: not an ELF kernel module (compressed modules are not supported)")
    section = elf_section(data, ".modinfo")
    out: dict[str, list[str]] = {}
    for item in (section or b"").split(b"\0"):
        if b"=" in item:
            key, _, value = item.decode("utf-8", "replace").partition("=")
            out.setdefault(key, []).append(value)
    return out


__all__ = ["ElfDeps", "FsEntry", "PackageFS", "candidate_version", "candidate_versions", "check_apt_lists",
           "check_elf_machine", "deb_file_name", "depends", "download", "elf_deps", "elf_machine", "elf_section",
           "is_elf", "modinfo", "norm", "sha256_file"]
