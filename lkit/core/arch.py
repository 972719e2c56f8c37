"""The CPU architectures lkit builds and boots, and every fact that differs between them.

One table, read by the image store (which platform of an index), `lkit pkg build` (which Debian
architecture, which ELF machine, which library directories), the output writers (which EFI names,
which formats exist), the machine layer (which QEMU, machine, CPU, firmware, console) and the plugin
(which test ids, which report keys), so an architecture's facts cannot disagree between them.

Names are LinuxKit's and OCI's (`amd64`, `arm64`), not the kernel's (`x86_64`, `aarch64`).
"""

from __future__ import annotations

import platform as _platform
from dataclasses import dataclass

from lkit.errors import SpecError

BIOS_FORMATS = frozenset({"iso-bios", "raw-bios", "qcow2-bios"})
_ALL_FORMATS = frozenset({"kernel+initrd", "tar", "tar-kernel-initrd", "iso-bios", "iso-efi", "iso-efi-initrd",
                          "raw-bios", "raw-efi", "qcow2-bios", "qcow2-efi", "kernel+squashfs"})


@dataclass(frozen=True)
class Arch:
    name: str                 # LinuxKit/OCI architecture: amd64, arm64
    platform: str             # OCI platform an image index is resolved to
    kernel_name: str          # `uname -m` in a guest of this architecture
    debian: str               # Debian architecture of the packages fixture images are built from
    gnu_triplet: str          # Debian's multiarch library directory name
    elf_machine: int          # e_machine of this architecture's ELF binaries
    elf_machine_name: str     # what readelf calls that machine (for error messages)
    qemu_user: str            # qemu-user's emulator (Debian package qemu-user), to run a foreign tool
    kernel_format: str        # what /kernel of lkit's kernel image holds: amd64 bzImage; arm64 Image, the
                              # uncompressed arm64 Image (a PE/COFF EFI application) that Debian ships as
                              # vmlinuz (LinuxKit's own arm64 kernel image has Image.gz there)
    qemu: str                 # the QEMU binary
    qemu_package: str         # the Debian package that has it
    qemu_machine: str         # -machine
    tcg_cpu: str              # -cpu under TCG (KVM uses `host`)
    console: str              # the first serial port's device in the guest (the console)
    efi_name: str             # EFI removable-media suffix: BOOT{X64,AA64}.EFI, linux{x64,aa64}.efi.stub
    firmware_package: str     # the Debian package with this architecture's UEFI firmware
    formats: frozenset[str]   # the output formats lkit builds for it
    tcg_boot_factor: float    # its guests' boot time under TCG on an amd64 host over an amd64 guest's
                              # (bench/boot.py; shards weigh groups with no baseline by it)

    # -- the machine layer and the EFI writers --
    firmware_machine: str = "pc-q35-7.2"   # the machine type matched against QEMU's firmware descriptors
    channel: str = "ttyS1"    # the guest device of the command channel (a second UART, or a virtio console)
    pe_machine: int = 0x8664  # PE/COFF Machine of this architecture's EFI binaries
    objcopy: str = "objcopy"  # an objcopy that writes this architecture's PE files (binutils' is x86 only)
    objcopy_package: str = "binutils"
    uefi_always: bool = False # direct kernel boots go through UEFI too (ACPI: QMP system_powerdown works)
    secure_boot_smm: bool = True  # Secure Boot firmware needs SMM (OVMF: only SMM code writes the variable
                                  # store); Arm has no SMM: AAVMF's store is plain flash

    @property
    def lib_dirs(self) -> tuple[str, ...]:
        """Where the dynamic loader finds this architecture's libraries in a Debian tree, in its order."""
        return (f"lib/{self.gnu_triplet}", f"usr/lib/{self.gnu_triplet}", "lib64", "usr/lib64", "lib", "usr/lib")

    @property
    def efi_boot_file(self) -> str:
        """The ESP path UEFI firmware boots from removable media."""
        return f"EFI/BOOT/BOOT{self.efi_name.upper()}.EFI"

    def refuse_format(self, fmt: str) -> str | None:
        """Why `fmt` cannot be built for this architecture, or None when it can."""
        if fmt in self.formats:
            return None
        if fmt in BIOS_FORMATS:
            return f"{fmt} boots through a PC BIOS, which {self.name} machines do not have"
        return f"lkit does not build {fmt} for {self.name}"


