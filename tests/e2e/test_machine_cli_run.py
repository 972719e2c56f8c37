"""`lkit run` end to end: a person's console session in a pseudo-terminal, quit with Ctrl-A X."""

from __future__ import annotations

import sys
from pathlib import Path

import pexpect

from lkit.machine.testguest import sample_guest

REPO = Path(__file__).resolve().parents[2]


def test_lkit_run_attaches_the_console_and_quits_on_ctrl_a_x(tmp_path: Path) -> None:
    guest = sample_guest()
    guest.files(tmp_path, name="demo")
    child = pexpect.spawn(sys.executable, ["-m", "lkit.cli", "run", str(tmp_path / "demo"), "--accel", "tcg",
                                           "--workdir", str(tmp_path / "work")],
                          cwd=str(REPO), timeout=240, encoding="utf-8")
    try:
        child.expect("booting kernel\\+initrd")
        child.expect("lkit: shell ready")
        child.expect("# ")
        child.send("echo sum-$((40+2))\r")
        child.expect("sum-42")
        child.send("\x01x")
        child.expect("lkit: VM stopped")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert "sum-42" in (tmp_path / "work" / "console.log").read_text()
