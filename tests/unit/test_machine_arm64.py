"""arm64 in the machine layer and the EFI writers, without booting: the QEMU command line of a `virt`
guest, firmware and accelerator choice, the test guest's parts, the aa64 unified kernel image, and
the formats refused for arm64."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from lkit.build.outputs import _uki, kernel_squashfs
from lkit.core import arch as arch_table
from lkit.core.arch import AMD64, ARM64
from lkit.errors import BuildError, InfraError
from lkit.machine import accel
from lkit.machine.artifacts import boot_target
from lkit.machine.firmware import choose, find_ovmf
from lkit.machine.qemu import PortForward, QemuConfig, Sockets, build_argv, uses_uefi

from tests.unit.test_machine_firmware import desc


def _opt_values(argv: list[str], opt: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == opt]


def _argv(tmp_path: Path, fmt: str, files: list[str], **kw: object) -> list[str]:
    target = boot_target(fmt, [tmp_path / f for f in files], cmdline="console=ttyAMA0")
    cfg = QemuConfig(target, Sockets.in_dir(tmp_path), arch=ARM64, firmware_code=Path("/fw/AAVMF_CODE.fd"),
                     firmware_vars=tmp_path / "VARS.fd", **kw)  # type: ignore[arg-type]
    return build_argv(cfg)


def test_arm64_direct_boot_argv_shape(tmp_path: Path) -> None:
    argv = _argv(tmp_path, "kernel+initrd", ["n-kernel", "n-initrd.img"], forwards=(PortForward(2222, 22),))
    assert argv[0] == "qemu-system-aarch64"
    assert _opt_values(argv, "-machine") == ["virt,gic-version=3,accel=tcg"]
    assert _opt_values(argv, "-cpu") == ["cortex-a57"]
    # the one PL011 is the console (ttyAMA0); the channel is a virtconsole port (/dev/hvc0)
    assert _opt_values(argv, "-serial") == ["chardev:ser0"]
    assert _opt_values(argv, "-chardev") == [f"socket,id=ser0,path={tmp_path}/s0,server=on,wait=off",
                                             f"socket,id=ser1,path={tmp_path}/s1,server=on,wait=off"]
    devices = _opt_values(argv, "-device")
    assert "virtio-serial-pci,id=vser0" in devices
    assert "virtconsole,chardev=ser1,bus=vser0.0,id=lkit-channel" in devices
    assert {"virtio-net-pci,netdev=net0,romfile=", "virtio-rng-pci", "pvpanic-pci", "virtio-gpu-pci"} <= set(devices)
    assert not {"VGA", "pvpanic"} & set(devices)        # ISA/legacy devices virt does not have
    # direct boots go through AAVMF too (ACPI: the power button), with the kernel from -kernel
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/fw/AAVMF_CODE.fd" in _opt_values(argv, "-drive")
    assert _opt_values(argv, "-kernel") == [str(tmp_path / "n-kernel")]
    assert _opt_values(argv, "-append") == ["console=ttyAMA0"]
    assert _opt_values(argv, "-netdev") == ["user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22"]


def test_arm64_cdrom_is_scsi_cd_and_disks_are_virtio_with_bootindex(tmp_path: Path) -> None:
    iso = _argv(tmp_path, "iso-efi", ["n-efi.iso"])
    assert "virtio-scsi-pci,id=scsi0" in _opt_values(iso, "-device")
    assert "scsi-cd,drive=cd0,bus=scsi0.0,bootindex=0" in _opt_values(iso, "-device")
    assert not any("if=ide" in d for d in _opt_values(iso, "-drive"))
    disk = _argv(tmp_path, "qcow2-efi", ["n-efi.qcow2"], vga=False)
    assert f"file={tmp_path}/n-efi.qcow2,format=qcow2,if=none,id=disk0,snapshot=on" in _opt_values(disk, "-drive")
    assert "virtio-blk-pci,drive=disk0,bootindex=0" in _opt_values(disk, "-device")
    assert "virtio-gpu-pci" not in _opt_values(disk, "-device")


def test_arm64_kvm_uses_host_cpu_and_gic(tmp_path: Path) -> None:
    argv = _argv(tmp_path, "raw-efi", ["n-efi.img"], accel="kvm")
    assert _opt_values(argv, "-cpu") == ["host"]
    assert _opt_values(argv, "-machine") == ["virt,gic-version=host,accel=kvm"]


def test_arm64_secure_boot_has_no_smm_and_needs_firmware(tmp_path: Path) -> None:
    """Arm has no SMM: AAVMF's Secure Boot is the same machine line with its enrolled variable store."""
    t = boot_target("iso-efi", [tmp_path / "n-efi.iso"])
    kw = dict(arch=ARM64, firmware_code=Path("/c"), firmware_vars=Path("/v"))
    secure = build_argv(QemuConfig(t, Sockets.in_dir(tmp_path), secure_boot=True, **kw))
    assert secure == build_argv(QemuConfig(t, Sockets.in_dir(tmp_path), **kw))
    assert not any("smm" in a or "cfi.pflash01" in a for a in secure)
    with pytest.raises(ValueError, match="firmware"):
        build_argv(QemuConfig(t, Sockets.in_dir(tmp_path), arch=ARM64))
    assert uses_uefi(boot_target("kernel+initrd", [tmp_path / "n-kernel", tmp_path / "n-initrd.img"]), ARM64)
    assert not uses_uefi(boot_target("kernel+initrd", [tmp_path / "n-kernel", tmp_path / "n-initrd.img"]), AMD64)


