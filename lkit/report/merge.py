"""`lkit report merge`: shard runs (one per CI job) -> one run folder, gated once.

A merge must never hide work that did not happen: it refuses (exit 11, naming the shard) a run folder
without summary.json (a killed shard), runs of different suite revisions, a shard or a (spec, format)
given twice, shards that tested different bytes of the same spec, and, with `expect`, a missing shard.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lkit.errors import EXIT_INFRA
from lkit.report.model import ReportError, RunSummary
from lkit.report.summary import write_folder


class MergeError(ReportError):
    """Shard runs that cannot be merged into one honest run."""

    exit_code = EXIT_INFRA


@dataclass(frozen=True)
class ShardRun:
    where: str            # the folder or file it was read from
    summary: RunSummary

    @property
    def label(self) -> str:
        return f"shard {self.summary.shard} ({self.where})" if self.summary.shard else self.where


def load_shard(path: str | os.PathLike[str]) -> ShardRun:
    p = Path(path)
    if p.is_dir() and not (p / "summary.json").exists():
        raise MergeError(f"{p} has no summary.json: the shard was killed or did not finish",
                         hint="re-run that shard (its CI job), then merge again")
    if not p.exists():
        raise MergeError(f"no such run folder: {p}", hint="give the run folders the shards wrote (reports/<run_id>)")
    return ShardRun(str(p), RunSummary.load(p))


def merge(shards: list[ShardRun], *, run_id: str, expect: int | None = None) -> RunSummary:
    """One summary holding every shard's groups; a MergeError for anything that does not add up."""
    if not shards:
        raise MergeError("nothing to merge", hint="give the run folders of the shards")
    _same_revision(shards)
    _shards_once(shards, expect)
    runs = []
    owner: dict[tuple[str, str], ShardRun] = {}
    for shard in shards:
        for run in shard.summary.runs:
            key = (run.spec, run.format)
            if key in owner:
                raise MergeError(f"{run.spec} {run.format} is in two runs: {owner[key].label} and {shard.label}",
                                 hint="each (spec, format) belongs to one shard: were two shards given the same K?")
            owner[key] = shard
            runs.append(run)
    _same_bytes(shards)
    statuses = [s.summary.exit_status for s in shards if s.summary.exit_status is not None]
    timing = {f"shard{s.summary.shard.split('/')[0] if s.summary.shard else i}.wall": s.summary.timing.get("wall", 0.0)
              for i, s in enumerate(shards, 1)}
    return RunSummary(
        run_id=run_id,
        started=min(s.summary.started for s in shards), finished=max(s.summary.finished for s in shards),
        runs=runs, timing=timing,
        exit_status=EXIT_INFRA if EXIT_INFRA in statuses else (max(statuses) if statuses else None),
        revision=shards[0].summary.revision,
        merged_from=[s.summary.run_id for s in shards])


def _same_revision(shards: list[ShardRun]) -> None:
    first = shards[0]
    for shard in shards[1:]:
        if shard.summary.revision != first.summary.revision:
            raise MergeError(f"{shard.label} ran suite revision {shard.summary.revision or '(none)'}, "
                             f"{first.label} ran {first.summary.revision or '(none)'}",
                             hint="merge shards of one CI pipeline: every shard must check out the same commit")


def _shards_once(shards: list[ShardRun], expect: int | None) -> None:
    seen: dict[int, ShardRun] = {}
    for shard in shards:
        if not shard.summary.shard:
            if expect is not None:
                raise MergeError(f"{shard.where} is not a shard run (it ran without --lkit-shard)",
                                 hint="--expect N counts shards: give only the runs of `--lkit-shard K/N`")
            continue
        index, count = (int(x) for x in shard.summary.shard.split("/"))
        if expect is not None and count != expect:
            raise MergeError(f"{shard.label} is one of {count} shards, --expect says {expect}")
        if index in seen:
            raise MergeError(f"shard {shard.summary.shard} given twice: {seen[index].where} and {shard.where}",
                             hint="give each shard's run folder once")
        seen[index] = shard
    if expect is not None:
        missing = [k for k in range(1, expect + 1) if k not in seen]
        if missing:
            raise MergeError(f"shard {', '.join(f'{k}/{expect}' for k in missing)} missing "
                             f"(got {', '.join(sorted(s.summary.shard for s in seen.values()))})",
                             hint="a shard job failed before writing its reports, or its folder was not passed")


def _same_bytes(shards: list[ShardRun]) -> None:
    """Every shard must have tested the same bytes of a spec's shared files (one build, many shards)."""
    digests: dict[tuple[str, str], tuple[str, ShardRun]] = {}
    for shard in shards:
        for run in shard.summary.runs:
            for name, digest in run.artifacts.items():
                key = (run.spec, name)
                if key in digests and digests[key][0] != digest:
                    other = digests[key][1]
                    raise MergeError(f"{run.spec}: {name} is {digest[:19]} in {shard.label} but "
                                     f"{digests[key][0][:19]} in {other.label}: the shards tested different builds",
                                     hint="build once and share the artifacts (lkit build --push, "
                                          "--lkit-prebuilt oci://...), or pin the same images for every shard")
                digests.setdefault(key, (digest, shard))


def write_merged(summary: RunSummary, shards: list[ShardRun], out: Path, allure_dirs: list[Path]) -> Path:
    """The merged run folder, made beside `out` and renamed into place: never half-written."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for shard in shards:
            folder = Path(shard.where)
            folder = folder if folder.is_dir() else folder.parent
            for sub in ("console", "screens", "manifests"):
                if (folder / sub).is_dir():
                    shutil.copytree(folder / sub, tmp / sub, dirs_exist_ok=True)
        for run in summary.runs:   # consoles and screens now live in the merged folder
            for check in run.checks:
                check.attachments = {k: _moved(v, out) for k, v in check.attachments.items()}
        for src in allure_dirs:
            if not src.is_dir():
                raise MergeError(f"no such Allure results folder: {src}")
            shutil.copytree(src, tmp / "allure-results", dirs_exist_ok=True)
        write_folder(summary, tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / "run")
            shutil.rmtree(old)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _moved(path: str, out: Path) -> str:
    p = Path(path)
    return str(out / p.parent.name / p.name) if p.parent.name in ("console", "screens") else path
