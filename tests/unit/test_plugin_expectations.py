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


# --- hostile files: the spec loader's guards (lkit.spec.yamlmarks), each error with file:line --------

ALIAS_BOMB = """a: &a ["x","x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
services: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]
"""


@pytest.mark.parametrize("text, line, words", [
    (ALIAS_BOMB, 4, "aliases expand to more than"),
    ("memory: 512\nboot: {timeout: 60}\nmemory: 1024\n", 3, "duplicate key 'memory' (first at line 1)"),
    ("boot:\n  markers: [a]\n  markers: [b]\n", 3, "boot.markers: duplicate key"),
    ("boot: " + "[" * 100 + "]" * 100 + "\n", 1, "nesting deeper than"),
    ("memory: 512\nboot: {timeout: 60\n", 3, "YAML syntax error"),
])
def test_hostile_expectations_are_clean_spec_errors(tmp_path: Path, text: str, line: int, words: str) -> None:
    with pytest.raises(SpecError) as exc:
        _load(tmp_path, text)
    assert exc.value.where == f"{tmp_path / 'x.test.yml'}:{line}"
    assert words in exc.value.message


def test_oversized_expectations_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="larger than 8 MiB") as exc:
        _load(tmp_path, "# " + "x" * (8 * 1024 * 1024) + "\n")
    assert str(tmp_path / "x.test.yml") in str(exc.value)


def test_errors_name_the_field_and_line(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as exc:
        _load(tmp_path, "memory: 512\nports:\n  - {port: 80}\n  - {port: 70000}\n")
    assert exc.value.where.endswith("x.test.yml:4") and "ports[1].port" in exc.value.message
