"""Guest facts gathered through the command channel: running service containers, their init pids and
capability sets (decoded with the guest's own cap_last_cap), onboot exit codes, shell readiness.

Gathering is one command whose output has a line format parsed by pure functions (unit-testable
without a VM).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lkit.core.capabilities import names_from_mask

if TYPE_CHECKING:
    from lkit.machine.vm import Machine

CAP_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")

# One guest command; every line is tagged so noise cannot be mistaken for data. runc and ctr are
# Go binaries that take a few tenths of a second each to start under TCG: each runs once.
GATHER = r"""
echo "LASTCAP $(cat /proc/sys/kernel/cap_last_cap 2>/dev/null)"
runc_out=; ctr_out=
command -v runc >/dev/null 2>&1 && runc_out=$(runc --root /run/runc list 2>/dev/null)
command -v ctr >/dev/null 2>&1 && ctr_out=$(ctr -n services.linuxkit task ls 2>/dev/null)
echo "$runc_out" | while read -r id pid status rest; do
  { [ -z "$id" ] || [ "$id" = ID ]; } && continue; echo "CTR runc $id $pid $status"; done
echo "$ctr_out" | while read -r id pid status rest; do
  { [ -z "$id" ] || [ "$id" = TASK ]; } && continue; echo "CTR containerd $id $pid $status"; done
for pid in $(printf '%s\n%s\n' "$runc_out" "$ctr_out" | awk '$2 ~ /^[0-9]+$/ {print $2}' | sort -u); do
  grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb):' /proc/$pid/status 2>/dev/null | while read -r k v; do
    echo "CAP $pid ${k%:} $v"; done
done
"""


@dataclass(frozen=True)
class ContainerFacts:
    name: str
    runtime: str                 # runc | containerd
    pid: int
    status: str
    caps: dict[str, list[str]] = field(default_factory=dict)   # CapEff -> ["CAP_CHOWN", ...]
    masks: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class GuestFacts:
    containers: dict[str, ContainerFacts]
    cap_last_cap: int | None
    onboot_exits: dict[str, int]
    shell_ready: bool


def decode_caps(mask: int, cap_last_cap: int | None) -> list[str]:
    """Capability names in `mask`, limited to the bits the guest kernel knows."""
    if cap_last_cap is not None:
        mask &= (1 << (cap_last_cap + 1)) - 1
    return names_from_mask(mask)


def parse_gather(output: str) -> tuple[dict[str, ContainerFacts], int | None]:
    last: int | None = None
    ctrs: dict[str, tuple[str, int, str]] = {}
    caps: dict[int, dict[str, int]] = {}
    for line in output.splitlines():
        f = line.split()
        if not f:
            continue
        try:
            if f[0] == "LASTCAP" and len(f) == 2:
                last = int(f[1])
            elif f[0] == "CTR" and len(f) >= 5:
                ctrs.setdefault(f[2], (f[1], int(f[3]), f[4].lower()))
            elif f[0] == "CAP" and len(f) == 4 and f[2] in CAP_FIELDS:
                caps.setdefault(int(f[1]), {})[f[2]] = int(f[3], 16)
        except ValueError:
            continue
    out: dict[str, ContainerFacts] = {}
    for name, (runtime, pid, status) in sorted(ctrs.items()):
        masks = caps.get(pid, {})
        out[name] = ContainerFacts(name, runtime, pid, status,
                                   {k: decode_caps(v, last) for k, v in masks.items()}, dict(masks))
    return out, last


def gather(machine: "Machine", timeout: float = 60) -> GuestFacts:
    out = machine.succeed(GATHER, timeout=timeout)
    containers, last = parse_gather(out)
    return GuestFacts(containers, last, machine.timeline.onboot_exits(),
                      machine.timeline.get("shell") is not None)
