"""Where the build manifests of runs and baselines live, and the diffs the gate explains with.

A run folder keeps the manifest of each spec it built in `manifests/<name>.json`; each FormatRun
names it in its properties (`manifest`: the path inside the run folder, `manifest.sha256`). A
baseline names one per (spec, format) (`manifest: {path, sha256}`, the path relative to the
baseline file); `lkit report baseline` copies them beside it into `<baseline>.manifests/`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from lkit.build.manifest import BuildManifest, ManifestError
from lkit.core.files import write_bytes
from lkit.errors import LkitError
from lkit.report.baseline import Baseline, FigureStats, FormatBaseline
from lkit.report.diff import BuildDiff, boot_changes, diff
from lkit.report.model import FormatRun, RunSummary

PROPERTY = "manifest"
DIGEST_PROPERTY = "manifest.sha256"
RUN_FOLDER = "manifests"


def keep_in_run(manifest: Path, run_dir: Path, name: str) -> dict[str, str]:
    """Copy a build's manifest into `run_dir/manifests/`; return the properties naming it."""
    data = manifest.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    target = run_dir / RUN_FOLDER / f"{name}.json"
    if target.exists() and target.read_bytes() != data:
        target = target.with_name(f"{name}-{digest[:12]}.json")
    if not target.exists():
        write_bytes(target, data)
    return {PROPERTY: target.relative_to(run_dir).as_posix(), DIGEST_PROPERTY: digest}


class Manifests:
    """Loads (once each) and verifies the manifests that runs and baselines name."""

    def __init__(self) -> None:
        self._cache: dict[Path, BuildManifest] = {}

    def load(self, path: Path, sha256: str | None) -> BuildManifest:
        path = path.resolve()
        if path not in self._cache:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                raise ManifestError(f"no such manifest: {path}",
                                    hint="the manifest a run or baseline names must stay beside it") from None
            if sha256 and hashlib.sha256(data).hexdigest() != sha256:
                raise ManifestError("the manifest's sha256 is not the one its run or baseline recorded",
                                    where=str(path), hint="it was changed or replaced; rebuild the baseline")
            self._cache[path] = BuildManifest.load(path)
        return self._cache[path]

    def of_run(self, summary: RunSummary, run: FormatRun) -> BuildManifest | None:
        rel = run.properties.get(PROPERTY)
        if not rel:
            return None
        folder = summary.folder if summary.folder is not None else Path(".")
        return self.load(folder / rel, run.properties.get(DIGEST_PROPERTY))

    def of_baseline(self, baseline: Baseline, fb: FormatBaseline) -> BuildManifest | None:
        if not fb.manifest.get("path"):
            return None
        path = Path(fb.manifest["path"])
        if not path.is_absolute() and baseline.folder is not None:
            path = baseline.folder / path
        return self.load(path, fb.manifest.get("sha256"))


def relocate(baseline: Baseline, output: Path) -> None:
    """Copy the manifests a new baseline names beside its file (`<stem>.manifests/`), paths relative."""
    folder = output.parent
    target_dir = folder / f"{output.stem}.manifests"
    copied: dict[str, str] = {}
    for fb in baseline.formats.values():
        source = fb.manifest.get("path")
        if not source:
            continue
        digest = fb.manifest.get("sha256") or hashlib.sha256(Path(source).read_bytes()).hexdigest()
        if digest not in copied:
            target = target_dir / f"{Path(source).stem}-{digest[:12]}.json"
            target_dir.mkdir(parents=True, exist_ok=True)
            if Path(source).resolve() != target.resolve():
                shutil.copyfile(source, target)
            copied[digest] = target.relative_to(folder).as_posix()
        fb.manifest = {"path": copied[digest], "sha256": digest}
    baseline.folder = folder


def format_diffs(baseline: Baseline, new: RunSummary,
                 manifests: Manifests | None = None) -> tuple[dict[str, BuildDiff], list[tuple[FormatRun, str]]]:
    """Per 'spec format' key of `new`: what changed since the baseline (files, packages, kernel,
    containers, outputs from the manifests; boot phases from the figures), and notes on what could
    not be compared (a missing, damaged or unrelated manifest)."""
    m = manifests or Manifests()
    diffs: dict[str, BuildDiff] = {}
    notes: list[tuple[FormatRun, str]] = []
    for run in new.runs:
        fb = baseline.formats.get(run.key)
        if fb is None:
            continue
        d = BuildDiff("baseline", "this run")
        try:
            before, after = m.of_baseline(baseline, fb), m.of_run(new, run)
            if before is not None and after is not None:
                d = diff(before, after, a_label="baseline", b_label="this run")
                d.changes = [c for c in d.changes if not c.format or c.format == run.format]
        except LkitError as exc:
            notes.append((run, f"{run.key}: cannot say what changed: {exc.message}"
                                + (f" ({exc.where})" if exc.where else "")))
        boot_before = {k: s.median for k, s in fb.figures.items() if k.startswith("boot.")}
        boot_after = {k: v for k, v in run.figures.items() if k.startswith("boot.")}
        if boot_before and boot_after:
            spread = {k: s.mad for k, s in fb.figures.items() if k.startswith("boot.") and s.n > 1}
            d.changes += boot_changes(run.format, boot_before, boot_after, spread)
        diffs[run.key] = d
    return diffs, notes


