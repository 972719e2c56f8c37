"""The one list of Linux capability names and numbers (CAP_CHOWN=0 ... CAP_CHECKPOINT_RESTORE=40).

Spec validation, OCI config generation (`all` = every name here) and the guest checks that decode
/proc/PID/status masks all read this table, so they can never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable

# Index = capability number (linux/capability.h).
CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)

ALL_CAPABILITIES = CAPABILITIES  # the name other modules import
NUMBERS: dict[str, int] = {name: number for number, name in enumerate(CAPABILITIES)}
ALL_NAMES: frozenset[str] = frozenset(CAPABILITIES)
# Keywords a capability list may hold alone (case-insensitive, as LinuxKit does).
KEYWORDS: tuple[str, ...] = ("all", "none")
FULL_MASK = (1 << len(CAPABILITIES)) - 1


def is_capability(name: str) -> bool:
    return name in NUMBERS


def names_from_mask(mask: int) -> list[str]:
    """Names of the bits set in a CapEff/CapPrm/... mask, by number; unknown high bits are ignored."""
    return [name for number, name in enumerate(CAPABILITIES) if mask >> number & 1]


def mask_from_names(names: Iterable[str]) -> int:
    """The mask with each named capability's bit set; `all` sets every bit, `none` none."""
    mask = 0
    for name in names:
        key = name.lower()
        if key == "all":
            mask |= FULL_MASK
        elif key == "none":
            continue
        elif name in NUMBERS:
            mask |= 1 << NUMBERS[name]
        else:
            raise ValueError(f"unknown capability {name!r}")
    return mask


def parse_mask(text: str) -> int:
    """A mask as printed in /proc/PID/status (hex, e.g. '00000000a80425fb')."""
    return int(text.strip(), 16)
