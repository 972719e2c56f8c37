"""UEFI firmware (OVMF) found the portable way: QEMU's firmware descriptors (docs/interop/firmware.json).

Pick: x86_64, interface uefi, no secure boot (no `secure-boot`/`enrolled-keys`/`requires-smm`), a
q35 machine, flash mapping. Each VM gets its own copy of the VARS template (the firmware writes to it).
"""

from __future__ import annotations

import fnmatch
import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lkit.errors import InfraError

DESCRIPTOR_DIRS = (Path("/etc/qemu/firmware"), Path("/usr/share/qemu/firmware"))
_UNWANTED = {"secure-boot", "enrolled-keys", "requires-smm", "amd-sev-es", "intel-tdx"}


@dataclass(frozen=True)
class Firmware:
    code: Path
    vars_template: Path
    descriptor: Path
    code_format: str = "raw"
    vars_format: str = "raw"

    def copy_vars(self, dest_dir: Path) -> Path:
        """A private VARS file for one VM (never share the template: the firmware writes to it)."""
        dest = dest_dir / f"OVMF_VARS.{self.vars_format}"
        tmp = dest.with_suffix(".tmp")
        shutil.copyfile(self.vars_template, tmp)
        tmp.replace(dest)
        return dest


def _descriptors(dirs: Iterable[Path]) -> list[Path]:
    # Same file name in an earlier dir overrides a later one (QEMU's rule); order by file name.
    chosen: dict[str, Path] = {}
    for d in dirs:
        if d.is_dir():
            for f in d.glob("*.json"):
                chosen.setdefault(f.name, f)
    return [chosen[k] for k in sorted(chosen)]


def choose(descriptor: dict[str, Any], machine: str = "pc-q35-7.2") -> bool:
    """Whether one parsed descriptor fits: x86_64 UEFI, q35, flash, not secure boot."""
    if "uefi" not in descriptor.get("interface-types", []):
        return False
    if set(descriptor.get("features", [])) & _UNWANTED:
        return False
    mapping = descriptor.get("mapping", {})
    if mapping.get("device") != "flash" or "nvram-template" not in mapping:
        return False
    return any(t.get("architecture") == "x86_64"
               and any(fnmatch.fnmatch(machine, m) for m in t.get("machines", []))
               for t in descriptor.get("targets", []))


def find_ovmf(dirs: Iterable[Path] = DESCRIPTOR_DIRS, machine: str = "pc-q35-7.2") -> Firmware:
    """The first matching firmware whose files exist; InfraError says what to install otherwise."""
    dirs = list(dirs)
    seen: list[str] = []
    for path in _descriptors(dirs):
        try:
            desc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not choose(desc, machine):
            continue
        mapping = desc["mapping"]
        code = Path(mapping["executable"]["filename"])
        nvram = Path(mapping["nvram-template"]["filename"])
        if code.is_file() and nvram.is_file():
            return Firmware(code, nvram, path, mapping["executable"].get("format", "raw"),
                            mapping["nvram-template"].get("format", "raw"))
        seen.append(f"{path} names missing files")
    raise InfraError(
        "no UEFI firmware for x86_64/q35 without secure boot found in QEMU's firmware descriptors ("
        + ", ".join(str(d) for d in dirs) + ")" + (": " + "; ".join(seen) if seen else ""),
        hint="install the Debian package `ovmf` (apt-get install ovmf)")
