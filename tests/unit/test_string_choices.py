"""The StrEnums of hand-checked string choices keep the strings they replaced: on disk, on the
command line and in comparisons with plain strings."""

from __future__ import annotations

import json

from lkit.build.tree import FsNode, NodeKind
from lkit.core.formats import FORMATS, BootKind
from lkit.machine import accel
from lkit.machine.badness import BadnessPolicy
from lkit.machine.channel import ChannelMode
from lkit.report.model import OUTCOMES, CheckResult, FormatRun, Outcome, RunSummary


def test_values_are_the_old_strings() -> None:
    assert list(accel.Accel) == ["kvm", "tcg"] and accel.CHOICES == ("auto", "kvm", "tcg")
    assert list(ChannelMode) == ["auto", "agent", "console"]
    assert list(BadnessPolicy) == ["fatal", "any", "never"]
    assert list(Outcome) == ["passed", "failed", "error", "skipped"] == list(OUTCOMES)
    assert list(BootKind) == ["direct", "cdrom", "disk"]
    assert list(NodeKind) == ["dir", "file", "symlink", "hardlink", "fifo"]
    assert FORMATS["iso-efi"].boot == "cdrom" and f"{accel.Accel.KVM}" == "kvm" and str(Outcome.ERROR) == "error"
    assert FsNode(NodeKind.FIFO, 0o600).type_bits == FsNode("fifo", 0o600).type_bits  # type: ignore[arg-type]


def test_summary_json_holds_plain_strings() -> None:
    summary = RunSummary("r", "s", "f", runs=[FormatRun("seed", "tar", checks=[CheckResult("c", Outcome.FAILED)])])
    text = json.dumps(summary.to_json())
    assert '"outcome": "failed"' in text
    again = RunSummary.from_json(json.loads(text))
    assert again == summary and again.runs[0].checks[0].outcome is Outcome.FAILED and again.runs[0].checks[0].failed
