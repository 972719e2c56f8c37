"""Partitioned disk images (MBR for BIOS, GPT for EFI) holding one FAT boot partition.

The partition tables are written here in Python rather than with sfdisk/sgdisk: they are a few
hundred bytes, and writing them ourselves keeps every GUID and signature derived from the content
(reproducible, yet different for different images) with no host tool involved.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lkit.build.outputs._deliver import deliver

if TYPE_CHECKING:
    from lkit.build.outputs.base import BootFiles

SECTOR = 512
ALIGN = 1 << 20                     # partitions start at 1 MiB, like every modern partitioner
_GPT_ENTRIES = 128
_GPT_ENTRY_SIZE = 128
_GPT_TABLE_SECTORS = _GPT_ENTRIES * _GPT_ENTRY_SIZE // SECTOR   # 32

ESP_TYPE = uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
MBR_FAT12 = 0x01
MBR_FAT16_LBA = 0x0E
MBR_FAT32_LBA = 0x0C
_NAMESPACE = uuid.UUID("6c6b6974-0000-4000-8000-6469736b0000")  # lkit's, for content-derived GUIDs


@dataclass(frozen=True)
class DiskLayout:
    total_sectors: int
    part_start: int     # first LBA of the partition
    part_sectors: int


def layout_for(partition_bytes: int) -> DiskLayout:
    """Partition at 1 MiB, image rounded up to 1 MiB with room for the GPT backup at the end."""
    part_sectors = (partition_bytes + SECTOR - 1) // SECTOR
    start = ALIGN // SECTOR
    end = start + part_sectors + 1 + _GPT_TABLE_SECTORS
    total = (end * SECTOR + ALIGN - 1) // ALIGN * ALIGN // SECTOR
    return DiskLayout(total, start, part_sectors)


def _chs(lba: int) -> bytes:
    """CHS address for 255 heads x 63 sectors, clamped to the 1023-cylinder limit."""
    cyl, rem = divmod(lba, 255 * 63)
    if cyl > 1023:
        return b"\xfe\xff\xff"
    head, sec = divmod(rem, 63)
    return bytes([head, ((cyl >> 2) & 0xC0) | (sec + 1), cyl & 0xFF])


def _mbr_entry(bootable: bool, ptype: int, start: int, sectors: int) -> bytes:
    return (bytes([0x80 if bootable else 0]) + _chs(start) + bytes([ptype]) + _chs(start + sectors - 1)
            + struct.pack("<II", start, sectors))


def mbr(layout: DiskLayout, *, boot_code: bytes, signature: int, ptype: int, bootable: bool) -> bytes:
    """A DOS partition table with one partition (sector 0)."""
    code = boot_code[:440].ljust(440, b"\0")
    entries = _mbr_entry(bootable, ptype, layout.part_start, layout.part_sectors).ljust(64, b"\0")
    return code + struct.pack("<IH", signature, 0) + entries + b"\x55\xaa"


def _gpt_header(layout: DiskLayout, disk_guid: uuid.UUID, entries_crc: int, *, backup: bool) -> bytes:
    last = layout.total_sectors - 1
    current, other = (last, 1) if backup else (1, last)
    table_lba = last - _GPT_TABLE_SECTORS if backup else 2
    fields = struct.pack(
        "<8sIIIIQQQQ16sQIII", b"EFI PART", 0x00010000, 92, 0, 0, current, other,
        2 + _GPT_TABLE_SECTORS, last - 1 - _GPT_TABLE_SECTORS, disk_guid.bytes_le, table_lba,
        _GPT_ENTRIES, _GPT_ENTRY_SIZE, entries_crc,
    )
    crc = zlib.crc32(fields)
    return (fields[:16] + struct.pack("<I", crc) + fields[20:]).ljust(SECTOR, b"\0")


def gpt(layout: DiskLayout, *, disk_guid: uuid.UUID, part_guid: uuid.UUID, part_type: uuid.UUID,
        name: str) -> tuple[bytes, bytes]:
    """(first 34 sectors, last 33 sectors) of a GPT disk with one partition and a protective MBR."""
    entry = struct.pack("<16s16sQQQ72s", part_type.bytes_le, part_guid.bytes_le, layout.part_start,
                        layout.part_start + layout.part_sectors - 1, 0,
                        name.encode("utf-16-le")[:72])
    table = entry.ljust(_GPT_ENTRIES * _GPT_ENTRY_SIZE, b"\0")
    crc = zlib.crc32(table)
    protective = DiskLayout(layout.total_sectors, 1, min(layout.total_sectors - 1, 0xFFFFFFFF))
    pmbr = mbr(protective, boot_code=b"", signature=0, ptype=0xEE, bootable=False)
    head = pmbr + _gpt_header(layout, disk_guid, crc, backup=False) + table
    tail = table + _gpt_header(layout, disk_guid, crc, backup=True)
    return head, tail


def mbr_type_for(boot_sector: bytes) -> int:
    """DOS partition type matching the FAT variant mkfs.vfat chose (it picks by size)."""
    if boot_sector[0x52:0x57] == b"FAT32":
        return MBR_FAT32_LBA
    if boot_sector[0x36:0x3B] == b"FAT12":
        return MBR_FAT12
    return MBR_FAT16_LBA


def content_guid(label: str, digest: bytes) -> uuid.UUID:
    """A GUID derived from the image content: reproducible, yet distinct for distinct images."""
    return uuid.uuid5(_NAMESPACE, label + ":" + digest.hex())


def _digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.digest()


def write_disk(out: Path, partition: Path, *, scheme: str, boot_code: bytes = b"") -> Path:
    """Write a sparse disk image with `partition` (a FAT image) as its only partition.

    scheme "mbr": bootable FAT partition (type by FAT variant) and `boot_code` (syslinux's mbr.bin);
    scheme "gpt": EFI system partition with a protective MBR.
    """
    layout = layout_for(partition.stat().st_size)
    digest = _digest(partition)
    with open(out, "wb") as disk:
        disk.truncate(layout.total_sectors * SECTOR)
        if scheme == "mbr":
            signature = int.from_bytes(digest[:4], "little")
            with open(partition, "rb") as f:
                ptype = mbr_type_for(f.read(512))
            disk.write(mbr(layout, boot_code=boot_code, signature=signature, ptype=ptype, bootable=True))
        elif scheme == "gpt":
            head, tail = gpt(layout, disk_guid=content_guid("disk", digest),
                             part_guid=content_guid("esp", digest), part_type=ESP_TYPE,
                             name="EFI System Partition")
            disk.write(head)
            disk.seek((layout.total_sectors - 1 - _GPT_TABLE_SECTORS) * SECTOR)
            disk.write(tail)
        else:
            raise ValueError(f"unknown partition scheme {scheme!r}")
        disk.seek(layout.part_start * SECTOR)
        with open(partition, "rb") as src:
            shutil.copyfileobj(src, disk, 1 << 20)
    return out


def once_per_build(files: BootFiles, name: str, build: Callable[[BootFiles, Path], Path]) -> Path:
    """The disk image `build` makes, made once per build: raw-X and qcow2-X both start from it."""
    path = files.workdir / f"{name}.disk"
    if not path.exists():
        os.replace(build(files, files.workdir / f"{name}.disk.partial"), path)
    return path


def deliver_disk(disk: Path, files: BootFiles, outdir: Path, target: str) -> Path:
    """Deliver a shared disk: a hard link to it is moved out, the disk stays for the next format."""
    link = files.workdir / target
    os.link(disk, link)
    return deliver(link, outdir, target)
