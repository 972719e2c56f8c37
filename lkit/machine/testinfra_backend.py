"""A testinfra backend that runs commands through a Machine's command channel.

    host = lkit_host(machine)                 # or testinfra.get_host("lkit://<name>") after register()
    assert host.file("/etc/hostname").exists

The guest is busybox-based: testinfra's modules mostly detect "linux" and call stat, ps, ip, sysctl,
test, cat, which busybox provides (lkit's init image adds procps `ps`).
"""

from __future__ import annotations

import itertools
import weakref
from typing import TYPE_CHECKING, Any

import testinfra.backend
import testinfra.host
from testinfra.backend.base import BaseBackend, CommandResult

if TYPE_CHECKING:
    from lkit.machine.vm import Machine

# Debian's busybox sh runs its own applets before anything on PATH; testinfra's process module needs
# procps' `ps -o ...time...`, which lkit's init image carries at /usr/bin/ps. A shell function wins over
# an applet, so commands see procps when it is there and busybox's ps otherwise.
PREFER_PROCPS = '[ -x /usr/bin/ps ] && ps() { /usr/bin/ps "$@"; }; '

_MACHINES: "weakref.WeakValueDictionary[str, Machine]" = weakref.WeakValueDictionary()
_counter = itertools.count(1)


class LkitBackend(BaseBackend):  # type: ignore[misc]
    NAME = "lkit"

    def __init__(self, hostname: str, *args: Any, timeout: float = 60, **kwargs: Any) -> None:
        super().__init__(hostname, *args, **kwargs)
        self.timeout = float(timeout)

    @property
    def machine(self) -> "Machine":
        try:
            return _MACHINES[self.hostname]
        except KeyError:
            raise RuntimeError(f"no running lkit machine registered as {self.hostname!r}") from None

    def get_encoding(self) -> str:  # the guest has no python: avoid testinfra probing for it
        return "utf-8"

    def run(self, command: str, *args: str, **kwargs: Any) -> CommandResult:
        cmd = self.get_command(command, *args)
        res = self.machine.run(PREFER_PROCPS + cmd, timeout=self.timeout)
        return self.result(res.rc, self.encode(cmd), res.stdout_bytes, res.stderr_bytes)


def register(machine: "Machine", name: str | None = None) -> str:
    """Make `machine` reachable as testinfra host `lkit://<name>`; returns the name."""
    name = name or f"vm{next(_counter)}"
    _MACHINES[name] = machine
    testinfra.backend.BACKENDS.setdefault("lkit", f"{__name__}.LkitBackend")
    return name


def lkit_host(machine: "Machine", name: str | None = None) -> testinfra.host.Host:
    """A testinfra Host for `machine` (a new one per call; not cached across machines)."""
    name = register(machine, name)
    backend = LkitBackend(name)
    host = testinfra.host.Host(backend)
    backend.set_host(host)
    return host


testinfra.backend.BACKENDS.setdefault("lkit", f"{__name__}.LkitBackend")
