"""tar-kernel-initrd: NAME-initrd.tar holding kernel, initrd.img and cmdline (LinuxKit's member names)."""

from __future__ import annotations

from pathlib import Path

from lkit.core import formats
from lkit.build.outputs._copy import tar_of_files
from lkit.build.outputs.base import BootFiles, OutputFormat


def filenames(name: str) -> list[str]:
    return formats.FORMATS["tar-kernel-initrd"].filenames(name)


def write(files: BootFiles, outdir: Path) -> list[Path]:
    cmdline = files.workdir / "cmdline.for-tar"
    cmdline.write_text(files.cmdline)
    dest = outdir / filenames(files.name)[0]
    return [tar_of_files(dest, [("kernel", files.kernel), ("initrd.img", files.initrd), ("cmdline", cmdline)])]


FORMAT = OutputFormat(formats.FORMATS["tar-kernel-initrd"], write)
