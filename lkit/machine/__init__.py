"""The machine layer: boot an artifact under QEMU, watch its console, run commands in it.

    from lkit.machine import Machine, boot_target
    with Machine(boot_target("kernel+initrd", files), workdir=tmp) as m:
        m.wait_for_console_text("lkit: shell ready", 120)
        rc, out, err = m.run("uname -r")

Modules: artifacts (format + files -> BootTarget), firmware (OVMF via QEMU descriptors), accel (auto
KVM probe / TCG), qemu (command line), qmp (QMP client), stream (serial reader), channel (command
channel framing; lkit-agent and console transports), vm (Machine), timeline, badness, facts,
testinfra_backend, cli (`lkit run`), testguest (a cached tiny guest for tests and benchmarks).
"""

from __future__ import annotations

from lkit.machine.artifacts import BootTarget, boot_target, guess_format
from lkit.machine.badness import Badness, BadnessScanner
from lkit.machine.channel import CommandResult
from lkit.machine.qmp import QmpEvent
from lkit.machine.timeline import Timeline, TimelineEntry
from lkit.machine.vm import Machine, ShutdownResult

__all__ = ["Badness", "BadnessScanner", "BootTarget", "CommandResult", "Machine", "QmpEvent", "ShutdownResult",
           "Timeline", "TimelineEntry", "boot_target", "guess_format"]
