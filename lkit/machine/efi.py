"""What a booted guest says about its firmware: Secure Boot state, EFI variables, its TPM.

Everything is read through the command channel with busybox tools (the guest needs no extra
programs). EFI variables need efivarfs: it is mounted at /sys/firmware/efi/efivars when the guest's
kernel knows the file system (built in, or loaded by an onboot container such as lkit/efivarfs).
A guest without it still reports Secure Boot through its kernel's boot log ("secureboot: Secure boot
enabled", from the state the kernel's EFI stub read from the SecureBoot variable).
"""

from __future__ import annotations

import base64
import re
import shlex
from dataclasses import dataclass
from typing import Any

from lkit.errors import MachineError

EFIVARS = "/sys/firmware/efi/efivars"
GLOBAL_GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"     # EFI_GLOBAL_VARIABLE: SecureBoot, SetupMode, PK...
# non-volatile, boot service and runtime access: a variable that survives a reboot
NV_BS_RT = 0x7
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_KERNEL_SAYS = re.compile(r"Secure boot (enabled|disabled|could not be determined)")


@dataclass(frozen=True)
class SecureBootState:
    enabled: bool | None        # None: the guest could not tell
    source: str                 # where it came from: the SecureBoot variable, or the kernel log
    detail: str = ""


def mount_efivarfs(vm: Any) -> bool:
    """Mount efivarfs if the guest's kernel has it (idempotent); whether EFI variables are readable."""
    result = vm.run(f"[ -d /sys/firmware/efi ] || exit 3; grep -qw efivarfs /proc/filesystems || exit 4; "
                    f"grep -q ' {EFIVARS} ' /proc/mounts || mount -t efivarfs efivarfs {EFIVARS}", timeout=30)
    return result.rc == 0


def read_variable(vm: Any, name: str, guid: str = GLOBAL_GUID) -> tuple[int, bytes] | None:
    """(attributes, data) of an EFI variable, None if it does not exist."""
    path = _path(name, guid)
    _require_efivarfs(vm)
    result = vm.run(f"[ -e {path} ] || exit 3; base64 {path}", timeout=30)
    if result.rc == 3:
        return None
    if result.rc != 0:
        raise MachineError(f"cannot read EFI variable {name}-{guid}: {result.stderr.strip()[-300:]}")
    raw = base64.b64decode("".join(result.stdout.split()))
    if len(raw) < 4:
        raise MachineError(f"EFI variable {name}-{guid} is {len(raw)} bytes: no attributes")
    return int.from_bytes(raw[:4], "little"), raw[4:]


def write_variable(vm: Any, name: str, data: bytes, guid: str, attributes: int = NV_BS_RT) -> None:
    """Create or replace an EFI variable (non-volatile by default: it survives a reboot)."""
    if guid == GLOBAL_GUID:
        raise ValueError("write a variable of your own GUID, not EFI_GLOBAL_VARIABLE's")
    path = _path(name, guid)
    _require_efivarfs(vm)
    payload = base64.b64encode(attributes.to_bytes(4, "little") + data).decode()
    # an existing variable's file is immutable (efivarfs sets +i): lift it, then write in one go
    result = vm.run(f"[ -e {path} ] && chattr -i {path} 2>/dev/null; "
                    f"echo {shlex.quote(payload)} | base64 -d > /tmp/.lkit-efivar && "
                    f"cat /tmp/.lkit-efivar > {path}; rc=$?; rm -f /tmp/.lkit-efivar; exit $rc", timeout=30)
    if result.rc != 0:
        raise MachineError(f"cannot write EFI variable {name}-{guid}: {result.stderr.strip()[-300:]}")


def _require_efivarfs(vm: Any) -> None:
    if not mount_efivarfs(vm):
        raise MachineError("the guest cannot read EFI variables: no EFI boot, or its kernel has no efivarfs",
                           hint="boot an EFI format; load the module at boot (onboot image lkit/efivarfs:1, "
                                "capabilities [CAP_SYS_MODULE])")


def secure_boot_state(vm: Any) -> SecureBootState:
    """Whether the guest booted with Secure Boot on: the SecureBoot variable when efivarfs can be
    mounted, else what the kernel logged at boot."""
    if mount_efivarfs(vm):
        found = read_variable(vm, "SecureBoot")
        if found is None:
            return SecureBootState(None, f"{EFIVARS}/SecureBoot-{GLOBAL_GUID}", "the variable does not exist")
        _attrs, data = found
        return SecureBootState(data[:1] == b"\x01", f"{EFIVARS}/SecureBoot-{GLOBAL_GUID}", f"value {data.hex()}")
    result = vm.run("dmesg | grep -i 'secure boot' | head -n 5", timeout=30)
    said = _KERNEL_SAYS.search(result.stdout)
    if said is None:
        return SecureBootState(None, "kernel log", "the kernel said nothing about Secure Boot "
                                                   "(no EFI boot, or its boot messages were overwritten)")
    return SecureBootState({"enabled": True, "disabled": False}.get(said.group(1)), "kernel log",
                           said.group(0))


def _path(name: str, guid: str) -> str:
    if not _NAME.match(name) or not _GUID.match(guid):
        raise ValueError(f"not an EFI variable name and GUID: {name!r} {guid!r}")
    return f"{EFIVARS}/{name}-{guid}"


# -- TPM -------------------------------------------------------------------------------------------
def tpm_devices(vm: Any) -> list[str]:
    """The TPM character devices the guest has (/dev/tpm0, /dev/tpmrm0)."""
    result = vm.run("for d in /dev/tpm0 /dev/tpmrm0; do [ -c $d ] && echo $d; done; true", timeout=30)
    return result.stdout.split()


def tpm_version(vm: Any) -> str | None:
    result = vm.run("cat /sys/class/tpm/tpm0/tpm_version_major", timeout=30)
    return result.stdout.strip() if result.rc == 0 else None


def event_log(vm: Any) -> bytes:
    """The firmware's TPM event log (TCG binary format) as the kernel exposes it in securityfs."""
    path = "/sys/kernel/security/tpm0/binary_bios_measurements"
    result = vm.run(f"grep -q ' /sys/kernel/security ' /proc/mounts || mount -t securityfs securityfs "
                    f"/sys/kernel/security; base64 {path}", timeout=60)
    if result.rc != 0:
        raise MachineError(f"cannot read the TPM event log {path}: {result.stderr.strip()[-300:]}",
                           hint="the firmware logs measurements only when it has a TPM (UEFI with `tpm: true`)")
    return base64.b64decode("".join(result.stdout.split()))
