"""Shards on real runs: one build pushed to a real registry (docker-registry on loopback), the shipped
suites run as 3 shards (separate pytest processes and report folders, sharing only the registry),
merged into exactly the groups and check outcomes of a single-machine run, and gated once: a bigger
initrd in one shard's spec is the same regression (exit 10) it is on one machine.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lkit.images.store import Store
sys.path.insert(0, str(Path(__file__).parent))
from test_registry import registry  # noqa: E402

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
STORE = str(Store.default().root)
# The checks the comparison needs, on every group (boots included); the suites' own tests are left out
# to keep the four runs short.
SELECT = ("-m", "lkit", "-k", "build or size_budget or boots or services_running")
SHARDS = 3


@pytest.fixture(scope="module")
def location(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with registry(tmp_path_factory.mktemp("registry")) as address:
        yield f"oci+http://{address}/lkit/builds"


def pytest_run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The runs test pushed (--lkit-prebuilt) builds: amd64's, unsigned. So the seed's efi-secureboot
    # variant (lkit cannot sign a prebuilt build) and its arm64 variants are left out of all of them alike.
    return subprocess.run([sys.executable, "-m", "pytest", "suites/", "-p", "no:cacheprovider", "--lkit-accel", "tcg",
                           "--lkit-reruns", "0", "--lkit-firmware", "efi", "--lkit-arch", "amd64",
                           "--lkit-store", STORE, *args], cwd=cwd, capture_output=True, text=True, timeout=1200)


def lkit(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lkit.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def only_run(reports: Path) -> Path:
    (folder,) = [p for p in reports.iterdir() if p.is_dir()]
    return folder


def outcomes(summary: Path) -> dict[tuple[str, str, str], str]:
    data = json.loads((summary / "summary.json").read_text())
    return {(r["spec"], r["format"], c["check"]): c["outcome"] for r in data["runs"] for c in r["checks"]}


def test_three_shards_merge_into_the_single_run_and_gate_the_same(tmp_path: Path, location: str) -> None:
    work = tmp_path / "ci"
    work.mkdir()
    # The shipped suites, the multi-machine one included (each machine's spec is pushed and fetched).
    shutil.copytree(REPO / "suites", work / "suites", ignore=shutil.ignore_patterns("__pycache__"))
    (work / "pytest.ini").write_text("[pytest]\n")

    # The build job: every (spec, format) built once and pushed.
    built = pytest_run(work, "-k", "build", "--lkit-push", f"{location}:base", "--lkit-report-dir", "r-build")
    assert built.returncode == 0, built.stdout[-3000:]

    # One machine, as the reference.
    single = pytest_run(work, *SELECT, "--lkit-prebuilt", f"{location}:base", "--lkit-report-dir", "r-single")
    assert single.returncode == 0, single.stdout[-3000:]
    single_dir = only_run(work / "r-single")

    # Three shard jobs, then the merge job.
    for k in range(1, SHARDS + 1):
        res = pytest_run(work, *SELECT, "--lkit-shard", f"{k}/{SHARDS}", "--lkit-prebuilt", f"{location}:base",
                         "--lkit-report-dir", f"r-shard{k}", "--lkit-build-dir", f"build-shard{k}")
        assert res.returncode == 0, res.stdout[-3000:]
        assert f"lkit shard {k}/{SHARDS}:" in res.stdout
    shard_dirs = [str(only_run(work / f"r-shard{k}")) for k in range(1, SHARDS + 1)]
    merged = lkit(work, "report", "merge", *shard_dirs, "-o", "merged", "--expect", str(SHARDS))
    assert merged.returncode == 0, merged.stderr
    assert outcomes(work / "merged") == outcomes(single_dir)
    assert lkit(work, "report", "gate", "merged").returncode == 0

    # Every shard tested the pushed bytes: the digests in the merged summary are the registry's.
    single_runs = {(r["spec"], r["format"]): r["artifacts"] for r in
                   json.loads((single_dir / "summary.json").read_text())["runs"]}
    merged_runs = {(r["spec"], r["format"]): r["artifacts"] for r in
                   json.loads((work / "merged" / "summary.json").read_text())["runs"]}
    assert merged_runs == single_runs and all(merged_runs.values())

    # A merge missing a shard, or given one twice, is refused.
    missing = lkit(work, "report", "merge", *shard_dirs[:2], "-o", "m2", "--expect", str(SHARDS))
    assert missing.returncode == 11 and f"shard 3/{SHARDS} missing" in missing.stderr
    twice = lkit(work, "report", "merge", *shard_dirs, shard_dirs[0], "-o", "m3")
    assert twice.returncode == 11 and "given twice" in twice.stderr

    # The seeded regression: 512 KiB more in minimal's initrd (within its size budget, so only the
    # baseline comparison can catch it), rebuilt and pushed, run as shards again.
    lkit(work, "report", "baseline", str(single_dir), "-o", "baseline.json").check_returncode()
    blob = base64.b64encode(random.Random(3).randbytes(512 << 10)).decode()
    spec = work / "suites" / "minimal.yml"
    spec.write_text(spec.read_text() + f"files:\n  - path: var/blob\n    contents: {blob}\n")
    rebuilt = pytest_run(work, "-k", "build", "--lkit-push", f"{location}:bigger", "--lkit-report-dir", "r-build2",
                         "--lkit-no-determinism")
    assert rebuilt.returncode == 0, rebuilt.stdout[-3000:]
    codes = []
    for k in range(1, SHARDS + 1):
        res = pytest_run(work, "-m", "lkit", "-k", "build or size_budget", "--lkit-shard", f"{k}/{SHARDS}",
                         "--lkit-baseline", "baseline.json", "--lkit-prebuilt", f"{location}:bigger",
                         "--lkit-report-dir", f"r-big{k}", "--lkit-build-dir", f"build-big{k}")
        codes.append(res.returncode)
        assert res.returncode in (0, 10), res.stdout[-3000:]
    # Only the shard that tests minimal gates it; the others are not blamed for groups they do not run.
    assert sorted(codes) == [0, 0, 10], codes
    big_dirs = [str(only_run(work / f"r-big{k}")) for k in range(1, SHARDS + 1)]
    assert lkit(work, "report", "merge", *big_dirs, "-o", "merged-big", "--expect", str(SHARDS)).returncode == 0
    gate = lkit(work, "report", "gate", "merged-big", "--baseline", "baseline.json", "--threshold", "size=5")
    assert gate.returncode == 10, gate.stdout
    assert "REGRESSION" in gate.stdout and "minimal" in gate.stdout and "size" in gate.stdout
