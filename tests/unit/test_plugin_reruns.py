"""A boot that fails and is rerun keeps its console and screen: the rerun cannot overwrite them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from lkit.errors import MachineError
from lkit.pytest_plugin.state import Group


def test_failed_boot_evidence_survives_the_rerun(tmp_path: Path, monkeypatch) -> None:
    run = SimpleNamespace(run_dir=tmp_path, settings=SimpleNamespace(reruns=1), release_others=lambda g: None)
    suite = SimpleNamespace(id="seed.yml", spec=SimpleNamespace(name="seed"))
    group = Group(suite=suite, format="kernel+initrd", run=run)  # type: ignore[arg-type]
    attempts: list[int] = []

    def fake_boot() -> object:
        attempts.append(1)
        console = group.console_path()
        console.parent.mkdir(parents=True, exist_ok=True)
        console.write_text(f"console of attempt {len(attempts)}\n")
        if len(attempts) == 1:
            screen = tmp_path / "screens" / "seed-kernel+initrd.png"
            screen.parent.mkdir(parents=True, exist_ok=True)
            screen.write_bytes(b"png")
            group.evidence["screen at the failure (QMP screendump)"] = screen
            raise MachineError("soft lockup: CPU#0 stuck for 60s")
        return "vm"

    monkeypatch.setattr(group, "_boot", fake_boot)
    assert group.machine() == "vm" and group.boot_attempts == 2
    kept_console = tmp_path / "console" / "seed-kernel+initrd.failed-boot-1.log"
    kept_screen = tmp_path / "screens" / "seed-kernel+initrd.failed-boot-1.png"
    assert kept_console.read_text() == "console of attempt 1\n"
    assert (tmp_path / "console" / "seed-kernel+initrd.log").read_text() == "console of attempt 2\n"
    assert group.evidence == {"console of failed boot 1": kept_console, "screen of failed boot 1": kept_screen}
