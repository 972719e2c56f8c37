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


@pytest.mark.parametrize("cores, workers, expected", [(2, None, 2), (8, None, 2), (1, None, 1), (2, "2", 1),
                                                      (8, "2", 2), (2, "4", 1)])
def test_default_vcpus_share_the_host_among_xdist_workers(monkeypatch, cores: int, workers: str | None,
                                                          expected: int) -> None:
    from lkit.pytest_plugin import options

    monkeypatch.setattr(options.os, "cpu_count", lambda: cores)
    if workers is None:
        monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    else:
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", workers)
    assert options.default_cpus() == expected
