"""tar: the whole root filesystem as NAME.tar, boot/kernel and boot/cmdline included: LinuxKit's bytes."""

from __future__ import annotations

from pathlib import Path

from lkit.core import formats
from lkit.build.outputs._copy import copy_into
from lkit.build.outputs.base import BootFiles, OutputFormat


def filenames(name: str) -> list[str]:
    return formats.FORMATS["tar"].filenames(name)


def write(files: BootFiles, outdir: Path) -> list[Path]:
    return [copy_into((files.linuxkit_tar or files.rootfs_tar)(), outdir, filenames(files.name)[0])]


FORMAT = OutputFormat(formats.FORMATS["tar"], write)