def _store(path: Path, formatted: bool) -> Path:
    data = bytearray(0x1000)
    if formatted:
        data[0x28:0x2C] = b"_FVH"
    path.write_bytes(bytes(data))
    return path


def test_arm64_secure_boot_firmware_needs_no_smm_and_falls_back_to_a_vendor_store(tmp_path: Path) -> None:
    """Debian bookworm's AAVMF: the empty-store descriptor names a missing code file and an unformatted
    store, so lkit takes the Microsoft-enrolled pair and replaces the keys (`vendor_keys`)."""
    fwdir = tmp_path / "fw"
    fwdir.mkdir()
    code = tmp_path / "AAVMF_CODE.fd"
    code.write_bytes(b"c")
    empty, ms = _store(tmp_path / "AAVMF_VARS.fd", False), _store(tmp_path / "AAVMF_VARS.ms.fd", True)
    aarch64 = dict(arch="aarch64", machines=["virt-*"])
    (fwdir / "40-enrolled.json").write_text(json.dumps(desc(code, ms, features=["secure-boot", "enrolled-keys"],
                                                            **aarch64)))
    (fwdir / "50-secure.json").write_text(json.dumps(desc(tmp_path / "AAVMF_CODE.secboot.fd", empty,
                                                          features=["secure-boot"], **aarch64)))
    (fwdir / "60-plain.json").write_text(json.dumps(desc(code, empty, **aarch64)))
    fw = find_ovmf([fwdir], secure_boot=True, arch=ARM64)
    assert (fw.vars_template, fw.secure_boot, fw.vendor_keys) == (ms, True, True)
    assert not find_ovmf([fwdir], arch=ARM64).secure_boot
    # the empty store preferred once its code exists, but not while it is unformatted (all zeros)
    (tmp_path / "AAVMF_CODE.secboot.fd").write_bytes(b"s")
    assert find_ovmf([fwdir], secure_boot=True, arch=ARM64).vendor_keys
    _store(empty, True)
    fw = find_ovmf([fwdir], secure_boot=True, arch=ARM64)
    assert (fw.code.name, fw.vendor_keys) == ("AAVMF_CODE.secboot.fd", False)
    # amd64 still needs SMM
    smm_less = desc(code, ms, features=["secure-boot"])
    assert not choose(smm_less, secure_boot=True) and choose(dict(smm_less, targets=[
        {"architecture": "aarch64", "machines": ["virt-*"]}]), secure_boot=True, arch=ARM64)


def test_vendor_keys_are_deleted_before_the_suites_are_enrolled(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from lkit.core.secureboot import KeySet
    from lkit.machine import firmware

    keys = KeySet(*(tmp_path / n for n in ("pk.crt", "kek.crt", "db.crt", "db.key")))
    for p in (keys.pk, keys.kek, keys.db, keys.db_key):
        p.write_text(p.name)
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **kw: object) -> SimpleNamespace:
        calls.append(argv)
        Path(argv[argv.index("--output") + 1]).write_bytes(b"vars")
        return SimpleNamespace(returncode=0, stdout="", stderr="")

    monkeypatch.setattr(firmware.subprocess, "run", fake_run)
    for vendor in (False, True):
        fw = firmware.Firmware(tmp_path / "c", tmp_path / f"V{vendor}.fd", tmp_path / "d.json",
                               secure_boot=True, vendor_keys=vendor)
        firmware.enrolled_vars(fw, keys, tmp_path / "cache")
    plain, vendor_argv = calls
    assert "--delete" not in plain
    deleted = [vendor_argv[i + 1] for i, a in enumerate(vendor_argv) if a == "--delete"]
    assert deleted == ["PK", "KEK", "db", "dbx"]
    assert vendor_argv.index("--delete") < vendor_argv.index("--set-pk")


