"""Allure helpers: no-ops without --alluredir; with it, results that follow allure's format and load."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from lkit.report import allure as lallure

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[2]

INNER_TEST = '''
import json, pathlib
from lkit.report import allure as la
from lkit.report.model import FormatRun

def test_boot(tmp_path):
    log = tmp_path / "console.log"
    log.write_text("Welcome to LinuxKit\\nlkit: shell ready uptime=5.2\\n")
    la.parameters("suites/linuxkit.yml", "iso-efi", accelerator="tcg")
    with la.step("boot iso-efi"):
        attached = la.attach_file(log, "console", "log")
    json_attached = la.attach_json({"boot.shell": 5.2}, "figures")
    svg_attached = la.attach_text("<svg xmlns='http://www.w3.org/2000/svg'/>", "timeline", "svg")
    run = FormatRun("suites/linuxkit.yml", "iso-efi", figures={"boot.kernel": 1.8, "boot.shell": 5.2})
    run_attached = la.attach_format_run(run)
    flags = [la.is_active(), attached, json_attached, svg_attached, run_attached]
    pathlib.Path("{marker}").write_text(json.dumps(flags))
'''


@pytest.fixture(autouse=True)
def lkit_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The inner pytest runs in a subprocess from a temporary folder: let it import lkit."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


def run_inner(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, list[bool]]:
    marker = pytester.path / "marker.json"
    pytester.makepyfile(test_inner=INNER_TEST.replace("{marker}", str(marker)))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:lkit", *args, timeout=120)
    return result, json.loads(marker.read_text())


def test_helpers_are_no_ops_without_allure(tmp_path):
    assert not lallure.is_active()
    log = tmp_path / "x.log"
    log.write_text("x")
    assert lallure.attach_file(log, "x") is False
    assert lallure.attach_json({"a": 1}, "a") is False
    with lallure.step("nothing"):
        lallure.parameters("s.yml", "iso-bios")
    assert list(tmp_path.iterdir()) == [log]


def test_inner_run_without_alluredir_writes_nothing(pytester):
    result, flags = run_inner(pytester)
    result.assert_outcomes(passed=1)
    assert flags == [False] * 5
    assert not list(pytester.path.rglob("*-result.json"))


def allure_results(pytester: pytest.Pytester) -> tuple[Path, dict]:
    outdir = pytester.path / "allure-results"
    result, flags = run_inner(pytester, f"--alluredir={outdir}")
    result.assert_outcomes(passed=1)
    assert flags == [True] * 5
    [path] = list(outdir.glob("*-result.json"))
    return outdir, json.loads(path.read_text())


def test_results_follow_allure_format_and_load(pytester, tmp_path):
    """Fields per allure's documented result file (uuid, historyId, name, status, start/stop, labels,
    parameters, steps, attachments {name, source, type} with the source file beside it), then
    `allure generate` (npm allure-commandline, Java 17) reads them into a report."""
    outdir, data = allure_results(pytester)
    assert data["status"] == "passed" and data["name"] == "test_boot"
    assert data["uuid"] and data["historyId"] and data["start"] <= data["stop"]
    params = {p["name"]: p["value"].strip("'") for p in data["parameters"]}
    assert params == {"spec": "suites/linuxkit.yml", "format": "iso-efi", "accelerator": "tcg"}
    labels = {(lab["name"], lab["value"]) for lab in data["labels"]}
    assert {("suite", "suites/linuxkit.yml"), ("subSuite", "iso-efi"), ("tag", "iso-efi")} <= labels
    [step] = data["steps"]
    assert step["name"] == "boot iso-efi" and step["status"] == "passed"
    [console] = step["attachments"]
    assert console["name"] == "console" and console["type"] == "text/plain"
    assert "shell ready" in (outdir / console["source"]).read_text()
    kinds = {a["name"]: a["type"] for a in data["attachments"]}
    assert kinds == {"figures": "application/json", "timeline": "image/svg+xml",
                     "figures iso-efi": "application/json", "boot timeline iso-efi": "image/svg+xml"}
    svg = next(a for a in data["attachments"] if a["name"] == "boot timeline iso-efi")
    assert "<rect" in (outdir / svg["source"]).read_text()
    for attachment in data["attachments"]:
        assert (outdir / attachment["source"]).is_file()
    allure = shutil.which("allure")
    assert allure, "the allure CLI is not installed: npm install -g allure-commandline"
    report = tmp_path / "allure-report"
    proc = subprocess.run([allure, "generate", str(outdir), "-o", str(report), "--clean"],
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr
    [case_file] = list((report / "data" / "test-cases").glob("*.json"))
    case = json.loads(case_file.read_text())
    assert case["name"] == "test_boot" and case["status"] == "passed"
    assert {p["name"] for p in case["parameters"]} == {"spec", "format", "accelerator"}
