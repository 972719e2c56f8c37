"""`lkit report ...`: compare runs, build baselines, show a run, gate CI on a run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lkit.report.baseline import Baseline, load_reference
from lkit.report.compare import Thresholds, compare
from lkit.report.gate import Quarantine, evaluate
from lkit.report.human import markdown, write_human
from lkit.report.junit import write_junit
from lkit.report.merge import load_shard, merge, write_merged
from lkit.report.manifests import Side, relocate, side_of_output_dir, side_of_path
from lkit.report.model import ReportError, RunSummary

THRESHOLD_HELP = ("KEY=VALUE, repeatable: size=5 (%%), size-floor=4096 (bytes), time=20 (%%), "
                  "time-floor=0.5 (s), k=3 (x spread), or FIGURE-GLOB=PCT such as boot.shell=10")


def register(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser("report", help="compare runs, make baselines, show runs, gate CI")
    sub = report.add_subparsers(dest="report_command", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("compare", help="compare a run with a baseline or an older run; exit code as the gate")
    p.add_argument("base", help="baseline.json, or a run folder / summary.json to compare against")
    p.add_argument("new", help="the new run folder (reports/<run_id>) or its summary.json")
    _gate_options(p)
    p.set_defaults(func=_compare)

    p = sub.add_parser("gate", help="exit code for a run: checks, quarantine, and a baseline when given")
    p.add_argument("new", help="the run folder (reports/<run_id>) or its summary.json")
    p.add_argument("--baseline", help="baseline.json or a run folder to compare against")
    _gate_options(p)
    p.set_defaults(func=_gate)

    p = sub.add_parser("baseline", help="combine run folders into a baseline (medians and spread)")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders or summary.json files")
    p.add_argument("-o", "--output", required=True, help="where to write the baseline JSON")
    p.set_defaults(func=_baseline)

    p = sub.add_parser("merge", help="join shard runs (--lkit-shard K/N) into one run folder; exit 11 if they "
                                     "do not add up")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="the shards' run folders (reports/<run_id>)")
    p.add_argument("-o", "--output", required=True, help="the merged run folder to write")
    p.add_argument("--expect", type=int, metavar="N", help="the number of shards: a missing one is an error")
    p.add_argument("--allure", action="append", default=[], metavar="DIR",
                   help="Allure results folders of the shards, concatenated into OUTPUT/allure-results")
    p.set_defaults(func=_merge)

    p = sub.add_parser("show", help="print a run as Markdown; --regenerate rewrites its JUnit and HTML")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--regenerate", action="store_true", help="rewrite junit-*.xml, report.md, report.html")
    p.set_defaults(func=_show)


def register_diff(subparsers: argparse._SubParsersAction) -> None:
    """`lkit diff A B`: what changed inside the images between two builds."""
    p = subparsers.add_parser(
        "diff", help="what changed between two builds: files, packages, kernel, containers, boot phases",
        description="Compare two builds. A and B may each be an `lkit build` output folder, a run folder "
                    "(reports/<run>), a build manifest (.lkit/NAME.manifest.json), a summary.json or baseline.json, "
                    "or a spec file (SPEC.yml, or REV:SPEC.yml for a git revision) built on the fly. "
                    "Exit 0 when identical, 1 when they differ.")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--json", action="store_true", help="print the changes as JSON")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="items shown per group (default 20)")
    p.add_argument("--name", help="the build to take from an output folder holding several")
    p.add_argument("--format", "-f", action="append", dest="formats", metavar="FORMAT",
                   help="formats to build for a spec argument (default: its `outputs:`, else kernel+initrd)")
    p.add_argument("--store", type=Path, help="image store for spec arguments (default: $LKIT_STORE or ~/.cache/lkit/store)")
    p.add_argument("--force", action="store_true", help="diff two builds even when they look unrelated")
    p.set_defaults(func=_diff)


def _diff(args: argparse.Namespace) -> int:
    import json
    import tempfile

    from lkit.report.diff import BuildDiff
    from lkit.report.manifests import diff_sides

    with tempfile.TemporaryDirectory(prefix="lkit-diff.") as scratch:
        a = _side(args.a, args, Path(scratch) / "a")
        b = _side(args.b, args, Path(scratch) / "b")
        diffs: list[BuildDiff] = diff_sides(a, b, force=args.force)
    identical = all(d.empty for d in diffs)
    if args.json:
        print(json.dumps({"kind": "lkit-diff", "identical": identical, "diffs": [d.to_json() for d in diffs]},
                         indent=1, sort_keys=True, default=str))
    else:
        for d in diffs:
            print("\n".join(d.lines(limit=args.limit)))
    return 0 if identical else 1


def _side(arg: str, args: argparse.Namespace, scratch: Path) -> Side:
    path = Path(arg)
    if path.suffix in (".yml", ".yaml") and not path.is_dir():
        return _built_side(arg, path, args, scratch)
    if not path.exists() and ":" in arg:
        return _built_side(arg, path, args, scratch)
    return side_of_path(path, arg, args.name)


def _built_side(arg: str, path: Path, args: argparse.Namespace, scratch: Path) -> Side:
    """A spec (or REV:SPEC from git) built now, into a scratch folder (the build cache keeps it cheap)."""
    import subprocess

    from lkit.build.builder import build
    from lkit.images.store import Store
    from lkit.spec import load_spec

    if not path.exists() and ":" in arg:
        rev, _, spec_path = arg.partition(":")
        try:
            text = subprocess.run(["git", "show", f"{rev}:{spec_path}"], capture_output=True, check=True,
                                  timeout=60).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            raise ReportError(f"cannot read {spec_path} at revision {rev}: "
                              f"{detail.decode(errors='replace').strip() or exc}", where=arg,
                              hint="give REV:PATH with PATH relative to the repository root, e.g. HEAD~1:suites/x.yml") from None
        scratch.mkdir(parents=True, exist_ok=True)
        path = scratch / Path(spec_path).name
        path.write_bytes(text)
    spec = load_spec([path])
    formats = args.formats or spec.outputs or ["kernel+initrd"]
    store = Store(args.store) if args.store else Store.default()
    build(spec, formats, scratch / "out", store=store)
    return side_of_output_dir(scratch / "out", arg, spec.name)


def _gate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold", action="append", default=[], metavar="KEY=VALUE", help=THRESHOLD_HELP)
    p.add_argument("--quarantine", help="YAML list of {id: GLOB, reason, expires: YYYY-MM-DD}")
    p.add_argument("--write-reports", action="store_true",
                   help="also add the comparison to report.md / report.html in the new run folder")


def _run_gate(new_path: str, base_path: str | None, args: argparse.Namespace) -> int:
    thresholds = Thresholds.parse(args.threshold)
    quarantine = Quarantine.load(args.quarantine) if args.quarantine else None
    new = RunSummary.load(new_path)
    comparison = compare(load_reference(base_path), new, thresholds) if base_path else None
    result = evaluate(new, comparison, quarantine)
    if comparison is not None:
        for finding in comparison.improvements:
            print(f"improved   {finding.line}")
        for finding in comparison.notes:
            print(f"note       {finding.line}")
    for line in result.lines():
        print(line, file=sys.stderr if line.startswith("warning:") else sys.stdout)
    if args.write_reports and Path(new_path).is_dir():
        write_human(new, Path(new_path), comparison)
        write_junit(new, Path(new_path), comparison)
    return result.exit_code


def _compare(args: argparse.Namespace) -> int:
    return _run_gate(args.new, args.base, args)


def _gate(args: argparse.Namespace) -> int:
    return _run_gate(args.new, args.baseline, args)


def _baseline(args: argparse.Namespace) -> int:
    summaries = []
    for path in args.runs:
        ref = load_reference(path)
        if isinstance(ref, Baseline):
            raise ReportError("a baseline cannot be an input of another baseline", where=path,
                              hint="give the run folders the first baseline was made from")
        summaries.append(ref)
    baseline = Baseline.from_runs(summaries)
    relocate(baseline, Path(args.output))   # the build manifests it names go beside it
    out = baseline.save(args.output)
    print(f"baseline of {len(summaries)} run(s), {len(baseline.formats)} format(s): {out}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    out = Path(args.output)
    shards = [load_shard(r) for r in args.runs]
    summary = merge(shards, run_id=out.resolve().name, expect=args.expect)
    folder = write_merged(summary, shards, out, [Path(a) for a in args.allure])
    print(f"merged {len(shards)} run(s), {len(summary.runs)} format run(s): {folder}")
    print(f"gate it: lkit report gate {folder}")
    return 0


def _show(args: argparse.Namespace) -> int:
    summary = RunSummary.load(args.run)
    if args.regenerate:
        folder = Path(args.run)
        if not folder.is_dir():
            raise ReportError("--regenerate needs a run folder, not a file", where=args.run)
        write_junit(summary, folder)
        write_human(summary, folder)
    sys.stdout.write(markdown(summary))
    return 0
