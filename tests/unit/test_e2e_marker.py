"""`-m "not e2e"` never boots a VM: the folder rule of tests/conftest.py, checked on the real test tree
(a collection check) and on a small tree (the refusing QEMU a test without the mark finds on PATH)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[2]
# Tests that boot QEMU outside tests/e2e (through a fixture or a child pytest/lkit).
BOOTING_ELSEWHERE = ("tests/reliability/test_guest_faults.py::", "tests/reliability/test_pytest_processes.py::",
                     "tests/reliability/test_qemu_faults.py::test_qemu_killed_mid_boot",
                     "tests/reliability/test_qemu_faults.py::test_qmp_socket_closed",
                     "tests/reliability/test_qemu_faults.py::test_sigint_to_pytest_with_vm_up",
                     "tests/reliability/test_qemu_faults.py::test_sigint_to_plugin_suite_run")


def collected(*args: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           *args, "tests/e2e", "tests/reliability"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [line for line in proc.stdout.splitlines() if line.startswith("tests/")]


def test_not_e2e_selects_nothing_that_boots() -> None:
    ids = collected("-m", "not e2e")
    assert ids, "the no-VM part of tests/reliability should still be collected"
    assert not [i for i in ids if i.startswith("tests/e2e/")]
    assert not [i for i in ids if i.startswith(BOOTING_ELSEWHERE)]
    e2e = collected("-m", "e2e")
    assert any(i.startswith("tests/e2e/test_machine_boot.py::") for i in e2e)      # by folder, no mark in it
    assert any(i.startswith("tests/reliability/test_guest_faults.py::") for i in e2e)


CONFTEST = (ROOT / "tests" / "conftest.py").read_text()
BOOTS = """
import os, subprocess
import pytest

def test_boots():
    proc = subprocess.run(["qemu-system-x86_64", "-version"], capture_output=True, text=True)
    assert proc.returncode == 97, proc.stderr
    assert "test_boots" in proc.stderr and "not marked e2e" in proc.stderr

@pytest.mark.e2e
def test_marked():
    assert os.environ.get("LKIT_TEST_NOT_E2E", "").rpartition("::")[2] != "test_marked"
"""


def test_a_test_without_the_mark_cannot_start_qemu(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmarkers =\n    e2e: boots\n")
    tests = pytester.mkdir("tests")
    (tests / "conftest.py").write_text(CONFTEST)
    (tests / "unit").mkdir()
    (tests / "unit" / "test_x.py").write_text(BOOTS)
    (tests / "e2e").mkdir()
    (tests / "e2e" / "test_y.py").write_text("import os\n\ndef test_in_e2e():\n"
                                             "    assert os.environ.get('LKIT_TEST_NOT_E2E', '').rpartition('::')[2]"
                                             " != 'test_in_e2e'\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:xdist", "tests")
    result.assert_outcomes(passed=3)
    deselected = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:xdist", "-m", "not e2e", "tests")
    deselected.assert_outcomes(passed=1, deselected=2)
