"""JUnit per format: validates against the Jenkins (xunit) JUnit schema; content as documented."""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema

from lkit.report.junit import junit_bytes, write_junit
from lkit.report.model import CheckResult, RunSummary

DATA = Path(__file__).resolve().parents[1] / "data" / "reports"


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(DATA / "junit-jenkins.xsd"))


def mixed() -> RunSummary:
    """Every outcome, a rerun, a quarantined failure, an attachment and hostile text."""
    s = RunSummary.load(DATA / "run-base.json")
    run = next(r for r in s.runs if r.format == "iso-efi")
    run.check("capabilities").outcome = "failed"
    run.check("capabilities").message = "rngd: extra CAP_SYS_RAWIO\nfull set: ..."
    run.check("shutdown").outcome = "error"
    run.check("shutdown").message = "QEMU exited early <&> \x07bell"
    run.check("onboot").outcome = "skipped"
    run.check("boots").rerun = 1
    run.checks.append(CheckResult("ports", "failed", "port 22 closed", quarantined=True))
    return s


def test_one_valid_file_per_format(tmp_path, schema):
    s = mixed()
    console = tmp_path / "console.log"
    console.write_text("".join(f"line {i}\n" for i in range(100)) + "lkit: shell ready uptime=5.2\n")
    s.runs[0].check("boots").attachments["console"] = str(console)
    paths = write_junit(s, tmp_path)
    assert [p.name for p in paths] == ["junit-linuxkit-iso-efi.xml", "junit-linuxkit-kernel_initrd.xml"]
    for path in paths:
        schema.validate(str(path))        # raises with the offending element when invalid


def test_case_outcomes_and_properties(tmp_path, schema):
    s = mixed()
    console = tmp_path / "console.log"
    console.write_text("".join(f"line {i}\n" for i in range(100)))
    run = next(r for r in s.runs if r.format == "iso-efi")
    run.check("boots").attachments["console"] = str(console)
    root = ET.fromstring(junit_bytes(run, s.started))
    suite = root.find("testsuite")
    assert suite.get("name") == "suites/linuxkit.yml [iso-efi]"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("9", "1", "1", "2")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    fail = cases["capabilities"].find("failure")
    assert fail.get("message") == "rngd: extra CAP_SYS_RAWIO"      # one line; full text in the body
    assert "full set" in fail.text
    assert cases["shutdown"].find("error").get("message") == "QEMU exited early <&> \ufffdbell"
    assert cases["ports"].find("skipped").get("message") == "quarantined: port 22 closed"
    assert cases["boots"].find("flakyFailure").get("message") == "passed after 1 flaky-boot rerun(s)"
    out = cases["boots"].find("system-out").text
    assert "attachment console:" in out and "line 99" in out and "line 59" not in out
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["figure.size.initrd"] == "31400000"
    assert props["figure.size.initrd.human"] == "31.4 MB"
    assert props["samples.boot.shell"] == "7.7 7.9 8.3"
    assert props["accelerator"] == "tcg" and props["format"] == "iso-efi"
    schema.validate(ET.fromstring(junit_bytes(run, s.started)))


def test_schema_rejects_what_jenkins_rejects(schema):
    """The test schema is not a rubber stamp: junit-xml's own `disabled` attribute fails it."""
    bad = b'<testsuites><testsuite name="x" tests="1" failures="0" errors="0" disabled="0"/></testsuites>'
    assert not schema.is_valid(bad.decode())
    assert not schema.is_valid('<testsuites><testsuite name="x" tests="1" failures="0"/></testsuites>')


def test_output_is_deterministic(tmp_path):
    s = mixed()
    a = [p.read_bytes() for p in write_junit(s, tmp_path / "a")]
    b = [p.read_bytes() for p in write_junit(copy.deepcopy(s), tmp_path / "b")]
    assert a == b
