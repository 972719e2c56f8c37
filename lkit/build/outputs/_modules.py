"""Kernel modules read straight from the root filesystem tar: find them, read their dependencies.

Debian's kernel package ships no modules.dep, and the stage-1 initrd of kernel+squashfs must load
squashfs and virtio_blk before the root exists, so dependencies come from each .ko's `.modinfo`
`depends=` field and are resolved here into a load order.
"""

from __future__ import annotations

import struct
import tarfile
from dataclasses import dataclass
from pathlib import PurePosixPath


@dataclass(frozen=True)
class Module:
    name: str          # normalised (dashes -> underscores), as `depends=` spells it
    path: str          # member name in the tar
    data: bytes
    depends: tuple[str, ...]


def normalise(name: str) -> str:
    return name.replace("-", "_")


def modinfo(data: bytes) -> dict[str, str]:
    """The key=value strings of an ELF64 module's .modinfo section ({} if not an ELF64 module)."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return {}
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab = headers[shstrndx]
    names = data[strtab[4]: strtab[4] + strtab[5]]
    for sh_name, _type, _flags, _addr, offset, size in headers:
        name = names[sh_name: names.index(b"\0", sh_name)]
        if name == b".modinfo":
            info: dict[str, str] = {}
            for item in data[offset: offset + size].split(b"\0"):
                key, sep, value = item.decode(errors="replace").partition("=")
                if sep:
                    info.setdefault(key, value)
            return info
    return {}


def modules_in_tar(tar: tarfile.TarFile) -> dict[str, Module]:
    """Every uncompressed .ko under lib/modules/<version>/ (first version in sorted order)."""
    found: dict[str, Module] = {}
    version: str | None = None
    for member in sorted(tar.getmembers(), key=lambda m: m.name):
        path = PurePosixPath(member.name.lstrip("./").lstrip("/"))
        if not member.isfile() or path.suffix != ".ko" or path.parts[:2] != ("lib", "modules") \
                or len(path.parts) < 4:
            continue
        version = version or path.parts[2]
        if path.parts[2] != version:
            continue
        f = tar.extractfile(member)
        if f is None:
            continue
        data = f.read()
        depends = tuple(d for d in modinfo(data).get("depends", "").split(",") if d)
        name = normalise(path.stem)
        found[name] = Module(name, member.name, data, tuple(normalise(d) for d in depends))
    return found


def load_order(wanted: list[str], available: dict[str, Module]) -> list[Module]:
    """`wanted` modules and their dependencies, dependencies first; absent ones are skipped
    (they may be built into the kernel)."""
    order: list[Module] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in available:
            return
        seen.add(name)
        for dep in available[name].depends:
            visit(dep)
        order.append(available[name])

    for name in wanted:
        visit(normalise(name))
    return order
