"""Unified kernel images: systemd's EFI stub with the kernel, initrd and command line inside.

Debian bookworm has the stub (systemd-boot-efi) but no ukify, so the sections are added with
objcopy. The classic fixed addresses (.linux at 0x2000000, .initrd at 0x3000000) leave too little
room for Debian's 14 MB kernel, so each section is placed after the previous one, page aligned,
with the kernel 2 MiB aligned (the x86_64 kernel's setup header asks for that alignment,
kernel_alignment = CONFIG_PHYSICAL_ALIGN). The result is a PE file OVMF boots directly as
EFI/BOOT/BOOTX64.EFI; the initrd rides inside it because the kernel cannot read the ISO by itself.

arm64: systemd's aarch64 stub (linuxaa64.efi.stub from systemd-boot-efi:arm64 at the host's
systemd-boot-efi version, lkit.build.outputs._archfiles), sections added by
aarch64-linux-gnu-objcopy (binutils' own objcopy writes only x86 PE). The stub starts the kernel as
a PE image, so a gzip-compressed arm64 `vmlinuz` is decompressed first (gzip output is a pure
function of its input: still reproducible).
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from lkit.build.outputs._archfiles import package_file
from lkit.build.outputs._tools import package_version, run
from lkit.build.outputs.base import SOURCE_DATE_EPOCH
from lkit.core import arch as arch_table
from lkit.core.arch import Arch

STUB = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
STUB_PACKAGE = "systemd-boot-efi"


def stub_path(arch: Arch = arch_table.DEFAULT) -> str:
    return f"/usr/lib/systemd/boot/efi/linux{arch.efi_name}.efi.stub"


def pe_machine(path: Path) -> int:
    """The COFF Machine field of a PE file (0x8664 x86_64, 0xAA64 arm64)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    pe = struct.unpack_from("<I", head, 0x3C)[0]
    if head[:2] != b"MZ" or head[pe:pe + 4] != b"PE\0\0":
        raise ValueError(f"{path} is not a PE file")
    return int(struct.unpack_from("<H", head, pe + 4)[0])


def efi_kernel(kernel: Path, workdir: Path) -> Path:
    """The kernel as a PE image an EFI loader can start: as it is, or gunzipped (arm64 vmlinuz)."""
    with open(kernel, "rb") as f:
        magic = f.read(2)
    if magic != b"\x1f\x8b":
        return kernel
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "Image"
    with gzip.open(kernel, "rb") as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return out

_PAGE = 0x1000
_KERNEL_ALIGN = 0x200000


@dataclass(frozen=True)
class PeSection:
    name: str
    vma: int        # ImageBase + VirtualAddress
    vsize: int      # VirtualSize
    raw_offset: int
    raw_size: int


def pe_sections(path: Path) -> list[PeSection]:
    """Section table of a PE/COFF file (enough to place new sections and to check a UKI)."""
    data = path.read_bytes()
    if data[:2] != b"MZ":
        raise ValueError(f"{path} is not a PE file")
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    if data[pe:pe + 4] != b"PE\0\0":
        raise ValueError(f"{path} has no PE signature")
    nsections, opt_size = struct.unpack_from("<H12xH", data, pe + 6)
    opt = pe + 24
    magic = struct.unpack_from("<H", data, opt)[0]
    image_base = struct.unpack_from("<Q", data, opt + 24)[0] if magic == 0x20B else \
        struct.unpack_from("<I", data, opt + 28)[0]
    sections = []
    table = opt + opt_size
    for i in range(nsections):
        raw = data[table + 40 * i: table + 40 * (i + 1)]
        name = raw[:8].rstrip(b"\0").decode("ascii", errors="replace")
        vsize, vaddr, rsize, roff = struct.unpack_from("<IIII", raw, 8)
        sections.append(PeSection(name, image_base + vaddr, vsize, roff, rsize))
    return sections


def section_bytes(path: Path, name: str) -> bytes:
    """Contents of one section (trimmed to its virtual size)."""
    for s in pe_sections(path):
        if s.name == name:
            with open(path, "rb") as f:
                f.seek(s.raw_offset)
                return f.read(min(s.vsize, s.raw_size))
    raise KeyError(name)


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def os_release(name: str) -> str:
    """The .osrel text: names the image and the stub version that booted it."""
    return (f'NAME="LinuxKit"\nID=linuxkit\nPRETTY_NAME="LinuxKit {name}"\n'
            f'IMAGE_ID={name}\nLKIT_STUB_VERSION={package_version(STUB_PACKAGE)}\n')


def make_uki(*, kernel: Path, initrd: Path, cmdline: str, name: str, out: Path, workdir: Path,
             arch: Arch = arch_table.DEFAULT) -> Path:
    """Write a UKI to `out`: stub + .osrel + .cmdline + .linux + .initrd, placed end to end."""
    stub = package_file(stub_path(arch), STUB_PACKAGE, arch)
    workdir.mkdir(parents=True, exist_ok=True)
    kernel = efi_kernel(kernel, workdir)
    osrel = workdir / "osrel"
    osrel.write_text(os_release(name))
    cmd = workdir / "cmdline"
    cmd.write_bytes(cmdline.encode() + b"\0")
    end = max(s.vma + s.vsize for s in pe_sections(stub))
    args: list[str | Path] = [arch.objcopy]
    for section, path, alignment in ((".osrel", osrel, _PAGE), (".cmdline", cmd, _PAGE),
                                     (".linux", kernel, _KERNEL_ALIGN), (".initrd", initrd, _PAGE)):
        vma = _align(end, alignment)
        args += ["--add-section", f"{section}={path}", "--change-section-vma", f"{section}={vma:#x}"]
        end = vma + path.stat().st_size
    out.unlink(missing_ok=True)
    run(args + [stub, out])
    _fix_header(out)
    return out


def pe_checksum(data: bytes, checksum_offset: int) -> int:
    """The PE optional-header checksum: 16-bit little-endian words summed with end-around carry
    (the checksum field counted as zero), plus the file length.

    An end-around-carry sum of base-65536 digits is the number modulo 0xFFFF (65536 = 1 mod 0xFFFF),
    so one big-integer remainder gives it without a Python loop over millions of words.
    """
    padded = data[:checksum_offset] + b"\0\0\0\0" + data[checksum_offset + 4:]
    if len(padded) % 2:
        padded += b"\0"
    folded = int.from_bytes(padded, "little") % 0xFFFF
    if folded == 0 and padded.count(0) != len(padded):
        folded = 0xFFFF
    return (folded + len(data)) & 0xFFFFFFFF


def _fix_header(path: Path) -> None:
    """objcopy (binutils 2.40) stamps PE files with the current time: set the COFF TimeDateStamp
    to SOURCE_DATE_EPOCH and recompute the checksum, so the UKI is reproducible."""
    data = bytearray(path.read_bytes())
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    struct.pack_into("<I", data, pe + 8, SOURCE_DATE_EPOCH)
    checksum_offset = pe + 24 + 64
    struct.pack_into("<I", data, checksum_offset, pe_checksum(bytes(data), checksum_offset))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