# ---- `lkit diff`: the two sides, whatever each is --------------------------------------------------


@dataclass
class Side:
    """One side of `lkit diff`: its builds by spec name, and its boot figures when it was booted."""

    label: str
    builds: dict[str, BuildManifest] = field(default_factory=dict)
    boot: dict[tuple[str, str], dict[str, FigureStats]] = field(default_factory=dict)  # (name, format) -> boot.*


def side_of_baseline(baseline: Baseline, label: str, manifests: Manifests | None = None) -> Side:
    m = manifests or Manifests()
    side = Side(label)
    for fb in baseline.formats.values():
        manifest = m.of_baseline(baseline, fb)
        name = manifest.name if manifest is not None else spec_name(fb.spec)
        if manifest is not None:
            side.builds[name] = manifest
        boot = {k: s for k, s in fb.figures.items() if k.startswith("boot.")}
        if boot:
            side.boot[(name, fb.format)] = boot
    return side


def spec_name(spec: str) -> str:
    stem = Path(spec).name
    for suffix in (".yml", ".yaml"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def side_of_output_dir(folder: Path, label: str, name: str | None = None) -> Side:
    found = sorted((folder / ".lkit").glob("*.manifest.json"))
    if name is not None:
        found = [p for p in found if p.name == f"{name}.manifest.json"]
    if not found:
        raise ManifestError(f"{folder} holds no build manifest" + (f" named {name}" if name else ""),
                            where=str(folder), hint="give an `lkit build` output folder (it has .lkit/NAME.manifest.json), "
                            "a run folder (reports/<run>), a manifest, a baseline or a spec file")
    side = Side(label)
    for path in found:
        manifest = BuildManifest.load(path)
        side.builds[manifest.name] = manifest
    return side


def side_of_path(path: Path, label: str, name: str | None = None) -> Side:
    """A run folder, an output folder, a manifest, a summary.json or a baseline.json."""
    if path.is_dir():
        if (path / "summary.json").is_file():
            return side_of_baseline(_as_baseline(RunSummary.load(path)), label)
        return side_of_output_dir(path, label, name)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"no such file or folder: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        data = None   # a truncated manifest, say: its loader says what is wrong with it
    if isinstance(data, dict) and data.get("kind") == "lkit-baseline":
        baseline = Baseline.from_json(data, where=str(path))
        baseline.folder = path.parent
        return side_of_baseline(baseline, label)
    if isinstance(data, dict) and data.get("kind") == "lkit-run":
        summary = RunSummary.from_json(data, where=str(path))
        summary.folder = path.parent
        return side_of_baseline(_as_baseline(summary), label)
    manifest = BuildManifest.load(path)
    return Side(label, builds={manifest.name: manifest})


def _as_baseline(summary: RunSummary) -> Baseline:
    baseline = Baseline.from_runs([summary])
    baseline.folder = None   # from_runs resolved the manifest paths through the summary's folder
    return baseline


def diff_sides(a: Side, b: Side, *, force: bool = False) -> list[BuildDiff]:
    """One diff per spec both sides built (by name; two single builds are paired whatever their names)."""
    names_a, names_b = set(a.builds) | {n for n, _ in a.boot}, set(b.builds) | {n for n, _ in b.boot}
    if len(names_a) == 1 and len(names_b) == 1:
        pairs = [(next(iter(names_a)), next(iter(names_b)))]
    else:
        pairs = [(n, n) for n in sorted(names_a & names_b)]
        if not pairs:
            raise ManifestError(f"{a.label} and {b.label} have no spec in common "
                                f"({', '.join(sorted(names_a)) or 'none'} / {', '.join(sorted(names_b)) or 'none'})",
                                hint="diff two builds of the same spec")
    out = []
    for na, nb in pairs:
        label_a, label_b = (a.label, b.label) if len(pairs) == 1 else (f"{a.label} {na}", f"{b.label} {nb}")
        ma, mb = a.builds.get(na), b.builds.get(nb)
        if ma is not None and mb is not None:
            d = diff(ma, mb, a_label=label_a, b_label=label_b, force=force)
        else:
            d = BuildDiff(label_a, label_b)
        for (name, fmt), before in sorted(a.boot.items()):
            after = b.boot.get((nb, fmt)) if name == na else None
            if after is None:
                continue
            spread = {k: s.mad for k, s in before.items() if s.n > 1}
            d.changes += boot_changes(fmt, {k: s.median for k, s in before.items()},
                                      {k: s.median for k, s in after.items()}, spread)
        out.append(d)
    return out
