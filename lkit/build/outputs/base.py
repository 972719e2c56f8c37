"""What every output format receives, and the registry that maps format names to writers.

A format module defines `FORMAT = OutputFormat(name=..., filenames=..., write=...)`; `FORMATS` below
lists them all. Writers must be deterministic (same inputs, same bytes) and write atomically: build in
`files.workdir`, then move finished files into `outdir` (see `publish`).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Fixed timestamp of every built file (LinuxKit's: 2017-04-18 16:30 UTC), as SOURCE_DATE_EPOCH.
SOURCE_DATE_EPOCH = 1492533000


@dataclass(frozen=True)
class BootFiles:
    """The built pieces every format is made from."""

    name: str                 # spec file name without .yml: outputs are NAME-kernel, NAME.iso, ...
    kernel: Path              # the kernel image (bzImage); a placeholder for a spec without a kernel, which
    initrd: Path              # only formats with needs_kernel=False are given. initrd: gzip newc cpio of the
                              # whole root filesystem but boot/ (ucode prepended)
    cmdline: str              # kernel command line from the spec
    rootfs_tar: Callable[[], Path]  # uncompressed tar of the root filesystem (one entry per path), on first call
    workdir: Path             # scratch directory, private to this build, removed afterwards
    linuxkit_tar: Callable[[], Path] | None = None  # the root as LinuxKit's tar output writes it (its bytes)


@dataclass(frozen=True)
class OutputFormat:
    name: str                                   # LinuxKit's format name, e.g. "iso-efi"
    filenames: Callable[[str], list[str]]       # NAME -> the file names this format writes
    write: Callable[[BootFiles, Path], list[Path]]  # (files, outdir) -> written paths
    efi: bool = False                           # boots with UEFI firmware
    needs_kernel: bool = True                   # False: also built for a spec with no `kernel:` (tar)


# format name -> module defining FORMAT
_MODULES = {
    "kernel+initrd": "kernel_initrd",
    "tar": "tar",
    "tar-kernel-initrd": "tar_kernel_initrd",
    "iso-bios": "iso_bios",
    "iso-efi": "iso_efi",
    "iso-efi-initrd": "iso_efi_initrd",
    "raw-bios": "raw_bios",
    "raw-efi": "raw_efi",
    "qcow2-bios": "qcow2_bios",
    "qcow2-efi": "qcow2_efi",
    "kernel+squashfs": "kernel_squashfs",
}

FORMAT_NAMES: tuple[str, ...] = tuple(_MODULES)


def get_format(name: str) -> OutputFormat:
    """The writer of one format; unknown names get the list of known ones."""
    from lkit.errors import BuildError

    module_name = _MODULES.get(name)
    if module_name is None:
        raise BuildError(f"unknown output format {name!r}", hint="formats: " + ", ".join(FORMAT_NAMES))
    module = importlib.import_module(f"lkit.build.outputs.{module_name}")
    return module.FORMAT


def publish(tmp: Path, final: Path) -> Path:
    """Move a finished file into place atomically (same filesystem: write tmp in outdir)."""
    os.replace(tmp, final)
    return final
