"""qcow2-efi: NAME-efi.qcow2, the raw-efi disk (GPT + ESP with a UKI) converted to qcow2 by qemu-img."""

from __future__ import annotations

from pathlib import Path

from lkit.core import formats
from lkit.build.outputs import raw_efi
from lkit.build.outputs._deliver import deliver
from lkit.build.outputs._qcow2 import to_qcow2
from lkit.build.outputs.base import BootFiles, OutputFormat


def filenames(name: str) -> list[str]:
    return formats.FORMATS["qcow2-efi"].filenames(name)


def write(files: BootFiles, outdir: Path) -> list[Path]:
    (target,) = filenames(files.name)
    raw = raw_efi.disk(files)
    return [deliver(to_qcow2(raw, files.workdir / target), outdir, target)]


FORMAT = OutputFormat(formats.FORMATS["qcow2-efi"], write)
