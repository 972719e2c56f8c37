"""`NAME.test.yml` values that change how a machine is started."""

from __future__ import annotations

from pathlib import Path

import pytest

from lkit.errors import SpecError
from lkit.pytest_plugin.expectations import load_expectations


def _load(tmp_path: Path, text: str):
    path = tmp_path / "x.test.yml"
    path.write_text(text)
    return load_expectations(path)


def test_machine_size_defaults_and_overrides(tmp_path: Path) -> None:
    default = _load(tmp_path, "boot: {timeout: 60}\n")
    assert (default.memory, default.cpus) == (1024, None)   # None: the run's --lkit-cpus
    one = _load(tmp_path, "memory: 512\ncpus: 1\n")
    assert (one.memory, one.cpus) == (512, 1)


def test_cpus_must_be_a_whole_number(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"x\.test\.yml.*cpus"):
        _load(tmp_path, "cpus: two\n")
