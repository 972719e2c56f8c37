"""What to boot: a format name plus its output files (LinuxKit's names) -> a BootTarget.

The machine layer knows formats and file names, not specs: NAME-kernel/NAME-initrd.img/NAME-cmdline,
NAME.iso, NAME-efi.iso, NAME-efi-initrd.iso, NAME-bios.img, NAME-efi.img, NAME.qcow2 (qcow2-bios),
NAME-efi.qcow2, NAME-kernel + NAME-squashfs.img (+ NAME-squashfs-initrd.img, a stage-1 initrd).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lkit.core.formats import FORMATS, BootKind
from lkit.errors import MachineError

# format -> (kind, efi); kind says how QEMU gets the artifact (lkit.core.formats has the facts).
FORMAT_KINDS: dict[str, tuple[BootKind, bool]] = {f.name: (f.boot, f.efi) for f in FORMATS.values() if f.boot}

_SUFFIXES: dict[str, str] = {  # a single-file format's file name suffix (after NAME)
    f.name: f.suffixes[0] for f in FORMATS.values() if f.boot in (BootKind.CDROM, BootKind.DISK)}

_ALL_SUFFIXES = tuple(dict.fromkeys(s for f in FORMATS.values() if f.boot for s in f.suffixes))


@dataclass(frozen=True)
class BootTarget:
    format: str
    kind: BootKind
    efi: bool
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str = ""
    cdrom: Path | None = None
    disk: Path | None = None
    disk_format: str = "raw"        # raw | qcow2
    squashfs: Path | None = None    # kernel+squashfs: the root filesystem, attached as a virtio disk

    @property
    def name(self) -> str:
        return self.format


def _pick(files: list[Path], suffix: str, fmt: str, required: bool = True) -> Path | None:
    # Longest-suffix wins so NAME-efi.iso is not taken for NAME.iso and vice versa.
    longer = tuple(s for s in _ALL_SUFFIXES if s != suffix and s.endswith(suffix))
    candidates = [f for f in files if f.name.endswith(suffix) and not (longer and f.name.endswith(longer))]
    if not candidates:
        if required:
            raise MachineError(f"format {fmt}: no file named NAME{suffix} among "
                               f"{', '.join(sorted(f.name for f in files)) or 'no files'}",
                               hint=f"LinuxKit names the {fmt} output NAME{suffix}")
        return None
    if len(candidates) > 1:
        raise MachineError(f"format {fmt}: several files end in {suffix}: "
                           + ", ".join(sorted(f.name for f in candidates)))
    return candidates[0]


def boot_target(fmt: str, files: Iterable[Path | str], *, cmdline: str | None = None) -> BootTarget:
    """The BootTarget of format `fmt` from its output files (other files in the list are ignored)."""
    paths = [Path(f) for f in files]
    if fmt not in FORMAT_KINDS:
        raise MachineError(f"format {fmt!r} cannot be booted",
                           hint="bootable formats: " + ", ".join(FORMAT_KINDS))
    kind, efi = FORMAT_KINDS[fmt]
    if kind == BootKind.DIRECT:
        kernel = _pick(paths, "-kernel", fmt)
        if cmdline is None:
            cmdfile = _pick(paths, "-cmdline", fmt, required=False)
            cmdline = cmdfile.read_text().strip() if cmdfile is not None else ""
        if fmt == "kernel+initrd":
            return BootTarget(fmt, kind, efi, kernel=kernel, initrd=_pick(paths, "-initrd.img", fmt),
                              cmdline=cmdline)
        squash = _pick(paths, "-squashfs.img", fmt)
        stage1 = _pick(paths, "-squashfs-initrd.img", fmt, required=False)
        return BootTarget(fmt, kind, efi, kernel=kernel, initrd=stage1, cmdline=cmdline, squashfs=squash)
    path = _pick(paths, _SUFFIXES[fmt], fmt)
    if kind == BootKind.CDROM:
        return BootTarget(fmt, kind, efi, cdrom=path)
    return BootTarget(fmt, kind, efi, disk=path, disk_format="qcow2" if fmt.startswith("qcow2") else "raw")


def guess_format(paths: Iterable[Path | str]) -> str:
    """`lkit run` without --format: the format from the file names (EFI from `-efi` in the name)."""
    names = [Path(p).name for p in paths]
    for fmt in ("iso-efi-initrd", "iso-efi", "raw-efi", "qcow2-efi", "raw-bios"):
        if any(n.endswith(_SUFFIXES[fmt]) for n in names):
            return fmt
    if any(n.endswith("-squashfs.img") for n in names):
        return "kernel+squashfs"
    if any(n.endswith("-kernel") or n.endswith("-initrd.img") for n in names):
        return "kernel+initrd"
    if any(n.endswith(".iso") for n in names):
        return "iso-bios"
    if any(n.endswith(".qcow2") for n in names):
        return "qcow2-bios"
    if any(n.endswith(".img") for n in names):
        return "raw-bios"
    raise MachineError("cannot tell the format from the file names " + ", ".join(names),
                       hint="pass --format (e.g. kernel+initrd, iso-efi, raw-bios)")


def expand_prefix(arg: Path) -> list[Path]:
    """`lkit run out/NAME` (a prefix, like `linuxkit run qemu NAME`) -> the files starting with it."""
    if arg.exists() and arg.is_file():
        return [arg]
    parent = arg.parent if str(arg.parent) else Path(".")
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.iterdir() if p.is_file() and p.name.startswith(arg.name))
