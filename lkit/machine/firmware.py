"""UEFI firmware (OVMF) found the portable way: QEMU's firmware descriptors (docs/interop/firmware.json).

Pick, for the guest's architecture (x86_64 + a q35 machine for amd64, aarch64 + virt for arm64: AAVMF
from qemu-efi-aarch64): interface uefi, no secure boot (no `secure-boot`/`enrolled-keys`/`requires-smm`), a
q35 machine, flash mapping. Each VM gets its own copy of the VARS template (the firmware writes to it).

Secure Boot (`find_ovmf(secure_boot=True)`): the descriptor with `secure-boot` (and `requires-smm` on
amd64; Arm has no SMM) but *no* `enrolled-keys`, a formatted empty variable store (Debian's
OVMF_CODE_4M.secboot.fd + OVMF_VARS_4M.fd).
Failing that, one *with* `enrolled-keys`, whose vendor keys lkit deletes before it enrols its own:
Debian bookworm's AAVMF has no other (its empty AAVMF_VARS.fd is unformatted, all zeros, and its
`50-edk2-aarch64-secure.json` names an AAVMF_CODE.secboot.fd the package does not ship), so arm64 uses
AAVMF_CODE.ms.fd + AAVMF_VARS.ms.fd with Microsoft's keys replaced by the suite's.
`enrolled_vars` writes the suite's PK, KEK and db into a copy of that template with virt-firmware's
virt-fw-vars and turns Secure Boot on; it is cached per key set, and each VM still gets its own copy.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lkit.core import arch as arch_table
from lkit.core.arch import Arch
from lkit.core.secureboot import OWNER_GUID, KeySet
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
    secure_boot: bool = False          # firmware that enforces signatures once keys are enrolled
    vendor_keys: bool = False          # its VARS template has a vendor's PK/KEK/db/dbx (deleted before enrolling)

    def copy_vars(self, dest_dir: Path, template: Path | None = None) -> Path:
        """A private VARS file for one VM (never share the template: the firmware writes to it);
        `template`: another variable store for this firmware (one with enrolled keys)."""
        dest = dest_dir / f"OVMF_VARS.{self.vars_format}"
        tmp = dest.with_suffix(".tmp")
        shutil.copyfile(template or self.vars_template, tmp)
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


def choose(descriptor: dict[str, Any], machine: str | None = None, *, secure_boot: bool = False,
           arch: Arch = arch_table.DEFAULT, vendor_keys: bool = False) -> bool:
    """Whether one parsed descriptor fits: UEFI for `arch` (x86_64 on q35, aarch64 on virt), flash,
    not secure boot (or, with `secure_boot`, secure boot, with SMM where `arch` needs it, and an empty
    variable store: lkit enrols its own keys; `vendor_keys`: a store with a vendor's keys will do)."""
    machine = machine or arch.firmware_machine
    if "uefi" not in descriptor.get("interface-types", []):
        return False
    features = set(descriptor.get("features", []))
    if secure_boot:
        needed = {"secure-boot", "requires-smm"} if arch.secure_boot_smm else {"secure-boot"}
        refused = {"amd-sev-es", "intel-tdx"} | (set() if vendor_keys else {"enrolled-keys"})
        if not needed <= features or features & refused:
            return False
    elif features & _UNWANTED:
        return False
    mapping = descriptor.get("mapping", {})
    if mapping.get("device") != "flash" or "nvram-template" not in mapping:
        return False
    return any(t.get("architecture") == arch.kernel_name
               and any(fnmatch.fnmatch(machine, m) for m in t.get("machines", []))
               for t in descriptor.get("targets", []))


def formatted_store(path: Path, fmt: str = "raw") -> bool:
    """Whether a raw VARS file holds an edk2 firmware volume (its `_FVH` signature at 0x28); Debian's
    empty AAVMF_VARS.fd is all zeros, formatted by the firmware's first boot, which virt-fw-vars cannot
    write keys into."""
    if fmt != "raw":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(0x2C)[0x28:] == b"_FVH"
    except OSError:
        return False


def find_ovmf(dirs: Iterable[Path] = DESCRIPTOR_DIRS, machine: str | None = None, *,
              secure_boot: bool = False, arch: Arch = arch_table.DEFAULT) -> Firmware:
    """The first matching firmware for `arch` whose files exist (OVMF for amd64, AAVMF for arm64);
    InfraError says what to install otherwise."""
    dirs = list(dirs)
    machine = machine or arch.firmware_machine
    seen: list[str] = []
    for vendor_keys in ((False, True) if secure_boot else (False,)):
        for path in _descriptors(dirs):
            try:
                desc = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if not choose(desc, machine, secure_boot=secure_boot, arch=arch, vendor_keys=vendor_keys):
                continue
            if vendor_keys and "enrolled-keys" not in desc.get("features", []):
                continue    # seen in the first pass
            mapping = desc["mapping"]
            code = Path(mapping["executable"]["filename"])
            nvram = Path(mapping["nvram-template"]["filename"])
            vars_format = mapping["nvram-template"].get("format", "raw")
            if not (code.is_file() and nvram.is_file()):
                seen.append(f"{path} names missing files")
            elif secure_boot and not formatted_store(nvram, vars_format):
                seen.append(f"{path}: {nvram} is not a formatted variable store")
            else:
                return Firmware(code, nvram, path, mapping["executable"].get("format", "raw"), vars_format,
                                secure_boot=secure_boot, vendor_keys=vendor_keys)
    needs = "SMM, " if arch.secure_boot_smm else ""
    kind = (f"with Secure Boot ({needs}a variable store lkit can enrol keys into)" if secure_boot
            else "without secure boot")
    raise InfraError(
        f"no UEFI firmware for {arch.kernel_name}/{arch.qemu_machine} {kind} found in QEMU's firmware descriptors ("
        + ", ".join(str(d) for d in dirs) + ")" + (": " + "; ".join(seen) if seen else ""),
        hint=f"install the Debian package `{arch.firmware_package}` (apt-get install {arch.firmware_package})")


find_firmware = find_ovmf   # the arch-neutral name


def enrolled_vars(fw: Firmware, keys: KeySet, cache: Path) -> Path:
    """A VARS template with `keys` enrolled (PK, KEK, db; Secure Boot on), made once per key set and
    firmware in `cache` (virt-fw-vars is deterministic, so a rebuilt one is the same file)."""
    if not fw.secure_boot:
        raise InfraError(f"{fw.code} is not a Secure Boot firmware: keys cannot be enrolled in it")
    for role in ("pk", "kek", "db"):
        if not getattr(keys, role).is_file():
            raise InfraError(f"Secure Boot {role} certificate {getattr(keys, role)} does not exist ({keys.origin})")
    template = cache / f"OVMF_VARS.{fw.vars_template.stem}.{keys.identity}.enrolled.{fw.vars_format}"
    if template.is_file():
        return template
    cache.mkdir(parents=True, exist_ok=True)
    tool = shutil.which("virt-fw-vars") or str(Path(sys.executable).with_name("virt-fw-vars"))
    tmp = template.with_name(f".{template.name}.{os.getpid()}.tmp")
    argv = [tool, "--input", str(fw.vars_template), "--output", str(tmp)]
    if fw.vendor_keys:      # the suite's keys only: a vendor's KEK or db would let its signatures boot
        argv += ["--delete", "PK", "--delete", "KEK", "--delete", "db", "--delete", "dbx"]
    argv += ["--set-pk", OWNER_GUID, str(keys.pk), "--add-kek", OWNER_GUID, str(keys.kek),
            "--add-db", OWNER_GUID, str(keys.db), "--secure-boot"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except OSError as exc:
        raise InfraError(f"cannot run virt-fw-vars: {exc}", hint="pip install virt-firmware") from None
    if done.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise InfraError("virt-fw-vars could not enrol the Secure Boot keys: "
                         + (done.stderr or done.stdout).strip()[-600:],
                         hint=f"the certificates must be PEM or DER X.509 ({keys.origin})")
    os.replace(tmp, template)
    return template
