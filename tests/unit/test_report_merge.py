"""`lkit report merge`: shard runs join into one run, and anything that does not add up is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lkit.errors import EXIT_INFRA
from lkit.report.model import CheckResult, FormatRun, RunSummary, Timing
from lkit.report.summary import write_folder

REV = "sha256:" + "a" * 64


def _shard(tmp: Path, name: str, shard: str, groups: list[tuple[str, str]], *, revision: str = REV,
           artifacts: dict[str, str] | None = None, failed: str | None = None) -> Path:
    runs = []
    for spec, fmt in groups:
        checks = [CheckResult("build", "passed"), CheckResult("boots", "failed" if failed == fmt else "passed",
                                                               message="boom" if failed == fmt else "")]
        runs.append(FormatRun(spec=spec, format=fmt, checks=checks, figures={"size.total": 1000.0},
                              timing=Timing(wall=10.0), artifacts=dict(artifacts or {})))
    summary = RunSummary(run_id=name, started=f"2026-12-04T10:0{shard[0]}:00Z", finished="2026-12-04T10:10:00Z",
                         runs=runs, exit_status=1 if failed else 0, shard=shard, revision=revision,
                         timing={"wall": 10.0})
    folder = tmp / name
    write_folder(summary, folder)
    (folder / "console").mkdir()
    (folder / "console" / f"{name}.log").write_text("console\n")
    return folder


def _lkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lkit.cli", "report", *args], capture_output=True, text=True,
                          timeout=60)


def _three(tmp: Path, **kw) -> list[Path]:
    return [_shard(tmp, "s1", "1/3", [("suites/a.yml", "iso-efi")], **kw),
            _shard(tmp, "s2", "2/3", [("suites/a.yml", "kernel+initrd"), ("suites/b.yml", "kernel+initrd")]),
            _shard(tmp, "s3", "3/3", [("suites/c.yml", "kernel+initrd")])]


def test_merge_joins_every_group_and_gates_like_one_run(tmp_path: Path) -> None:
    shards = _three(tmp_path)
    out = tmp_path / "merged"
    res = _lkit("merge", *map(str, shards), "-o", str(out), "--expect", "3")
    assert res.returncode == 0, res.stderr
    merged = RunSummary.load(out)
    assert sorted((r.spec, r.format) for r in merged.runs) == [
        ("suites/a.yml", "iso-efi"), ("suites/a.yml", "kernel+initrd"), ("suites/b.yml", "kernel+initrd"),
        ("suites/c.yml", "kernel+initrd")]
    assert merged.merged_from == ["s1", "s2", "s3"] and merged.revision == REV
    assert sorted(p.name for p in out.glob("junit-*.xml")) == ["junit-a-iso-efi.xml", "junit-a-kernel_initrd.xml",
                                                               "junit-b-kernel_initrd.xml", "junit-c-kernel_initrd.xml"]
    assert (out / "report.md").exists() and (out / "console" / "s2.log").exists()
    assert _lkit("gate", str(out)).returncode == 0


def test_a_failed_check_in_one_shard_fails_the_merged_gate(tmp_path: Path) -> None:
    shards = [_shard(tmp_path, "s1", "1/2", [("suites/a.yml", "iso-efi")], failed="iso-efi"),
              _shard(tmp_path, "s2", "2/2", [("suites/b.yml", "kernel+initrd")])]
    assert _lkit("merge", *map(str, shards), "-o", str(tmp_path / "m")).returncode == 0
    gate = _lkit("gate", str(tmp_path / "m"))
    assert gate.returncode == 1 and "boom" in gate.stdout


@pytest.mark.parametrize(("case", "needle"), [
    ("missing", "shard 3/3 missing"),
    ("twice", "shard 2/3 given twice"),
    ("killed", "has no summary.json: the shard was killed"),
    ("revision", "ran suite revision"),
    ("duplicate-group", "suites/a.yml iso-efi is in two runs"),
    ("digests", "the shards tested different builds"),
    ("count", "is one of 2 shards, --expect says 3"),
])
def test_merge_refuses_what_does_not_add_up(tmp_path: Path, case: str, needle: str) -> None:
    s1 = _shard(tmp_path, "s1", "1/3", [("suites/a.yml", "iso-efi")], artifacts={"a-kernel": "sha256:1"})
    s2 = _shard(tmp_path, "s2", "2/3", [("suites/a.yml", "kernel+initrd")], artifacts={"a-kernel": "sha256:1"})
    s3 = _shard(tmp_path, "s3", "3/3", [("suites/c.yml", "kernel+initrd")])
    inputs = {"missing": [s1, s2], "twice": [s1, s2, s2, s3]}.get(case, [s1, s2, s3])
    if case == "killed":
        (s3 / "summary.json").unlink()
    elif case == "revision":
        inputs = [s1, s2, _shard(tmp_path, "s3b", "3/3", [("suites/c.yml", "kernel+initrd")], revision="sha256:b")]
    elif case == "duplicate-group":
        inputs = [s1, s2, _shard(tmp_path, "s3b", "3/3", [("suites/a.yml", "iso-efi")])]
    elif case == "digests":
        inputs = [s1, _shard(tmp_path, "s2b", "2/3", [("suites/a.yml", "kernel+initrd")],
                             artifacts={"a-kernel": "sha256:2"}), s3]
    elif case == "count":
        inputs = [s1, s2, _shard(tmp_path, "s3b", "2/2", [("suites/c.yml", "kernel+initrd")])]
    out = tmp_path / "merged"
    res = _lkit("merge", *map(str, inputs), "-o", str(out), "--expect", "3")
    assert res.returncode == EXIT_INFRA, (res.stdout, res.stderr)
    assert needle in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not out.exists(), "a refused merge must not leave a run folder behind"


def test_a_truncated_shard_summary_is_a_clear_error(tmp_path: Path) -> None:
    s1 = _shard(tmp_path, "s1", "1/1", [("suites/a.yml", "iso-efi")])
    text = (s1 / "summary.json").read_text()
    (s1 / "summary.json").write_text(text[: len(text) // 2])
    res = _lkit("merge", str(s1), "-o", str(tmp_path / "m"))
    assert res.returncode != 0 and "not valid JSON" in res.stderr and "Traceback" not in res.stderr


def test_remerge_replaces_the_output(tmp_path: Path) -> None:
    shards = _three(tmp_path)
    out = tmp_path / "merged"
    for _ in range(2):
        assert _lkit("merge", *map(str, shards), "-o", str(out)).returncode == 0
    assert len(json.loads((out / "summary.json").read_text())["runs"]) == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".merged")]
