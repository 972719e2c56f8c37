"""Accelerator choice: explicit, probe verdict cached on disk, one warning on fallback to TCG."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from lkit.errors import InfraError, LkitError
from lkit.machine import accel


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("LKIT_TIMEOUT_MULTIPLIER", raising=False)
    monkeypatch.setattr(accel, "_warned", False)
    monkeypatch.setattr(accel, "qemu_version", lambda qemu: "QEMU emulator version 7.2.0")


def test_explicit_choices_do_not_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "probe_kvm", lambda *a, **k: pytest.fail("probed"))
    assert accel.resolve("tcg") == accel.AccelChoice("tcg", accel.MULTIPLIERS["tcg"], "requested")
    assert accel.resolve("KVM").accel == "kvm"
    assert accel.MULTIPLIERS["tcg"] > accel.MULTIPLIERS["kvm"]


def test_multiplier_override(monkeypatch: pytest.MonkeyPatch) -> None:
    assert accel.resolve("tcg", multiplier=5).multiplier == 5
    monkeypatch.setenv("LKIT_TIMEOUT_MULTIPLIER", "7.5")
    assert accel.resolve("tcg").multiplier == 7.5


def test_unknown_accel() -> None:
    with pytest.raises(InfraError, match="auto, kvm or tcg"):
        accel.resolve("hvf")


def test_auto_falls_back_with_one_warning_and_caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[Path] = []

    def fake_probe(kernel: Path, qemu: str = "", timeout: float = 0) -> tuple[bool, str]:
        calls.append(kernel)
        return False, "guest hangs"

    monkeypatch.setattr(accel, "probe_kvm", fake_probe)
    monkeypatch.setattr(os.path, "exists", lambda p: True if p == "/dev/kvm" else os.path.lexists(p))
    monkeypatch.setattr(os, "access", lambda p, m: True)
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = accel.resolve("auto", kernel=kernel)
        second = accel.resolve("auto", kernel=kernel)
    assert first.accel == second.accel == "tcg"
    assert calls == [kernel]                                 # the second verdict came from the cache
    assert "cached" in second.reason
    assert accel.cache_path().is_file()
    msgs = [w for w in caught if issubclass(w.category, accel.AccelWarning)]
    assert len(msgs) == 1 and "TCG" in str(msgs[0].message) and "guest hangs" in str(msgs[0].message)


def test_auto_uses_kvm_when_the_probe_boots(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(accel, "probe_kvm", lambda *a, **k: (True, "booted"))
    monkeypatch.setattr(os.path, "exists", lambda p: True if p == "/dev/kvm" else os.path.lexists(p))
    monkeypatch.setattr(os, "access", lambda p, m: True)
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        choice = accel.resolve("auto", kernel=kernel)
    assert choice.accel == "kvm" and choice.multiplier == accel.MULTIPLIERS["kvm"]


def test_no_dev_kvm_means_tcg_without_probing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os.path, "exists", lambda p: False if p == "/dev/kvm" else os.path.lexists(p))
    monkeypatch.setattr(accel, "probe_kvm", lambda *a, **k: pytest.fail("probed"))
    with pytest.warns(accel.AccelWarning, match="/dev/kvm does not exist"):
        assert accel.resolve("auto").accel == "tcg"


@pytest.mark.parametrize("value", ["fast", "0", "-2", "nan", "inf", "1,5"])
def test_bad_multiplier_env_is_a_clear_user_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("LKIT_TIMEOUT_MULTIPLIER", value)
    with pytest.raises(LkitError) as exc:
        accel.resolve("tcg")
    text = str(exc.value)
    assert "LKIT_TIMEOUT_MULTIPLIER" in text and repr(value) in text and "positive number" in text
    assert exc.value.hint and "unset" in exc.value.hint
