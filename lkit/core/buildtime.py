"""The one fixed timestamp of lkit's outputs: LinuxKit's defaultModTime, 2017-04-18 16:30:00 UTC.

Everything the builder makes itself carries it (tar and cpio entries, ISO and FAT dates, image
configs), so builds are reproducible and match LinuxKit's; entries from image layers keep their own.
"""

from __future__ import annotations

EPOCH = 1492533000
ISO8601 = "2017-04-18T16:30:00Z"
