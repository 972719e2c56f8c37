"""What every output format receives, and the registry that maps format names to writers.

A format module (named after the format: iso-efi -> iso_efi.py) defines
`FORMAT = OutputFormat(formats.FORMATS["iso-efi"], write)`; the formats and their facts are listed in
lkit.core.formats. Writers must be deterministic (same inputs, same bytes) and write atomically: build in
`files.workdir`, then move finished files into `outdir` (see `publish`).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from lkit.core import arch as arch_table, buildtime, formats
from lkit.core.arch import Arch
from lkit.core.formats import FormatFacts

# Fixed timestamp of every built file (LinuxKit's: 2017-04-18 16:30 UTC), as SOURCE_DATE_EPOCH.
SOURCE_DATE_EPOCH = buildtime.EPOCH


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
    sign: Callable[[Path, Path], Path] | None = None  # Secure Boot: (EFI binary, out) -> signed copy; None:
                                                      # unsigned, LinuxKit's bytes (the default)
    arch: Arch = arch_table.DEFAULT  # the architecture the kernel and root are for (EFI file names, stubs)


@dataclass(frozen=True)
class OutputFormat:
    """A format's writer, with its facts (name, file names, firmware) from lkit.core.formats."""

    facts: FormatFacts
    write: Callable[[BootFiles, Path], list[Path]]  # (files, outdir) -> written paths

    @property
    def name(self) -> str:
        return self.facts.name

    @property
    def efi(self) -> bool:
        return self.facts.efi

    @property
    def needs_kernel(self) -> bool:
        return self.facts.needs_kernel

    def filenames(self, name: str) -> list[str]:
        return self.facts.filenames(name)


FORMAT_NAMES: tuple[str, ...] = formats.NAMES


def get_format(name: str) -> OutputFormat:
    """The writer of one format; unknown names get the list of known ones."""
    from lkit.errors import BuildError

    if name not in formats.FORMATS:
        raise BuildError(f"unknown output format {name!r}", hint="formats: " + ", ".join(FORMAT_NAMES))
    # each format's writer is the module named after it: iso-efi -> lkit.build.outputs.iso_efi
    module = importlib.import_module("lkit.build.outputs." + name.replace("-", "_").replace("+", "_"))
    return module.FORMAT


def publish(tmp: Path, final: Path) -> Path:
    """Move a finished file into place atomically (same filesystem: write tmp in outdir)."""
    os.replace(tmp, final)
    return final
