"""Boot loader configuration text shared by the BIOS (syslinux family) and EFI (systemd-boot) formats,
and the record of which Debian loader packages went into an image."""

from __future__ import annotations

from lkit.build.outputs._tools import package_version

KERNEL = "kernel"
INITRD = "initrd.img"


def one_line(cmdline: str) -> str:
    """Boot loaders take the command line on one line: fold any newlines and runs of blanks."""
    return " ".join(cmdline.split())


def syslinux_cfg(cmdline: str) -> str:
    """isolinux.cfg / syslinux.cfg: serial console at 115200, no prompt, boot at once."""
    return (
        "SERIAL 0 115200\n"
        "DEFAULT linux\n"
        "PROMPT 0\n"
        "TIMEOUT 0\n"
        "LABEL linux\n"
        f"  KERNEL /{KERNEL}\n"
        f"  INITRD /{INITRD}\n"
        f"  APPEND {one_line(cmdline)}\n"
    )


def loader_conf() -> str:
    """systemd-boot's loader.conf: boot the one entry without a menu."""
    return "timeout 0\ndefault linuxkit.conf\nconsole-mode keep\n"


def loader_entry(cmdline: str) -> str:
    """systemd-boot Boot Loader Specification entry with kernel and initrd as separate files."""
    return (f"title LinuxKit\nlinux /{KERNEL}\ninitrd /{INITRD}\noptions {one_line(cmdline)}\n")


def versions_txt(packages: list[str]) -> str:
    """Which Debian boot-loader packages (and versions) an image was made with."""
    return "".join(f"{p} {package_version(p)}\n" for p in sorted(packages))


# Debian packages whose files end up inside each format (boot loaders, stubs, stage-1 busybox).
LOADER_PACKAGES: dict[str, list[str]] = {
    "iso-bios": ["isolinux", "syslinux-common"],
    "iso-efi": ["systemd-boot-efi"],
    "iso-efi-initrd": ["systemd-boot-efi"],
    "raw-bios": ["syslinux", "syslinux-common"],
    "qcow2-bios": ["syslinux", "syslinux-common"],
    "raw-efi": ["systemd-boot-efi"],
    "qcow2-efi": ["systemd-boot-efi"],
    "kernel+squashfs": ["busybox-static", "squashfs-tools"],
}


def loader_versions(fmt: str) -> dict[str, str]:
    """Package -> installed Debian version for what `fmt` embeds (for the build record)."""
    return {p: package_version(p) for p in LOADER_PACKAGES.get(fmt, [])}
