"""Kernel badness on the console (kola's list), recognised line by line as the console streams.

A wait that sees a `fatal` badness (a panic) stops at once instead of running into its timeout.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class BadnessPolicy(StrEnum):
    """Which badness on the console fails a wait: fatal only (a panic), any, or never."""

    FATAL = "fatal"
    ANY = "any"
    NEVER = "never"


@dataclass(frozen=True)
class BadnessPattern:
    name: str
    regex: re.Pattern[str]
    fatal: bool = False      # the guest cannot continue: waits abort immediately


@dataclass(frozen=True)
class Badness:
    name: str
    line: str
    host_time: float         # seconds since `cont` (host clock)
    fatal: bool


PATTERNS: tuple[BadnessPattern, ...] = (
    BadnessPattern("kernel-panic", re.compile(r"Kernel panic - not syncing"), fatal=True),
    # A CPU stuck in the kernel for a minute is a hung guest (seen: a TCG SMP livelock), not load.
    BadnessPattern("cpu-stuck", re.compile(r"soft lockup - CPU#\d+ stuck for (?:[6-9]\d|\d{3,})s"), fatal=True),
    BadnessPattern("oops", re.compile(r"\bOops(: |#)")),
    BadnessPattern("warning", re.compile(r"WARNING: CPU: \d+ PID: \d+ at ")),
    BadnessPattern("bug", re.compile(r"\bBUG: ")),
    BadnessPattern("oom", re.compile(r"invoked oom-killer")),
    BadnessPattern("segfault", re.compile(r"\bsegfault at\b|SIGSEGV")),
    BadnessPattern("call-trace", re.compile(r"\bCall Trace:")),
    BadnessPattern("core-dump", re.compile(r"[Cc]ore dump(ed)?\b")),
    BadnessPattern("go-panic", re.compile(r"^(\[[ \d.]+\] )?panic: ")),
)


class BadnessScanner:
    """Classifies console lines; `ignore` holds names or regexes (matching the line) to skip."""

    def __init__(self, ignore: Iterable[str] = (), patterns: Iterable[BadnessPattern] = PATTERNS) -> None:
        self.patterns = tuple(patterns)
        self._ignore_names = {i for i in ignore if any(p.name == i for p in self.patterns)}
        self._ignore_res = [re.compile(i) for i in ignore if i not in self._ignore_names]

    def scan(self, line: str, host_time: float = 0.0) -> Badness | None:
        for pattern in self.patterns:
            if pattern.name in self._ignore_names or not pattern.regex.search(line):
                continue
            if any(r.search(line) for r in self._ignore_res):
                return None
            return Badness(pattern.name, line, host_time, pattern.fatal)
        return None

    def scan_text(self, text: str) -> list[Badness]:
        found = (self.scan(line) for line in text.splitlines())
        return [b for b in found if b is not None]
