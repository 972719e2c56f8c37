"""The gate and the reports explain each regression with what changed inside the image."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from lkit.build.manifest import FileRecord
from lkit.cli import main
from lkit.errors import EXIT_FAILED, EXIT_REGRESSION
from lkit.report.model import RunSummary
from lkit.report.summary import write_folder
from tests.unit.test_diff import base_manifest

DATA = Path(__file__).resolve().parents[1] / "data" / "reports"
SPEC = "suites/linuxkit.yml"


def run_folder(folder: Path, summary: RunSummary, manifest) -> Path:
    manifest.save(folder / "manifests" / "linuxkit.json")
    for run in summary.runs:
        run.properties["manifest"] = "manifests/linuxkit.json"
        run.properties.pop("manifest.sha256", None)
    write_folder(summary, folder)
    return folder


def changed_manifest():
    m = base_manifest()
    m.files["containers/services/nginx/rootfs/usr/share/blob"] = FileRecord(
        "containers/services/nginx/rootfs/usr/share/blob", "f", 0o644, 0, 0, 3_000_000, "7" * 64, None, 1)
    nginx = m.containers["services/nginx"]
    for s in ("effective", "permitted", "bounding"):
        nginx.capabilities[s] = sorted(nginx.capabilities[s] + ["CAP_NET_RAW"])
    m.kernel.cmdline = "console=ttyS0 lkit.x=1"  # type: ignore[union-attr]
    return m


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    base = RunSummary.load(DATA / "run-base.json")
    new = copy.deepcopy(base)
    for run in new.runs:
        run.figures["size.initrd"] += 3_000_000
    return (run_folder(tmp_path / "reports" / "base", base, base_manifest()),
            run_folder(tmp_path / "reports" / "new", new, changed_manifest()))


def test_gate_explains_each_regression_and_lists_what_changed(runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    base, new = runs
    baseline = tmp_path / "ci" / "baseline.json"
    assert main(["report", "baseline", str(base), "-o", str(baseline)]) == 0
    data = json.loads(baseline.read_text())
    ref = data["formats"][f"{SPEC} iso-efi"]["manifest"]
    assert ref["path"].startswith("baseline.manifests/linuxkit-") and len(ref["sha256"]) == 64
    assert (baseline.parent / ref["path"]).is_file()
    capsys.readouterr()
    assert main(["report", "compare", str(baseline), str(new), "--write-reports"]) == EXIT_REGRESSION
    lines = capsys.readouterr().out.splitlines()
    at = lines.index(next(x for x in lines if x.startswith(f"REGRESSION {SPEC} iso-efi: initrd size")))
    assert lines[at + 1].strip().startswith("initrd files +3.0 MB uncompressed: nginx:/usr/share/blob +3.0 MB (added, lkit/nginx:1.22)")
    assert lines[at + 2].strip() == "by image: services/nginx +3.0 MB"
    assert (f"REGRESSION {SPEC} iso-efi: privileges gained since the baseline: nginx gained CAP_NET_RAW "
            "(suites/linuxkit.yml:47)") in lines
    assert f"changed    {SPEC}: containers: nginx gained CAP_NET_RAW (suites/linuxkit.yml:47)" in lines
    assert f"changed    {SPEC}: kernel: cmdline 'console=ttyS0' -> 'console=ttyS0 lkit.x=1'" in lines
    md = (new / "report.md").read_text()
    assert "### What changed since the baseline" in md and "+ nginx:/usr/share/blob +3.0 MB" in md
    assert "  - initrd files +3.0 MB uncompressed" in md
    html = (new / "report.html").read_text()
    assert "What changed since the baseline" in html and 'aria-label="size change per image"' in html
    junit = next(new.glob("junit-*iso-efi.xml")).read_text()
    assert "regression against the baseline" in junit and "nginx:/usr/share/blob" in junit


def test_a_failed_check_carries_what_changed_in_the_gate_and_junit(runs, capsys: pytest.CaptureFixture[str]):
    base, new = runs
    summary = RunSummary.load(new)
    check = next(r for r in summary.runs if r.format == "iso-efi").check("capabilities")
    assert check is not None
    check.outcome, check.message = "failed", "capabilities differ from the spec: nginx effective: extra CAP_NET_RAW"
    write_folder(summary, new)
    capsys.readouterr()
    assert main(["report", "compare", str(base), str(new), "--write-reports"]) == EXIT_FAILED
    lines = capsys.readouterr().out.splitlines()
    at = lines.index(next(x for x in lines if x.startswith(f"FAILED     {SPEC} iso-efi: capabilities failed")))
    assert lines[at + 1].strip() == "nginx gained CAP_NET_RAW (suites/linuxkit.yml:47)"
    regression = next(x for x in lines if x.startswith(f"REGRESSION {SPEC} iso-efi: check capabilities"))
    assert lines[lines.index(regression) + 1].strip() == "nginx gained CAP_NET_RAW (suites/linuxkit.yml:47)"
    assert not any("privileges gained" in x and "iso-efi" in x for x in lines)   # told once, by the check
    junit = next(new.glob("junit-*iso-efi.xml")).read_text()
    assert 'message="capabilities differ from the spec: nginx effective: extra CAP_NET_RAW | what changed: nginx gained' in junit


def test_a_damaged_baseline_manifest_is_a_note_not_a_crash(runs, capsys: pytest.CaptureFixture[str]):
    base, new = runs
    manifest = base / "manifests" / "linuxkit.json"
    manifest.write_text(manifest.read_text()[:500])
    assert main(["report", "compare", str(base), str(new)]) == EXIT_REGRESSION
    out = capsys.readouterr().out
    assert "cannot say what changed: the manifest is truncated" in out
    assert "Traceback" not in out


def test_identical_images_say_nothing_changed(runs, capsys: pytest.CaptureFixture[str]):
    base, _ = runs
    assert main(["report", "compare", str(base), str(base)]) == 0
    out = capsys.readouterr().out
    assert "changed  " not in out and "REGRESSION" not in out
    assert main(["diff", str(base), str(base)]) == 0
