"""kernel+initrd: NAME-kernel, NAME-initrd.img (gzip newc cpio), NAME-cmdline, as LinuxKit writes them."""

from __future__ import annotations

from pathlib import Path

from lkit.core import formats
from lkit.build.outputs._copy import copy_into
from lkit.build.outputs.base import BootFiles, OutputFormat


def filenames(name: str) -> list[str]:
    return formats.FORMATS["kernel+initrd"].filenames(name)


def write(files: BootFiles, outdir: Path) -> list[Path]:
    kernel, initrd, cmdline = filenames(files.name)
    cmdline_path = outdir / cmdline
    cmdline_path.write_text(files.cmdline)
    return [copy_into(files.kernel, outdir, kernel), copy_into(files.initrd, outdir, initrd), cmdline_path]


FORMAT = OutputFormat(formats.FORMATS["kernel+initrd"], write)
