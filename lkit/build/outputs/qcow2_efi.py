"""qcow2-efi: NAME-efi.qcow2, the raw-efi disk (GPT + ESP with a UKI) converted to qcow2 by qemu-img."""

from __future__ import annotations

from lkit.build.outputs import raw_efi
from lkit.build.outputs._qcow2 import qcow2_format

FORMAT = qcow2_format("qcow2-efi", raw_efi.disk)
filenames = FORMAT.filenames
