"""Boot timeline from console markers (docs/architecture.md, "Guest boot contract").

Each phase is stamped with the host clock when its line arrives (seconds since `cont`) and, when the
marker carries one, the guest's own uptime, so the two clocks can be cross-checked.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TimelineEntry:
    name: str                # firmware, kernel, init, onboot:NAME, services, shell, onshutdown:NAME, poweroff
    host: float              # seconds since cont (host monotonic clock)
    guest: float | None      # guest uptime from the marker, if it has one
    detail: str = ""         # e.g. the onboot exit code


# The one table of the boot contract's console markers: phase -> the text that starts its line
# (onboot/onshutdown lines go on with "NAME exit RC"). The machine waits on them, the timeline stamps
# them, the checks read the timeline.
MARKERS: dict[str, str] = {
    "kernel": "Linux version",
    "banner": "Welcome to LinuxKit",
    "init": "lkit: init start",
    "onboot": "lkit: onboot",
    "services": "lkit: services started",
    "shell": "lkit: shell ready",
    "onshutdown": "lkit: onshutdown",
    "poweroff": "lkit: poweroff",
}
_UPTIME = r"(?:\s+uptime=(?P<up>[\d.]+))?"
_EXIT = r" (?P<n>\S+) exit (?P<rc>-?\d+)"
_MARKERS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(re.escape(text) + (r" \d" if kind == "kernel" else _EXIT + _UPTIME
                                   if kind in ("onboot", "onshutdown") else "" if kind == "banner" else _UPTIME)),
     kind) for kind, text in MARKERS.items())
_KERNEL_TS = re.compile(r"^\[\s*(\d+\.\d+)\]")


def parse_marker(line: str) -> tuple[str, float | None, str] | None:
    """(phase name, guest uptime or None, detail) for a marker line, else None."""
    for regex, kind in _MARKERS:
        m = regex.search(line)
        if m is None:
            continue
        groups = m.groupdict()
        up = float(groups["up"]) if groups.get("up") else None
        if kind == "kernel":
            ts = _KERNEL_TS.match(line)
            return "kernel", float(ts.group(1)) if ts else None, ""
        if kind in ("onboot", "onshutdown"):
            return f"{kind}:{groups['n']}", up, groups["rc"]
        return kind, up, ""
    return None


@dataclass
class Timeline:
    entries: list[TimelineEntry] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def feed(self, line: str, host: float) -> None:
        """Record the first output (firmware hand-over) and every marker."""
        with self._lock:
            if not self.entries and line.strip():
                self.entries.append(TimelineEntry("firmware", host, None))
            marker = parse_marker(line)
            if marker is not None:
                name, up, detail = marker
                self.entries.append(TimelineEntry(name, host, up, detail))

    def get(self, name: str) -> TimelineEntry | None:
        with self._lock:
            return next((e for e in self.entries if e.name == name), None)

    def exits(self, kind: str) -> dict[str, int]:
        """NAME -> exit code of each onboot (or onshutdown) container seen, the last one winning."""
        with self._lock:
            return {e.name.split(":", 1)[1]: int(e.detail) for e in self.entries if e.name.startswith(kind + ":")}

    def onboot_exits(self) -> dict[str, int]:
        return self.exits("onboot")

    def as_list(self) -> list[tuple[str, float, float | None]]:
        with self._lock:
            return [(e.name, e.host, e.guest) for e in self.entries]

    def skew(self) -> float | None:
        """Host minus guest time between the first and last markers with a guest uptime (clock check)."""
        with self._lock:
            stamped = [e for e in self.entries if e.guest is not None and e.name != "kernel"]
        if len(stamped) < 2:
            return None
        a, b = stamped[0], stamped[-1]
        return (b.host - a.host) - (b.guest - a.guest)  # type: ignore[operator]