def test_amd64_argv_is_unchanged_by_the_arch_parameter(tmp_path: Path) -> None:
    t = boot_target("iso-efi", [tmp_path / "n-efi.iso"])
    kw = dict(firmware_code=Path("/c"), firmware_vars=Path("/v"))
    assert build_argv(QemuConfig(t, Sockets.in_dir(tmp_path), **kw)) == \
        build_argv(QemuConfig(t, Sockets.in_dir(tmp_path), arch=AMD64, qemu="qemu-system-x86_64", **kw))
    assert build_argv(QemuConfig(t, Sockets.in_dir(tmp_path), **kw))[0] == "qemu-system-x86_64"


def test_firmware_choice_is_per_architecture(tmp_path: Path) -> None:
    c, v = tmp_path / "c", tmp_path / "v"
    aavmf = desc(c, v, arch="aarch64", machines=["virt-*"])
    assert choose(aavmf, arch=ARM64) and not choose(aavmf)
    assert not choose(desc(c, v), arch=ARM64)                        # x86_64/q35 is not for arm64
    fwdir = tmp_path / "fw"
    fwdir.mkdir()
    for n in ("c1", "v1", "c2", "v2"):
        (tmp_path / n).write_bytes(n.encode())
    (fwdir / "50-ovmf.json").write_text(json.dumps(desc(tmp_path / "c1", tmp_path / "v1")))
    (fwdir / "60-aavmf.json").write_text(json.dumps(desc(tmp_path / "c2", tmp_path / "v2", arch="aarch64",
                                                         machines=["virt-*"])))
    assert find_ovmf([fwdir], arch=ARM64).code == tmp_path / "c2"
    assert find_ovmf([fwdir]).code == tmp_path / "c1"
    with pytest.raises(InfraError, match="qemu-efi-aarch64"):
        find_ovmf([tmp_path / "none"], arch=ARM64)


@pytest.mark.skipif(not Path("/usr/share/qemu/firmware/60-edk2-aarch64.json").is_file(), reason="no AAVMF")
def test_this_host_has_debian_aavmf() -> None:
    fw = find_ovmf(arch=ARM64)
    assert fw.code.name == "AAVMF_CODE.fd" and fw.vars_template.name == "AAVMF_VARS.fd"


def test_accel_is_tcg_for_a_foreign_architecture(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "probe_kvm", lambda *a, **k: pytest.fail("probed"))
    monkeypatch.setattr(arch_table, "host", lambda: AMD64)
    monkeypatch.delenv(accel.MULTIPLIER_ENV, raising=False)
    choice = accel.resolve("auto", arch=ARM64)
    assert choice.accel == "tcg" and "arm64" in choice.reason
    assert accel.resolve("tcg", arch=ARM64).accel == "tcg"
    with pytest.raises(InfraError, match="KVM cannot run arm64"):
        accel.resolve("kvm", arch=ARM64)


