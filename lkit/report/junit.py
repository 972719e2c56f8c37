"""JUnit XML, one file per (spec, output format), in the shape Jenkins' xunit JUnit schema accepts.

Built with the `junit-xml` package, then wrapped in our own <testsuites> root: junit-xml adds a
`disabled` attribute that Jenkins' schema does not allow. Quarantined failures become <skipped>
(they must not turn the CI job red); a check that passed after a flaky-boot rerun gets a
<flakyFailure> so the rerun stays visible.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from junit_xml import TestCase, TestSuite

from lkit.report.atomic import write_bytes
from lkit.report.compare import Comparison, Finding
from lkit.report.figures import human, kind
from lkit.report.model import CheckResult, FormatRun, Outcome, RunSummary

EXCERPT_LINES = 40
_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")


def junit_path(run_dir: Path, run: FormatRun) -> Path:
    """reports/<run_id>/junit-<spec-stem>-<format>.xml (junit-<spec-stem>-<machine>-<format>.xml for a machine)"""
    stem, _, machine = Path(run.spec).name.partition("::")   # `SPEC::MACHINE`: a multi-machine suite's machine
    for suffix in (".test.yml", ".yml", ".yaml"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    if machine:
        stem += f"-{machine}"
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{stem}-{run.format}")
    return run_dir / f"junit-{safe}.xml"


def write_junit(summary: RunSummary, run_dir: Path, comparison: Comparison | None = None) -> list[Path]:
    """Write one JUnit file per format run; return their paths (sorted). With a comparison, a failed
    check's message carries what changed since the baseline, and each regression is told in the
    output of the check it concerns (sizes: size_budget, boot times: boot_time)."""
    paths = []
    for run in sorted(summary.runs, key=lambda r: (r.spec, r.format)):
        path = junit_path(Path(run_dir), run)
        findings = [f for f in comparison.regressions if f.spec == run.spec and f.format == run.format] if comparison else []
        write_bytes(path, junit_bytes(run, summary.started, findings))
        paths.append(path)
    return paths


def _case_of(finding: Finding) -> str:
    """The check a regression is told under: the check itself, or the one that measures the figure."""
    k = kind(finding.item)
    if k == "size":
        return "size_budget"
    if k == "time":
        return "boot_time" if finding.item.startswith("boot.") else "build"
    return finding.item


def junit_bytes(run: FormatRun, timestamp: str, findings: list[Finding] | None = None) -> bytes:
    """The XML document for one format run; `findings`: its regressions against a baseline."""
    told: dict[str, list[Finding]] = {}
    for finding in findings or []:
        told.setdefault(_case_of(finding), []).append(finding)
    suite = TestSuite(name=f"{run.spec} [{run.format}]", test_cases=[_case(run, c, told.get(c.check, []))
                                                                     for c in run.checks],
                      timestamp=timestamp, package=run.spec, properties=_properties(run))
    element = suite.build_xml_doc()
    element.attrib.pop("disabled", None)
    for case_el, check in zip(element.iter("testcase"), run.checks):
        if check.rerun and not check.failed:
            flaky = ET.SubElement(case_el, "flakyFailure", {
                "type": "rerun", "message": f"passed after {check.rerun} flaky-boot rerun(s)"})
            flaky.text = ""
    root = ET.Element("testsuites", {
        "name": f"lkit {run.spec} {run.format}", "tests": element.get("tests", "0"),
        "failures": element.get("failures", "0"), "errors": element.get("errors", "0"),
        "time": element.get("time", "0")})
    root.append(element)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _clean(text: str) -> str:
    return _ILLEGAL_XML.sub("\ufffd", text)


def _num(value: float) -> str:
    """Exact and short: 31400000 for a size, 7.9 for a time."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _properties(run: FormatRun) -> dict[str, str]:
    props = {f"figure.{k}": _num(v) for k, v in sorted(run.figures.items())}
    props.update({f"figure.{k}.human": human(k, v) for k, v in sorted(run.figures.items())})
    props.update({f"samples.{k}": " ".join(_num(x) for x in v) for k, v in sorted(run.samples.items())})
    props.update({k: _clean(v) for k, v in sorted(run.properties.items())})
    props["format"] = run.format
    props["arch"] = run.arch
    props["spec"] = run.spec
    return dict(sorted(props.items()))


def _case(run: FormatRun, check: CheckResult, findings: list[Finding]) -> TestCase:
    told = []
    for finding in findings:
        told.append(f"regression against the baseline: {finding.line}")
        told += [f"  {d}" for d in finding.details]
    stdout = "\n".join(filter(None, ["\n".join(told), _excerpt(check)]))
    case = TestCase(name=check.check, classname=f"{run.spec}.{run.format}",
                    elapsed_sec=round(check.duration, 3), stdout=_clean(stdout) or None)
    message = _clean(check.message.splitlines()[0] if check.message else check.outcome)
    details = [d for f in findings for d in f.details]
    if details:   # the first lines of what changed, where CI shows a failure: its message
        message = _clean(f"{message} | what changed: " + "; ".join(details[:2]))
    output = _clean("\n".join([check.message, *(["what changed since the baseline:"] + details if details else [])]))
    if check.quarantined and check.failed:
        case.add_skipped_info(message=f"quarantined: {message}")
    elif check.outcome == Outcome.FAILED:
        case.add_failure_info(message=message, output=output, failure_type="check")
    elif check.outcome == Outcome.ERROR:
        case.add_error_info(message=message, output=output, error_type=Outcome.ERROR)
    elif check.outcome == Outcome.SKIPPED:
        case.add_skipped_info(message=message)
    return case


def _excerpt(check: CheckResult) -> str:
    """The tail of the first text attachment (the console log, usually) plus the attachment list."""
    parts = []
    if check.rerun:
        parts.append(f"flaky-boot reruns: {check.rerun}")
    for name, path in sorted(check.attachments.items()):
        parts.append(f"attachment {name}: {path}")
    for name, path in sorted(check.attachments.items()):
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                lines = handle.read().splitlines()[-EXCERPT_LINES:]
        except OSError:
            continue
        parts.append(f"--- last {len(lines)} lines of {name} ---")
        parts.extend(lines)
        break
    return _clean("\n".join(parts))
