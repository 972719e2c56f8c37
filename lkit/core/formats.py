"""The output formats lkit builds and boots: LinuxKit's names and file names, and how each boots.

The builder (lkit.build.outputs, one writer per format), the spec loader (format names), the
machine layer (which files of a format QEMU gets, with which firmware) and the plugin all read this
one table, so a format's facts cannot disagree between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class BootKind(StrEnum):
    """How QEMU gets a format's files."""

    DIRECT = "direct"    # -kernel, -initrd, -append
    CDROM = "cdrom"
    DISK = "disk"


@dataclass(frozen=True)
class FormatFacts:
    name: str                     # LinuxKit's format name, e.g. "iso-efi"
    suffixes: tuple[str, ...]     # its files are NAME + suffix (NAME: the spec's name), LinuxKit's order
    boot: BootKind | None         # how QEMU gets it; None: not booted
    efi: bool = False             # boots with UEFI firmware
    needs_kernel: bool = True     # False: built for a spec with no `kernel:` too

    def filenames(self, name: str) -> list[str]:
        return [name + suffix for suffix in self.suffixes]


FORMATS: dict[str, FormatFacts] = {f.name: f for f in (
    FormatFacts("kernel+initrd", ("-kernel", "-initrd.img", "-cmdline"), BootKind.DIRECT),
    FormatFacts("tar", (".tar",), None, needs_kernel=False),
    FormatFacts("tar-kernel-initrd", ("-initrd.tar",), None),
    FormatFacts("iso-bios", (".iso",), BootKind.CDROM),
    FormatFacts("iso-efi", ("-efi.iso",), BootKind.CDROM, efi=True),
    FormatFacts("iso-efi-initrd", ("-efi-initrd.iso",), BootKind.CDROM, efi=True),
    FormatFacts("raw-bios", ("-bios.img",), BootKind.DISK),
    FormatFacts("raw-efi", ("-efi.img",), BootKind.DISK, efi=True),
    FormatFacts("qcow2-bios", (".qcow2",), BootKind.DISK),
    FormatFacts("qcow2-efi", ("-efi.qcow2",), BootKind.DISK, efi=True),
    FormatFacts("kernel+squashfs", ("-kernel", "-cmdline", "-squashfs.img", "-squashfs-initrd.img"), BootKind.DIRECT),
)}
NAMES: tuple[str, ...] = tuple(FORMATS)
