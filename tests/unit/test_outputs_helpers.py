"""The helpers behind the bootable formats: tool lookup and errors, UKI layout, partition tables,
module dependencies, the stage-1 cpio. Fast, no VM."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest

from lkit.build.outputs import _bootcfg, _disk, _modules, _tools, _uki, kernel_squashfs
from lkit.build.outputs._cpio import CpioWriter
from lkit.build.outputs.base import SOURCE_DATE_EPOCH, get_format
from lkit.errors import BuildError, InfraError


def test_missing_tool_is_infra_error_naming_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    with pytest.raises(InfraError) as err:
        _tools.run(["xorriso", "-version"])
    assert "xorriso" in err.value.message and err.value.hint == "install it: apt-get install xorriso"
    with pytest.raises(InfraError) as err2:
        _tools.tool("mksquashfs")
    assert "squashfs-tools" in (err2.value.hint or "")


def test_missing_data_file_names_its_package(tmp_path: Path) -> None:
    with pytest.raises(InfraError) as err:
        _tools.data_file(tmp_path / "isolinux.bin", "isolinux")
    assert "apt-get install isolinux" in str(err.value)


def test_failed_command_is_build_error_with_stderr(tmp_path: Path) -> None:
    with pytest.raises(BuildError) as err:
        _tools.run(["mcopy", "-i", tmp_path / "missing.img", tmp_path / "x", "::/x"])
    assert "mcopy failed with exit code" in err.value.message
    assert err.value.hint and err.value.hint.startswith("command: ")


def test_reproducible_env_pins_time_and_can_drop() -> None:
    env = _tools.reproducible_env()
    assert env["SOURCE_DATE_EPOCH"] == str(SOURCE_DATE_EPOCH) and env["TZ"] == "UTC"
    assert "SOURCE_DATE_EPOCH" not in _tools.reproducible_env(drop=["SOURCE_DATE_EPOCH"])


def test_format_registry_efi_flags() -> None:
    efi = {name: get_format(name).efi for name in ("iso-bios", "iso-efi", "iso-efi-initrd", "raw-bios",
                                                     "raw-efi", "qcow2-bios", "qcow2-efi", "kernel+squashfs")}
    assert efi == {"iso-bios": False, "iso-efi": True, "iso-efi-initrd": True, "raw-bios": False,
                   "raw-efi": True, "qcow2-bios": False, "qcow2-efi": True, "kernel+squashfs": False}


def test_uki_sections_follow_each_other_and_header_is_fixed(tmp_path: Path) -> None:
    kernel = tmp_path / "kernel"
    kernel.write_bytes(b"K" * 3_000_001)
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"I" * 12345)
    out = _uki.make_uki(kernel=kernel, initrd=initrd, cmdline="console=ttyS0", name="demo",
                        out=tmp_path / "uki.efi", workdir=tmp_path / "w")
    sections = {s.name: s for s in _uki.pe_sections(out)}
    added = [sections[n] for n in (".osrel", ".cmdline", ".linux", ".initrd")]
    stub_end = max(s.vma + s.vsize for s in _uki.pe_sections(Path(_uki.STUB)))
    assert added[0].vma >= stub_end
    for before, after in zip(added, added[1:]):
        assert after.vma >= before.vma + before.vsize       # no overlap, in order
    assert sections[".linux"].vma % 0x200000 == 0
    assert all(s.vma % 0x1000 == 0 for s in added)
    assert _uki.section_bytes(out, ".linux") == kernel.read_bytes()
    assert _uki.section_bytes(out, ".initrd") == initrd.read_bytes()
    assert _uki.section_bytes(out, ".cmdline") == b"console=ttyS0\0"
    osrel = _uki.section_bytes(out, ".osrel").decode()
    assert "IMAGE_ID=demo\n" in osrel and "LKIT_STUB_VERSION=252" in osrel
    data = out.read_bytes()
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    assert struct.unpack_from("<I", data, pe + 8)[0] == SOURCE_DATE_EPOCH
    assert struct.unpack_from("<I", data, pe + 88)[0] == _uki.pe_checksum(data, pe + 88)


def test_pe_checksum_matches_the_stub_as_shipped() -> None:
    data = Path(_uki.STUB).read_bytes()
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    assert _uki.pe_checksum(data, pe + 88) == struct.unpack_from("<I", data, pe + 88)[0]


def test_disk_layout_and_mbr_entry() -> None:
    layout = _disk.layout_for(8 << 20)
    assert layout.part_start == 2048 and layout.part_sectors == 16384
    assert layout.total_sectors * 512 % (1 << 20) == 0
    assert layout.total_sectors >= 2048 + 16384 + 33
    sector = _disk.mbr(layout, boot_code=b"\xeb" * 500, signature=0x11223344, ptype=0x0C, bootable=True)
    assert len(sector) == 512 and sector[510:] == b"\x55\xaa"
    assert sector[:440] == b"\xeb" * 440 and struct.unpack_from("<I", sector, 440)[0] == 0x11223344
    assert sector[446] == 0x80 and sector[450] == 0x0C
    assert struct.unpack_from("<II", sector, 454) == (2048, 16384)
    assert sector[447:450] == bytes([32, 33, 0])   # CHS of LBA 2048 with 255 heads x 63 sectors


def test_mbr_type_follows_the_fat_variant() -> None:
    sector = bytearray(512)
    sector[0x36:0x3B] = b"FAT16"
    assert _disk.mbr_type_for(bytes(sector)) == 0x0E
    sector[0x36:0x3B] = b"FAT12"
    assert _disk.mbr_type_for(bytes(sector)) == 0x01
    sector[0x52:0x57] = b"FAT32"
    assert _disk.mbr_type_for(bytes(sector)) == 0x0C


def test_gpt_guids_derive_from_content(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"a" * 4096)
    b.write_bytes(b"b" * 4096)
    da = _disk.write_disk(tmp_path / "a.img", a, scheme="gpt").read_bytes()
    db = _disk.write_disk(tmp_path / "b.img", b, scheme="gpt").read_bytes()
    again = _disk.write_disk(tmp_path / "a2.img", a, scheme="gpt").read_bytes()
    assert da == again
    assert da[512 + 56: 512 + 72] != db[512 + 56: 512 + 72]        # disk GUIDs differ
    assert da[2048 * 512: 2048 * 512 + 4096] == b"a" * 4096
    with pytest.raises(ValueError):
        _disk.write_disk(tmp_path / "c.img", a, scheme="apm")


def _fake_module(tmp_path: Path, name: str, depends: str) -> bytes:
    """A real ELF64 object with a .modinfo section, made by objcopy (what .ko files carry)."""
    info = tmp_path / f"{name}.modinfo"
    info.write_bytes(f"license=GPL\0depends={depends}\0name={name}\0".encode())
    out = tmp_path / f"{name}.ko"
    subprocess.run(["objcopy", "-I", "binary", "-O", "elf64-x86-64", "--rename-section",
                    ".data=.modinfo", str(info), str(out)], check=True, timeout=60)
    return out.read_bytes()


def _tar_with(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return path


def test_modules_load_order_from_modinfo(tmp_path: Path) -> None:
    base = "lib/modules/6.1.0-test/kernel/"
    tar_path = _tar_with(tmp_path / "root.tar", {
        base + "fs/squashfs/squashfs.ko": _fake_module(tmp_path, "squashfs", ""),
        base + "drivers/block/virtio_blk.ko": _fake_module(tmp_path, "virtio_blk", "virtio,virtio_ring"),
        base + "drivers/virtio/virtio.ko": _fake_module(tmp_path, "virtio", ""),
        base + "drivers/virtio/virtio_ring.ko": _fake_module(tmp_path, "virtio_ring", ""),
        base + "drivers/virtio/virtio_pci.ko": _fake_module(tmp_path, "virtio_pci",
                                                            "virtio,virtio_ring,virtio_pci_modern_dev"),
        base + "drivers/virtio/virtio_pci_modern_dev.ko": _fake_module(tmp_path, "virtio_pci_modern_dev", ""),
    })
    with tarfile.open(tar_path) as tar:
        available = _modules.modules_in_tar(tar)
    assert available["virtio_blk"].depends == ("virtio", "virtio_ring")
    order = [m.name for m in _modules.load_order(kernel_squashfs.STAGE1_MODULES + ["nonexistent"], available)]
    assert order == ["virtio", "virtio_ring", "virtio_pci_modern_dev", "virtio_pci", "virtio_blk", "squashfs"]
    assert _modules.modinfo(b"not an elf") == {}


def test_stage1_prefers_the_roots_static_busybox(tmp_path: Path) -> None:
    static = Path("/bin/busybox").read_bytes()
    assert kernel_squashfs._is_static_elf(static)
    assert not kernel_squashfs._is_static_elf(Path("/bin/ls").read_bytes())
    marked = static + b"LKIT-ROOT-COPY"
    with tarfile.open(_tar_with(tmp_path / "r.tar", {"bin/busybox": marked})) as tar:
        initrd = zlib.decompress(kernel_squashfs.stage1_initrd(tar), 31)
    assert b"LKIT-ROOT-COPY" in initrd
    with tarfile.open(_tar_with(tmp_path / "s.tar", {"etc/x": b"x"})) as tar:
        initrd = zlib.decompress(kernel_squashfs.stage1_initrd(tar), 31)
    assert b"LKIT-ROOT-COPY" not in initrd and static[:4096] in initrd


def test_cpio_is_readable_by_gnu_cpio(tmp_path: Path) -> None:
    cpio = CpioWriter()
    cpio.file("b/c/file.txt", b"hello", 0o600)
    cpio.symlink("a-link", "b/c/file.txt")
    cpio.chardev("dev/console", 5, 1)
    listing = subprocess.run(["cpio", "-itv", "--quiet"], input=cpio.to_bytes(), capture_output=True,
                             timeout=60, check=True).stdout.decode()
    names = [ln.split()[-1] if "->" not in ln else ln.split()[-3] for ln in listing.splitlines()]
    assert names == ["a-link", "b", "b/c", "b/c/file.txt", "dev", "dev/console"]
    assert "-rw-------" in listing and "crw-------" in listing and "Apr 18  2017" in listing
    assert cpio.gzip() == cpio.gzip()


def test_boot_config_keeps_the_command_line_on_one_line() -> None:
    cfg = _bootcfg.syslinux_cfg("console=ttyS0\n  quiet")
    assert cfg.splitlines()[0] == "SERIAL 0 115200"
    assert "  APPEND console=ttyS0 quiet\n" in cfg
    assert "options console=ttyS0 quiet\n" in _bootcfg.loader_entry("console=ttyS0\nquiet")


def test_loader_versions_name_installed_debian_packages() -> None:
    versions = _bootcfg.loader_versions("iso-bios")
    assert set(versions) == {"isolinux", "syslinux-common"}
    assert all(v.startswith("3:6.04") for v in versions.values()), versions
    assert _bootcfg.loader_versions("tar") == {}