def test_accel_probes_kvm_for_the_host_architecture(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """On an arm64 host, arm64 guests get the bounded KVM probe with virt's own machine line."""
    monkeypatch.setattr(arch_table, "host", lambda: ARM64)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(accel, "qemu_version", lambda qemu: "QEMU emulator version 7.2.0")
    monkeypatch.setattr(accel.os.path, "exists", lambda p: True)
    monkeypatch.setattr(accel.os, "access", lambda p, m: True)
    seen: list[object] = []
    monkeypatch.setattr(accel, "probe_kvm", lambda kernel, qemu, **kw: seen.append((qemu, kw)) or (True, "ok"))
    kernel = tmp_path / "k"
    kernel.write_bytes(b"k")
    assert accel.resolve("auto", kernel=kernel, arch=ARM64, use_cache=False).accel == "kvm"
    assert seen == [("qemu-system-aarch64", {"arch": ARM64})]


def test_uki_for_aa64_has_the_arm_machine_and_the_sections(tmp_path: Path) -> None:
    if shutil.which(ARM64.objcopy) is None:
        pytest.skip(f"{ARM64.objcopy} not installed")
    try:
        stub = _uki.package_file(_uki.stub_path(ARM64), _uki.STUB_PACKAGE, ARM64)
    except InfraError as exc:
        pytest.skip(f"no arm64 systemd stub: {exc.message}")
    assert _uki.pe_machine(stub) == 0xAA64
    # a gzip-compressed "kernel": the UKI carries it decompressed (the stub starts a PE image)
    image = b"MZ" + bytes(range(256)) * 64
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(gzip.compress(image, mtime=0))
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"initrd" * 100)
    outs = []
    for n in (1, 2):
        outs.append(_uki.make_uki(kernel=kernel, initrd=initrd, cmdline="console=ttyAMA0", name="demo",
                                  out=tmp_path / f"BOOTAA64.{n}.EFI", workdir=tmp_path / f"w{n}", arch=ARM64))
    assert outs[0].read_bytes() == outs[1].read_bytes()            # reproducible
    assert _uki.pe_machine(outs[0]) == 0xAA64
    names = [s.name for s in _uki.pe_sections(outs[0])]
    assert [n for n in names if n in (".osrel", ".cmdline", ".linux", ".initrd")] == \
        [".osrel", ".cmdline", ".linux", ".initrd"]
    assert _uki.section_bytes(outs[0], ".linux") == image
    assert _uki.section_bytes(outs[0], ".cmdline") == b"console=ttyAMA0\0"


def test_efi_kernel_keeps_a_pe_image(tmp_path: Path) -> None:
    k = tmp_path / "Image"
    k.write_bytes(b"MZ...")
    assert _uki.efi_kernel(k, tmp_path / "w") == k


def test_stage1_busybox_must_be_of_the_images_architecture(tmp_path: Path) -> None:
    x86 = Path("/bin/busybox")
    if not x86.is_file():
        pytest.skip("no busybox-static on the host")
    data = x86.read_bytes()
    assert kernel_squashfs._is_static_elf(data, AMD64)
    assert not kernel_squashfs._is_static_elf(data, ARM64)
    root = tmp_path / "root.tar"
    with tarfile.open(root, "w") as tar:
        tar.add(x86, "bin/busybox")
    with tarfile.open(root) as tar:
        assert kernel_squashfs._root_busybox(tar, AMD64) == data
        assert kernel_squashfs._root_busybox(tar, ARM64) is None       # an x86 busybox is no use on arm64


@pytest.mark.parametrize("fmt", sorted(arch_table.BIOS_FORMATS))
def test_bios_formats_are_refused_for_arm64(fmt: str) -> None:
    from lkit.build import builder
    spec = SimpleNamespace(name="demo", sources=[Path("demo.yml")])
    with pytest.raises(BuildError, match=f"cannot build {fmt} for arm64"):
        builder.build(spec, [fmt], Path("/nonexistent"), arch=ARM64)  # type: ignore[arg-type]
    assert ARM64.refuse_format("iso-efi") is None and AMD64.refuse_format(fmt) is None


def test_arch_facts_for_the_machine_layer() -> None:
    assert (ARM64.qemu, ARM64.qemu_machine, ARM64.tcg_cpu, ARM64.console, ARM64.channel) == \
        ("qemu-system-aarch64", "virt", "cortex-a57", "ttyAMA0", "hvc0")
    assert (AMD64.console, AMD64.channel, AMD64.pe_machine, ARM64.pe_machine) == ("ttyS0", "ttyS1", 0x8664, 0xAA64)
    assert ARM64.efi_boot_file == "EFI/BOOT/BOOTAA64.EFI"


def test_init_picks_the_channel_and_console_by_uname(tmp_path: Path) -> None:
    lib = Path(__file__).resolve().parents[2] / "fixtures/pkgs/init/files/usr/lib/lkit/lib.sh"
    dash = shutil.which("dash") or "/bin/sh"
    for machine, want in (("x86_64", "ttyS0 /dev/ttyS1"), ("aarch64", "ttyAMA0 /dev/hvc0")):
        bindir = tmp_path / machine
        bindir.mkdir()
        (bindir / "uname").write_text(f"#!/bin/sh\necho {machine}\n")
        (bindir / "uname").chmod(0o755)
        out = subprocess.run([dash, "-c", f'. {lib}; lkit_devices; echo "$LKIT_CONSOLE_TTY $LKIT_CHANNEL"'],
                             env={"PATH": f"{bindir}:/usr/bin:/bin"}, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == want
