"""The repository holds source, never generated data: a too-big submission does not land at all."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_TRACKED_BYTES = 512 * 1024


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_no_large_tracked_files():
    big = [(p, p.stat().st_size) for p in tracked_files() if p.is_file() and p.stat().st_size > MAX_TRACKED_BYTES]
    assert not big, f"tracked files over {MAX_TRACKED_BYTES} bytes (generate them instead): {big}"


def test_no_binary_artifacts_tracked():
    suffixes = {".img", ".iso", ".qcow2", ".deb", ".cpio", ".squashfs", ".fd", ".tar", ".gz", ".zst"}
    bad = [p for p in tracked_files() if p.suffix in suffixes]
    assert not bad, f"binary artifacts are tracked: {bad}"


def test_cited_markdown_files_exist():
    """A comment that cites a markdown file points at one in the repository (not a note kept elsewhere)."""
    import re
    generated = {"report.md"}  # written by runs (lkit.report), not tracked
    present = {p.name for p in tracked_files()}
    cited: dict[str, list[str]] = {}
    for p in tracked_files():
        if "tests/conformance/expected" in p.as_posix() or not p.is_file():
            continue
        try:
            text = p.read_text()
        except UnicodeDecodeError:
            continue
        for name in set(re.findall(r"\b[A-Za-z0-9_.-]+\.md\b", text)):
            cited.setdefault(name, []).append(str(p.relative_to(ROOT)))
    missing = {n: files for n, files in cited.items() if n not in present and n not in generated}
    assert not missing, f"files cite markdown documents the repository does not have: {missing}"


def test_test_module_basenames_are_unique():
    """pytest imports test modules by basename (no __init__.py): two of one name break collection of the
    whole run, so `tests/unit/x.py` and `tests/e2e/x.py` cannot both exist."""
    seen: dict[str, list[str]] = {}
    for p in tracked_files():
        rel = p.relative_to(ROOT)
        if rel.parts[0] in ("tests", "suites") and p.suffix == ".py" and p.name.startswith("test_"):
            seen.setdefault(p.name, []).append(str(rel))
    clashes = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not clashes, f"test modules share a basename: {clashes}"
