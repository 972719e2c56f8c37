"""The QEMU command line for one VM, built as an argument list (never a shell string).

Every VM starts paused (-S) with QMP, the console and the command channel on unix sockets in a
private short directory, so the host connects before the first instruction runs and nothing the guest
prints is lost.

amd64: q35, two UARTs (ttyS0 console, ttyS1 command channel), IDE CD-ROM, VGA.
arm64: virt (GICv3), one PL011 UART (ttyAMA0, the console); the command channel is a virtconsole port
on virtio-serial-pci (/dev/hvc0 in the guest); CD-ROMs are scsi-cd on virtio-scsi-pci (virt has no
IDE; AAVMF boots from it); the display, when asked for, is virtio-gpu-pci; pvpanic is its PCI variant.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from lkit.core import arch as arch_table
from lkit.core.arch import AMD64, Arch
from lkit.core.formats import BootKind
from lkit.machine.accel import Accel
from lkit.machine.artifacts import BootTarget
from lkit.machine.lan import LanPort


def default_cpus(accel: Accel) -> int:
    """vCPUs when nobody asks: 2 under KVM, 1 under TCG.

    Under TCG two vCPUs (MTTCG, two host threads) boot the seed to its services in 25 s instead of
    36 s, but QEMU 7.2 livelocked such guests in about one boot in forty here: both vCPUs spinning in
    the kernel's SLUB allocator (kmem_cache_alloc, soft lockups, RCU stalls) until the boot timed out.
    One vCPU never did in hundreds of boots. `--lkit-cpus 2` / `cpus: 2` still ask for two.
    """
    return 2 if accel == Accel.KVM else 1


@dataclass(frozen=True)
class PortForward:
    host_port: int
    guest_port: int


@dataclass(frozen=True)
class Sockets:
    """Unix socket paths (keep the directory short: sun_path holds 108 bytes)."""

    qmp: Path
    console: Path
    channel: Path

    @classmethod
    def in_dir(cls, d: Path) -> "Sockets":
        s = cls(d / "qmp", d / "s0", d / "s1")
        if len(str(s.console)) > 100:
            raise ValueError(f"socket directory {d} is too long for unix sockets (108 bytes)")
        return s


@dataclass(frozen=True)
class QemuConfig:
    target: BootTarget
    sockets: Sockets
    accel: Accel = Accel.TCG
    memory_mb: int = 1024
    cpus: int = 1
    forwards: tuple[PortForward, ...] = ()
    firmware_code: Path | None = None       # EFI: OVMF CODE (read-only) ...
    firmware_vars: Path | None = None       # ... and this VM's private VARS copy
    secure_boot: bool = False               # SMM firmware (Secure Boot): smm=on, pflash writable only from SMM
    tpm: tuple[str, ...] = ()               # a TPM's QEMU arguments (lkit.machine.tpm.SwTpm.argv)
    qemu: str | None = None                 # the QEMU binary (default: the architecture's)
    vga: bool = True                        # a display device, so screendump has something to dump
    user_net: bool = True                   # the user-mode NIC (net0, eth0): host port forwards
    lan: LanPort | None = None              # a second NIC on a private segment (lkit.machine.lan)
    extra: tuple[str, ...] = field(default_factory=tuple)
    arch: Arch = arch_table.DEFAULT         # the guest's architecture (QEMU binary, machine, devices)


def _q(path: Path | str) -> str:
    """A path inside a QEMU option value (commas are doubled)."""
    return str(path).replace(",", ",,")


def uses_uefi(target: BootTarget, arch: Arch = AMD64) -> bool:
    """Whether this VM boots through UEFI firmware (EFI formats; every format on arm64)."""
    return target.efi or arch.uefi_always


def machine_type(target: BootTarget, arch: Arch = AMD64) -> str:
    return arch.qemu_machine


def _pflash(cfg: QemuConfig) -> list[str]:
    """UEFI firmware as two flash devices: the shared code read-only, this VM's own variable store."""
    if cfg.firmware_code is None or cfg.firmware_vars is None:
        raise ValueError("EFI target needs firmware_code and firmware_vars")
    return ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={_q(cfg.firmware_code)}",
            "-drive", f"if=pflash,format=raw,unit=1,file={_q(cfg.firmware_vars)}"]


def _direct_kernel(t: BootTarget) -> list[str]:
    """-kernel/-initrd/-append, and kernel+squashfs's root as a read-only virtio disk."""
    assert t.kernel is not None
    argv = ["-kernel", str(t.kernel)]
    if t.initrd is not None:
        argv += ["-initrd", str(t.initrd)]
    if t.cmdline:
        argv += ["-append", t.cmdline]
    if t.squashfs is not None:
        argv += ["-drive", f"file={_q(t.squashfs)},format=raw,if=virtio,readonly=on"]
    return argv


