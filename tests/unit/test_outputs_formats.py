"""Bootable output formats built from small fake inputs (no VM): names, atomic delivery,
byte-identical rebuilds, and the structure of each image as the host tools read it back."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import struct
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest

from lkit.build.outputs import _uki
from lkit.build.outputs._cpio import CpioWriter
from lkit.build.outputs.base import SOURCE_DATE_EPOCH, BootFiles, get_format

BOOTABLE = ["iso-bios", "iso-efi", "iso-efi-initrd", "raw-bios", "raw-efi", "qcow2-bios", "qcow2-efi",
            "kernel+squashfs"]
CMDLINE = "console=ttyS0 console=tty0\n page_poison=1"


def _fake_kernel() -> bytes:
    """1 MiB of deterministic bytes standing in for a bzImage (no format reads the kernel)."""
    block = hashlib.sha256(b"lkit-fake-kernel").digest()
    return b"MZ" + (block * (1 << 15))[: (1 << 20) - 2]


def _root_tar(path: Path) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data, mode, uid in (
            ("boot", tarfile.DIRTYPE, b"", 0o755, 0),
            ("boot/kernel", tarfile.REGTYPE, b"k" * 100, 0o644, 0),
            ("etc", tarfile.DIRTYPE, b"", 0o755, 0),
            ("etc/hostname", tarfile.REGTYPE, b"lkit\n", 0o644, 0),
            ("home", tarfile.DIRTYPE, b"", 0o750, 1000),
            ("init", tarfile.REGTYPE, b"#!/bin/sh\necho hi\n", 0o755, 0),
        ):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid = kind, mode, uid, uid
            info.mtime, info.size = 1700000000, len(data)
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> BootFiles:
    d = tmp_path_factory.mktemp("inputs")
    (d / "kernel").write_bytes(_fake_kernel())
    cpio = CpioWriter()
    cpio.file("init", b"#!/bin/sh\necho hello\n", 0o755)
    (d / "initrd.img").write_bytes(cpio.gzip())
    tar = _root_tar(d / "rootfs.tar")
    return BootFiles(name="demo", kernel=d / "kernel", initrd=d / "initrd.img", cmdline=CMDLINE,
                     rootfs_tar=lambda: tar, workdir=d / "unused")


def _build(inputs: BootFiles, fmt: str, base: Path) -> dict[str, Path]:
    files = dataclasses.replace(inputs, workdir=base / "work")
    written = get_format(fmt).write(files, base / "out")
    return {p.name: p for p in written}


@pytest.fixture(scope="module")
def built(inputs: BootFiles, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """Every format built once (module scope: the structure tests share them)."""
    return {fmt: _build(inputs, fmt, tmp_path_factory.mktemp(fmt.replace("+", "-"))) for fmt in BOOTABLE}


EXPECTED_NAMES = {
    "iso-bios": ["demo.iso"],
    "iso-efi": ["demo-efi.iso"],
    "iso-efi-initrd": ["demo-efi-initrd.iso"],
    "raw-bios": ["demo-bios.img"],
    "raw-efi": ["demo-efi.img"],
    "qcow2-bios": ["demo.qcow2"],
    "qcow2-efi": ["demo-efi.qcow2"],
    "kernel+squashfs": ["demo-kernel", "demo-cmdline", "demo-squashfs.img", "demo-squashfs-initrd.img"],
}


@pytest.mark.parametrize("fmt", BOOTABLE)
def test_names_match_linuxkit_and_outdir_holds_only_them(fmt: str, built: dict[str, dict[str, Path]]) -> None:
    assert get_format(fmt).filenames("demo") == EXPECTED_NAMES[fmt]
    outputs = built[fmt]
    assert sorted(outputs) == sorted(EXPECTED_NAMES[fmt])
    outdir = next(iter(outputs.values())).parent
    assert sorted(p.name for p in outdir.iterdir()) == sorted(EXPECTED_NAMES[fmt])  # no temp files left
    assert all(p.stat().st_size > 0 for p in outputs.values())


@pytest.mark.parametrize("fmt", BOOTABLE)
def test_rebuild_is_byte_identical(fmt: str, inputs: BootFiles, built: dict[str, dict[str, Path]],
                                   tmp_path: Path) -> None:
    again = _build(inputs, fmt, tmp_path)
    for name, first in built[fmt].items():
        assert first.read_bytes() == again[name].read_bytes(), f"{name} differs between two builds"


def _xorriso(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["xorriso", *map(str, args)], capture_output=True, text=True, timeout=120)


def _iso_file(iso: Path, inner: str, dest: Path) -> bytes:
    proc = _xorriso("-osirrox", "on", "-indev", iso, "-extract", inner, dest)
    assert proc.returncode == 0, proc.stderr
    return dest.read_bytes()


@pytest.mark.parametrize("fmt", ["iso-bios", "iso-efi", "iso-efi-initrd"])
def test_iso_is_valid_for_xorriso(fmt: str, built: dict[str, dict[str, Path]]) -> None:
    (iso,) = built[fmt].values()
    report = _xorriso("-indev", iso, "-report_el_torito", "plain", "-check_media", "--")
    assert report.returncode == 0, report.stderr
    for bad in ("FAILURE", "SORRY", "MISHAP"):
        assert bad not in report.stderr, report.stderr
    assert "Volume id    : 'LINUXKIT'" in report.stderr + report.stdout
    assert "Media region :          0 ," in report.stdout and "+ good" in report.stdout
    entries = [ln for ln in report.stdout.splitlines() if ln.startswith("El Torito boot img :")]
    assert len(entries) == 1, report.stdout
    if fmt == "iso-bios":
        assert " BIOS " in entries[0] and "/isolinux/isolinux.bin" in report.stdout
        assert "El Torito hid MBR" not in report.stdout  # plain boot image, not hidden
    else:
        assert " UEFI " in entries[0], entries


def test_iso_bios_carries_serial_config_versions_and_hybrid_mbr(built: dict[str, dict[str, Path]],
                                                                 tmp_path: Path) -> None:
    (iso,) = built["iso-bios"].values()
    cfg = _iso_file(iso, "/isolinux/isolinux.cfg", tmp_path / "cfg").decode()
    assert cfg.startswith("SERIAL 0 115200\n")
    assert "  APPEND console=ttyS0 console=tty0 page_poison=1\n" in cfg
    versions = _iso_file(iso, "/boot-versions.txt", tmp_path / "v").decode()
    assert versions.startswith("isolinux 3:6.") and "syslinux-common 3:6." in versions
    assert _iso_file(iso, "/kernel", tmp_path / "k") == _fake_kernel()
    head = iso.read_bytes()[:512]
    assert head[510:] == b"\x55\xaa" and head[:440] != bytes(440)   # isohybrid MBR boot code


def _fat_of(image: Path, offset: int, tmp_path: Path) -> Path:
    fat = tmp_path / f"fat-{image.name}"
    with open(image, "rb") as src:
        src.seek(offset)
        fat.write_bytes(src.read())
    return fat


def _mtype(fat: Path, inner: str) -> bytes:
    proc = subprocess.run(["mtype", "-i", str(fat), f"::{inner}"], capture_output=True, timeout=60,
                          env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _efi_fat_from_iso(iso: Path, tmp_path: Path) -> Path:
    proc = _xorriso("-indev", iso, "-report_el_torito", "plain")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("El Torito boot img :"))
    lba = int(line.split()[-1]) if line.split()[-1].isdigit() else None
    # "El Torito img blks :" has the size; start LBA is reported in the plain table as the last field.
    assert lba is not None, proc.stdout
    return _fat_of(iso, lba * 2048, tmp_path)


@pytest.mark.parametrize("fmt", ["iso-efi", "iso-efi-initrd"])
def test_efi_iso_esp_is_also_a_gpt_partition(fmt: str, built: dict[str, dict[str, Path]]) -> None:
    (iso,) = built[fmt].values()
    report = _xorriso("-indev", iso, "-report_el_torito", "plain", "-report_system_area", "plain").stdout
    eltorito_lba = int(next(ln for ln in report.splitlines() if ln.startswith("El Torito boot img :"))
                       .split()[-1])
    rows = [ln.split() for ln in report.splitlines() if ln.startswith("GPT ")]
    esp = [r[-2] for r in rows if r[1:3] == ["type", "GUID"] and r[-1] == "28732ac11ff8d211ba4b00a0c93ec93b"]
    assert len(esp) == 1, report
    start = next(int(r[-2]) for r in rows if r[1:4] == ["start", "and", "size"] and r[-3] == esp[0])
    assert start == eltorito_lba * 4                      # the GPT ESP is the El Torito image
    data = iso.read_bytes()
    assert data[512:520] == b"EFI PART" and data[446 + 4] == 0xEE


def test_iso_efi_boot_image_holds_a_uki(built: dict[str, dict[str, Path]], tmp_path: Path) -> None:
    (iso,) = built["iso-efi"].values()
    fat = _efi_fat_from_iso(iso, tmp_path)
    uki = tmp_path / "BOOTX64.EFI"
    uki.write_bytes(_mtype(fat, "/EFI/BOOT/BOOTX64.EFI"))
    assert _uki.section_bytes(uki, ".linux") == _fake_kernel()
    assert _uki.section_bytes(uki, ".cmdline") == CMDLINE.encode() + b"\0"


def test_iso_efi_initrd_has_systemd_boot_and_separate_kernel(built: dict[str, dict[str, Path]],
                                                              tmp_path: Path) -> None:
    (iso,) = built["iso-efi-initrd"].values()
    fat = _efi_fat_from_iso(iso, tmp_path)
    assert b"systemd-boot" in _mtype(fat, "/EFI/BOOT/BOOTX64.EFI")
    entry = _mtype(fat, "/loader/entries/linuxkit.conf").decode()
    assert "linux /kernel\n" in entry and "initrd /initrd.img\n" in entry
    assert "options console=ttyS0 console=tty0 page_poison=1\n" in entry
    assert _mtype(fat, "/kernel") == _fake_kernel()


def test_raw_bios_mbr_partition_and_syslinux(built: dict[str, dict[str, Path]], tmp_path: Path) -> None:
    (img,) = built["raw-bios"].values()
    data = img.read_bytes()
    assert data[510:512] == b"\x55\xaa"
    boot, ptype = data[446], data[446 + 4]
    start, sectors = struct.unpack_from("<II", data, 446 + 8)
    assert (boot, start) == (0x80, 2048)
    assert (start + sectors) * 512 <= len(data)
    assert data[:440] == Path("/usr/lib/syslinux/mbr/mbr.bin").read_bytes()[:440]
    fat = _fat_of(img, start * 512, tmp_path)
    assert struct.unpack_from("<I", fat.read_bytes(), 0x1C)[0] == 2048   # hidden sectors = offset
    assert ptype == {b"FAT12": 0x01, b"FAT16": 0x0E}[fat.read_bytes()[0x36:0x3B]]
    cfg = _mtype(fat, "/syslinux.cfg").decode()
    assert cfg.startswith("SERIAL 0 115200\n") and "APPEND console=ttyS0 console=tty0 page_poison=1" in cfg
    assert _mtype(fat, "/ldlinux.sys")[:0] == b"" and len(_mtype(fat, "/ldlinux.sys")) > 1000
    assert _mtype(fat, "/kernel") == _fake_kernel()


def test_raw_efi_gpt_is_consistent(built: dict[str, dict[str, Path]], inputs: BootFiles,
                                   tmp_path: Path) -> None:
    (img,) = built["raw-efi"].values()
    data = img.read_bytes()
    assert data[446 + 4] == 0xEE and data[510:512] == b"\x55\xaa"
    last = len(data) // 512 - 1
    for lba, table_lba in ((1, 2), (last, last - 32)):
        hdr = data[lba * 512: lba * 512 + 92]
        assert hdr[:8] == b"EFI PART"
        crc = struct.unpack_from("<I", hdr, 16)[0]
        assert zlib.crc32(hdr[:16] + b"\0\0\0\0" + hdr[20:]) == crc
        assert struct.unpack_from("<Q", hdr, 24)[0] == lba
        assert struct.unpack_from("<Q", hdr, 72)[0] == table_lba
        table = data[table_lba * 512: (table_lba + 32) * 512]
        assert zlib.crc32(table) == struct.unpack_from("<I", hdr, 88)[0]
        first, end = struct.unpack_from("<QQ", table, 32)
        assert table[:16] == bytes.fromhex("28732ac11ff8d211ba4b00a0c93ec93b")   # ESP type GUID
        assert first == 2048 and end < last - 32
    fat = _fat_of(img, 2048 * 512, tmp_path)
    uki = tmp_path / "uki.efi"
    uki.write_bytes(_mtype(fat, "/EFI/BOOT/BOOTX64.EFI"))
    assert _uki.section_bytes(uki, ".initrd") == inputs.initrd.read_bytes()


@pytest.mark.parametrize("fmt,raw", [("qcow2-bios", "raw-bios"), ("qcow2-efi", "raw-efi")])
def test_qcow2_has_the_raw_disk(fmt: str, raw: str, built: dict[str, dict[str, Path]]) -> None:
    (qcow2,) = built[fmt].values()
    (img,) = built[raw].values()
    info = json.loads(subprocess.run(["qemu-img", "info", "--output", "json", str(qcow2)],
                                     capture_output=True, text=True, timeout=60, check=True).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] == img.stat().st_size
    same = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(img), str(qcow2)],
                          capture_output=True, text=True, timeout=60)
    assert same.returncode == 0, same.stdout + same.stderr


def test_squashfs_holds_root_without_boot_with_fixed_times(built: dict[str, dict[str, Path]]) -> None:
    out = built["kernel+squashfs"]
    listing = subprocess.run(["unsquashfs", "-lln", "-d", "", str(out["demo-squashfs.img"])],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    lines = {ln.split()[-1]: ln for ln in listing.splitlines() if ln[:1] in "d-l"}
    assert "/boot" not in lines and "/boot/kernel" not in lines
    assert lines["/init"].startswith("-rwxr-xr-x 0/0")
    assert lines["/home"].startswith("drwxr-x--- 1000/1000")          # ownership as the tar says
    assert all("2017-04-18 16:30" in ln for ln in lines.values()), listing
    assert out["demo-kernel"].read_bytes() == _fake_kernel()
    assert out["demo-cmdline"].read_text() == CMDLINE


def test_squashfs_stage1_initrd_has_init_and_busybox(built: dict[str, dict[str, Path]]) -> None:
    raw = zlib.decompress(built["kernel+squashfs"]["demo-squashfs-initrd.img"].read_bytes(), 31)
    assert raw.startswith(b"070701")
    for name in (b"init\0", b"bin/busybox\0", b"dev/console\0", b"etc/stage1-modules\0"):
        assert name in raw
    assert b"switch_root /newroot" in raw and b"mount -t squashfs" in raw
    assert b"TRAILER!!!" in raw and len(raw) % 512 == 0
    assert int(raw[46:54], 16) == SOURCE_DATE_EPOCH    # first entry's mtime field


@pytest.mark.parametrize("fmt", ["iso-efi", "raw-efi"])
def test_signed_efi_formats_carry_a_verifiable_uki_and_rebuild_identically(
        fmt: str, inputs: BootFiles, built: dict[str, dict[str, Path]], tmp_path: Path) -> None:
    """BootFiles.sign (Secure Boot): the UKI inside is signed by the db key, the rest is the same
    build, the signed bytes are the same twice; without it the format is untouched (see above)."""
    import shutil

    if shutil.which("sbsign") is None or shutil.which("openssl") is None:
        pytest.skip("sbsigntool and openssl")
    from lkit.build.signing import sign_efi, verify_efi
    from lkit.core.secureboot import generated_keys

    keys = generated_keys(tmp_path / "keys")
    signed_inputs = dataclasses.replace(inputs, sign=lambda src, out: sign_efi(src, out, keys))
    first = _build(signed_inputs, fmt, tmp_path / "one")
    second = _build(signed_inputs, fmt, tmp_path / "two")
    (name,) = first
    assert first[name].read_bytes() == second[name].read_bytes()
    assert first[name].read_bytes() != built[fmt][name].read_bytes()
    if fmt == "iso-efi":
        fat = _efi_fat_from_iso(first[name], tmp_path)
        uki = tmp_path / "BOOTX64.EFI"
        uki.write_bytes(_mtype(fat, "/EFI/BOOT/BOOTX64.EFI"))
        assert verify_efi(uki, keys.db)
        assert _uki.section_bytes(uki, ".linux") == _fake_kernel()
