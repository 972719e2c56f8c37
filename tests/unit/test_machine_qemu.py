"""The QEMU command line and boot targets (no VM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lkit.errors import MachineError
from lkit.machine.artifacts import boot_target, expand_prefix, guess_format
from lkit.machine.qemu import PortForward, QemuConfig, Sockets, build_argv, default_cpus, free_port


def _opt_values(argv: list[str], opt: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == opt]


def _cfg(target, tmp_path: Path, **kw) -> QemuConfig:
    return QemuConfig(target, Sockets.in_dir(tmp_path), **kw)


def test_direct_boot_command_line(tmp_path: Path) -> None:
    t = boot_target("kernel+initrd", [tmp_path / "x-kernel", tmp_path / "x-initrd.img"], cmdline="console=ttyS0")
    argv = build_argv(_cfg(t, tmp_path, forwards=(PortForward(2222, 22),), memory_mb=512, cpus=2))
    for flag in ("-nodefaults", "-no-user-config", "-S"):
        assert flag in argv
    assert _opt_values(argv, "-display") == ["none"]
    assert _opt_values(argv, "-machine") == ["q35,accel=tcg"]
    assert _opt_values(argv, "-m") == ["512"] and _opt_values(argv, "-smp") == ["2"]
    assert _opt_values(argv, "-kernel") == [str(tmp_path / "x-kernel")]
    assert _opt_values(argv, "-initrd") == [str(tmp_path / "x-initrd.img")]
    assert _opt_values(argv, "-append") == ["console=ttyS0"]
    assert _opt_values(argv, "-qmp") == [f"unix:{tmp_path}/qmp,server=on,wait=off"]
    chardevs = _opt_values(argv, "-chardev")
    assert chardevs == [f"socket,id=ser0,path={tmp_path}/s0,server=on,wait=off",
                        f"socket,id=ser1,path={tmp_path}/s1,server=on,wait=off"]
    assert _opt_values(argv, "-serial") == ["chardev:ser0", "chardev:ser1"]   # ttyS0, ttyS1 in order
    assert _opt_values(argv, "-netdev") == ["user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22"]
    devices = _opt_values(argv, "-device")
    assert "virtio-net-pci,netdev=net0,romfile=" in devices
    assert "virtio-rng-pci" in devices and "pvpanic" in devices
    assert not any("pflash" in v for v in _opt_values(argv, "-drive"))


def test_efi_disk_uses_pflash_and_snapshot(tmp_path: Path) -> None:
    t = boot_target("qcow2-efi", [tmp_path / "x-efi.qcow2"])
    argv = build_argv(_cfg(t, tmp_path, firmware_code=Path("/fw/CODE.fd"), firmware_vars=tmp_path / "VARS.fd"))
    drives = _opt_values(argv, "-drive")
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd" in drives
    assert f"if=pflash,format=raw,unit=1,file={tmp_path}/VARS.fd" in drives
    assert f"file={tmp_path}/x-efi.qcow2,format=qcow2,if=virtio,snapshot=on" in drives


def test_efi_without_firmware_is_refused(tmp_path: Path) -> None:
    t = boot_target("iso-efi", [tmp_path / "x-efi.iso"])
    with pytest.raises(ValueError):
        build_argv(_cfg(t, tmp_path))


def test_iso_is_a_read_only_cdrom_and_commas_are_escaped(tmp_path: Path) -> None:
    t = boot_target("iso-bios", [tmp_path / "a,b.iso"])
    argv = build_argv(_cfg(t, tmp_path))
    assert any(v.startswith(f"file={tmp_path}/a,,b.iso,format=raw,media=cdrom,readonly=on")
               for v in _opt_values(argv, "-drive"))


def test_kvm_uses_host_cpu(tmp_path: Path) -> None:
    t = boot_target("raw-bios", [tmp_path / "x-bios.img"])
    argv = build_argv(_cfg(t, tmp_path, accel="kvm"))
    assert _opt_values(argv, "-cpu") == ["host"] and _opt_values(argv, "-machine") == ["q35,accel=kvm"]


def test_socket_dir_must_be_short(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Sockets.in_dir(tmp_path / ("x" * 120))


@pytest.mark.parametrize(("fmt", "files", "kind", "efi", "attr"), [
    ("kernel+initrd", ["n-initrd.img", "n-kernel", "n-cmdline"], "direct", False, "initrd"),
    ("iso-bios", ["n.iso", "n-efi.iso"], "cdrom", False, "cdrom"),
    ("iso-efi", ["n-efi.iso", "n.iso", "n-efi-initrd.iso"], "cdrom", True, "cdrom"),
    ("iso-efi-initrd", ["n-efi-initrd.iso", "n-efi.iso"], "cdrom", True, "cdrom"),
    ("raw-bios", ["n-bios.img"], "disk", False, "disk"),
    ("raw-efi", ["n-efi.img"], "disk", True, "disk"),
    ("qcow2-bios", ["n.qcow2", "n-efi.qcow2"], "disk", False, "disk"),
    ("qcow2-efi", ["n-efi.qcow2"], "disk", True, "disk"),
    ("kernel+squashfs", ["n-squashfs.img", "n-kernel", "n-cmdline"], "direct", False, "squashfs"),
])
def test_boot_targets_from_linuxkit_names(tmp_path: Path, fmt: str, files: list[str], kind: str, efi: bool,
                                          attr: str) -> None:
    (tmp_path / "n-cmdline").write_text("console=ttyS0 quiet\n")
    t = boot_target(fmt, [tmp_path / f for f in files])
    assert (t.kind, t.efi) == (kind, efi)
    assert getattr(t, attr) == tmp_path / files[0]
    if kind == "direct":
        assert t.kernel == tmp_path / "n-kernel"
        assert t.cmdline == "console=ttyS0 quiet"


def test_all_formats_in_one_directory_do_not_clash(tmp_path: Path) -> None:
    names = ["m-kernel", "m-initrd.img", "m-cmdline", "m.iso", "m-efi.iso", "m-efi-initrd.iso", "m-bios.img",
             "m-efi.img", "m.qcow2", "m-efi.qcow2", "m-squashfs.img", "m-squashfs-initrd.img"]
    for n in names:
        (tmp_path / n).write_text("")
    files = [tmp_path / n for n in names]
    assert boot_target("kernel+initrd", files).initrd == tmp_path / "m-initrd.img"
    sq = boot_target("kernel+squashfs", files)
    assert (sq.initrd, sq.squashfs) == (tmp_path / "m-squashfs-initrd.img", tmp_path / "m-squashfs.img")
    assert boot_target("iso-bios", files).cdrom == tmp_path / "m.iso"
    assert boot_target("qcow2-bios", files).disk == tmp_path / "m.qcow2"


def test_missing_file_names_the_expected_name(tmp_path: Path) -> None:
    with pytest.raises(MachineError, match=r"NAME-efi\.iso"):
        boot_target("iso-efi", [tmp_path / "n.iso"])


def test_unbootable_format(tmp_path: Path) -> None:
    with pytest.raises(MachineError, match="cannot be booted"):
        boot_target("tar", [tmp_path / "n.tar"])


@pytest.mark.parametrize(("names", "fmt"), [
    (["n-kernel", "n-initrd.img", "n-cmdline"], "kernel+initrd"),
    (["n.iso"], "iso-bios"), (["n-efi.iso"], "iso-efi"), (["n-efi-initrd.iso"], "iso-efi-initrd"),
    (["n-efi.img"], "raw-efi"), (["n-bios.img"], "raw-bios"), (["n-efi.qcow2"], "qcow2-efi"),
    (["n.qcow2"], "qcow2-bios"),
    (["n-kernel", "n-squashfs.img"], "kernel+squashfs"),
])
def test_guess_format(names: list[str], fmt: str) -> None:
    assert guess_format(names) == fmt


def test_guess_format_unknown() -> None:
    with pytest.raises(MachineError, match="--format"):
        guess_format(["notes.txt"])


def test_expand_prefix(tmp_path: Path) -> None:
    for n in ("lk-kernel", "lk-initrd.img", "lk-cmdline", "other-kernel"):
        (tmp_path / n).write_text("")
    assert [p.name for p in expand_prefix(tmp_path / "lk")] == ["lk-cmdline", "lk-initrd.img", "lk-kernel"]


def test_free_port_is_bindable() -> None:
    import socket
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_vcpus_by_accelerator(tmp_path: Path) -> None:
    """Two vCPUs under KVM; one under TCG, where QEMU 7.2 livelocked SMP guests here."""
    assert (default_cpus("kvm"), default_cpus("tcg")) == (2, 1)
    t = boot_target("kernel+initrd", [tmp_path / "x-kernel", tmp_path / "x-initrd.img"])
    assert _opt_values(build_argv(_cfg(t, tmp_path, cpus=default_cpus("tcg"))), "-smp") == ["1"]