def _network(cfg: QemuConfig) -> list[str]:
    """The user-mode NIC with its port forwards, then the private segment's NIC: after net0, the guest
    names it eth1 (eth0 without the user-mode NIC)."""
    argv: list[str] = []
    if cfg.user_net:
        fwd = "".join(f",hostfwd=tcp:127.0.0.1:{p.host_port}-:{p.guest_port}" for p in cfg.forwards)
        argv += ["-netdev", f"user,id=net0{fwd}", "-device", "virtio-net-pci,netdev=net0,romfile="]
    elif cfg.forwards:
        raise ValueError("port forwards need the user-mode NIC")
    if cfg.lan is not None:
        argv += cfg.lan.argv()
    return argv


def build_argv(cfg: QemuConfig) -> list[str]:
    if cfg.arch.name != AMD64.name:
        return _build_argv_virt(cfg)
    t = cfg.target
    argv = [cfg.qemu or cfg.arch.qemu, "-nodefaults", "-no-user-config", "-display", "none", "-S",
            "-name", f"lkit-{t.format}",
            "-machine", f"{machine_type(t)},{'smm=on,' if cfg.secure_boot and t.efi else ''}accel={cfg.accel}",
            "-m", str(cfg.memory_mb), "-smp", str(cfg.cpus)]
    if cfg.accel == Accel.KVM:
        argv += ["-cpu", "host"]
    argv += ["-qmp", f"unix:{_q(cfg.sockets.qmp)},server=on,wait=off"]
    for ident, path in (("ser0", cfg.sockets.console), ("ser1", cfg.sockets.channel)):
        argv += ["-chardev", f"socket,id={ident},path={_q(path)},server=on,wait=off", "-serial", f"chardev:{ident}"]
    if t.efi:
        if cfg.secure_boot:     # only SMM code may write the variable store: the OS cannot forge keys
            argv += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
        argv += _pflash(cfg)
    if t.kind == BootKind.DIRECT:
        argv += _direct_kernel(t)
    elif t.kind == BootKind.CDROM:
        assert t.cdrom is not None
        argv += ["-drive", f"file={_q(t.cdrom)},format=raw,media=cdrom,readonly=on,if=ide,index=2",
                 "-boot", "order=d"]
    elif t.kind == BootKind.DISK:
        assert t.disk is not None
        argv += ["-drive", f"file={_q(t.disk)},format={t.disk_format},if=virtio,snapshot=on"]
    else:
        raise ValueError(f"unknown boot kind {t.kind}")
    argv += _network(cfg)
    argv += list(cfg.tpm)
    argv += ["-device", "virtio-rng-pci", "-device", "pvpanic"]
    if cfg.vga:
        argv += ["-device", "VGA"]
    argv += list(cfg.extra)
    return argv


def _build_argv_virt(cfg: QemuConfig) -> list[str]:
    """An Arm `virt` machine (arm64): PL011 console, virtconsole channel, virtio-pci everything."""
    t, arch = cfg.target, cfg.arch
    gic = "host" if cfg.accel == Accel.KVM else "3"
    argv = [cfg.qemu or arch.qemu, "-nodefaults", "-no-user-config", "-display", "none", "-S",
            "-name", f"lkit-{t.format}",
            "-machine", f"{arch.qemu_machine},gic-version={gic},accel={cfg.accel}",
            "-cpu", "host" if cfg.accel == Accel.KVM else arch.tcg_cpu,
            "-m", str(cfg.memory_mb), "-smp", str(cfg.cpus)]
    argv += ["-qmp", f"unix:{_q(cfg.sockets.qmp)},server=on,wait=off"]
    argv += ["-chardev", f"socket,id=ser0,path={_q(cfg.sockets.console)},server=on,wait=off",
             "-serial", "chardev:ser0",
             "-chardev", f"socket,id=ser1,path={_q(cfg.sockets.channel)},server=on,wait=off",
             "-device", "virtio-serial-pci,id=vser0",
             "-device", "virtconsole,chardev=ser1,bus=vser0.0,id=lkit-channel"]
    if uses_uefi(t, arch):
        argv += _pflash(cfg)
    if t.kind == BootKind.DIRECT:
        argv += _direct_kernel(t)
    elif t.kind == BootKind.CDROM:
        assert t.cdrom is not None
        argv += ["-device", "virtio-scsi-pci,id=scsi0",
                 "-drive", f"file={_q(t.cdrom)},format=raw,media=cdrom,readonly=on,if=none,id=cd0",
                 "-device", "scsi-cd,drive=cd0,bus=scsi0.0,bootindex=0"]
    elif t.kind == BootKind.DISK:
        assert t.disk is not None
        argv += ["-drive", f"file={_q(t.disk)},format={t.disk_format},if=none,id=disk0,snapshot=on",
                 "-device", "virtio-blk-pci,drive=disk0,bootindex=0"]
    else:
        raise ValueError(f"unknown boot kind {t.kind}")
    argv += _network(cfg)
    argv += [a.replace("tpm-tis,", "tpm-tis-device,") for a in cfg.tpm]   # virt has no ISA bus: the sysbus TIS
    argv += ["-device", "virtio-rng-pci", "-device", "pvpanic-pci"]
    if cfg.vga:
        argv += ["-device", "virtio-gpu-pci"]
    argv += list(cfg.extra)
    return argv


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (QEMU binds it; a lost race shows as a forwarding error)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
