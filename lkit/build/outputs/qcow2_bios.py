"""qcow2-bios: NAME.qcow2 (LinuxKit's name), the raw-bios disk converted to qcow2 by qemu-img."""

from __future__ import annotations

from lkit.build.outputs import raw_bios
from lkit.build.outputs._qcow2 import qcow2_format

FORMAT = qcow2_format("qcow2-bios", raw_bios.disk)
filenames = FORMAT.filenames