AMD64 = Arch(
    name="amd64", platform="linux/amd64", kernel_name="x86_64", debian="amd64",
    gnu_triplet="x86_64-linux-gnu", elf_machine=62, elf_machine_name="x86-64", qemu_user="qemu-x86_64",
    kernel_format="bzImage",
    qemu="qemu-system-x86_64", qemu_package="qemu-system-x86", qemu_machine="q35", tcg_cpu="max",
    console="ttyS0", efi_name="x64", firmware_package="ovmf", formats=_ALL_FORMATS, tcg_boot_factor=1.0)

ARM64 = Arch(
    name="arm64", platform="linux/arm64/v8", kernel_name="aarch64", debian="arm64",
    gnu_triplet="aarch64-linux-gnu", elf_machine=183, elf_machine_name="AArch64", qemu_user="qemu-aarch64",
    kernel_format="Image",
    qemu="qemu-system-aarch64", qemu_package="qemu-system-arm", qemu_machine="virt",
    tcg_cpu="cortex-a57",  # `max` adds pointer authentication, which TCG emulates slowly
    console="ttyAMA0", efi_name="aa64", firmware_package="qemu-efi-aarch64",
    formats=_ALL_FORMATS - BIOS_FORMATS, tcg_boot_factor=1.25,  # bench/boot.py: seed 1.18x / 1.24x
    firmware_machine="virt-7.2",
    channel="hvc0",           # virt has one UART (the console): the channel is a virtconsole port
    # Under the device tree (no firmware) virt's power button is gpio-keys, which Debian's cloud
    # kernel lacks (KEYBOARD_GPIO unset); through AAVMF the kernel gets ACPI, whose GED power button
    # is built in: system_powerdown works for +0.7 s of firmware under TCG.
    uefi_always=True, secure_boot_smm=False,
    pe_machine=0xAA64, objcopy="aarch64-linux-gnu-objcopy", objcopy_package="binutils-aarch64-linux-gnu")

ARCHES: dict[str, Arch] = {a.name: a for a in (AMD64, ARM64)}
NAMES: tuple[str, ...] = tuple(ARCHES)
DEFAULT = AMD64  # what a spec, an image reference or a test id without an architecture means


def get(name: str, *, where: str | None = None) -> Arch:
    """The architecture called `name`; a clear error for the kernel's names or a typo."""
    if name in ARCHES:
        return ARCHES[name]
    by_kernel = {a.kernel_name: a.name for a in ARCHES.values()}
    hint = (f"lkit uses LinuxKit's names: {by_kernel[name]!r}, not the kernel's {name!r}" if name in by_kernel
            else f"one of: {', '.join(NAMES)}")
    raise SpecError(f"unknown architecture {name!r}", where=where, hint=hint)


def host() -> Arch:
    """This machine's architecture (KVM can only run guests of it)."""
    machine = _platform.machine()
    for arch in ARCHES.values():
        if arch.kernel_name == machine:
            return arch
    return DEFAULT


def of_elf_machine(machine: int) -> Arch | None:
    """The architecture whose ELF binaries have e_machine `machine`."""
    return next((a for a in ARCHES.values() if a.elf_machine == machine), None)


def of_platform(platform: str) -> Arch | None:
    """The architecture of an OCI platform string (linux/arm64, linux/arm64/v8, linux/amd64)."""
    parts = platform.split("/")
    return ARCHES.get(parts[1]) if len(parts) >= 2 else None
