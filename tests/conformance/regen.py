"""Regenerate tests/conformance/expected*/ from a LinuxKit binary you supply (no network, no Docker).

    python -m tests.conformance.regen --linuxkit /path/to/linuxkit [--case NAME ...]

For every cases/NAME/ (spec.yml, plus spec2.yml when present, merged by LinuxKit in that order):
  1. the synthetic images (images.py) go into a fresh lkit store, are exported with
     `lkit cache export` and imported into a fresh LinuxKit cache with `linuxkit cache import`;
  2. `linuxkit build --cache C --format tar --o OUT.tar spec.yml [spec2.yml]` runs with the case folder
     as working directory (so `files[].source` is relative to it) and HOME in a temp dir;
     LinuxKit's default SBOM stays on;
  3. expected/NAME/fs.txt       fs_state() of the tar; the sbom.spdx.json line cut to path and type
     expected/NAME/sbom.json    sbom.spdx.json with its documentNamespace (random UUID) -> "<random>"
     expected/NAME/bundles/...  exact bytes of containers/*/*/config.json and runtime.json
     (a case LinuxKit refuses gets expected/NAME/refused.txt instead).
For every cases_bad/NAME/: expected_bad/NAME.txt = "exit N", LinuxKit's first error line (stderr) and
its schema complaints (the `- ...` lines it prints on stdout), if any.
expected/LINUXKIT_VERSION records the commit and `linuxkit version`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from tests.conformance import images  # noqa: E402
from tests.conformance.fsstate import bundle_files, fs_state, norm  # noqa: E402
from lkit.images.store import Store  # noqa: E402

SBOM = "sbom.spdx.json"
DEFAULT_MIRROR = Path("/work/.mirror/linuxkit+linuxkit/repo")
NAMESPACE_RE = re.compile(rb'("documentNamespace"\s*:\s*)"[^"]*"')


def spec_files(case: Path) -> list[str]:
    return [n for n in ("spec.yml", "spec2.yml") if (case / n).exists()]


def run_build(linuxkit: str, cache: Path, case: Path, out_tar: Path, home: Path,
              extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    args = [linuxkit, "build", "--cache", str(cache), "--format", "tar", *extra, "--o", str(out_tar), *spec_files(case)]
    env = dict(os.environ, HOME=str(home))
    env.pop("LINUXKIT_CACHE", None)
    env.pop("LINUXKIT_MIRROR", None)
    return subprocess.run(args, cwd=case, env=env, capture_output=True, text=True, timeout=600)


def refusal(proc: subprocess.CompletedProcess) -> str:
    """`exit N`, LinuxKit's first error line (stderr), then its schema complaints (stdout `- ...` lines)."""
    err = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    first = next((line for line in err
                  if line.startswith(("Error:", "panic:")) or "level=fatal" in line or "level=error" in line),
                 err[0] if err else "")
    details = [line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("- ")]
    return "\n".join([f"exit {proc.returncode}", first, *details]) + "\n"


def write_expected(out_tar: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    lines = []
    for line in fs_state(out_tar):
        path, kind = line.split("\t")[:2]
        lines.append(f"{path}\t{kind}" if path == SBOM else line)
    (dest / "fs.txt").write_text("\n".join(lines) + "\n")
    data = member_bytes(out_tar, SBOM)
    if data is not None:
        (dest / "sbom.json").write_bytes(NAMESPACE_RE.sub(rb'\1"<random>"', data))
    for path, data in bundle_files(out_tar).items():
        p = dest / "bundles" / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def member_bytes(tar_path: Path, name: str) -> bytes | None:
    """The bytes of the last regular member named `name`, or None."""
    data = None
    with tarfile.open(tar_path, "r:") as tf:
        for ti in tf:
            if norm(ti.name) == name and ti.isreg():
                f = tf.extractfile(ti)
                data = f.read() if f else b""
    return data


def linuxkit_version(linuxkit: str, mirror: Path) -> str:
    out = subprocess.run([linuxkit, "version"], capture_output=True, text=True).stdout.strip()
    commit = ""
    if (mirror / "HEAD").exists() or mirror.is_dir():
        r = subprocess.run(["git", "--git-dir", str(mirror), "rev-parse", "HEAD"], capture_output=True, text=True)
        commit = r.stdout.strip() if r.returncode == 0 else ""
    if not commit:
        m = re.search(r"commit:\s*([0-9a-f]{40})", out)
        commit = m.group(1) if m else "unknown"
    return f"commit {commit}\n" + "".join(f"# {line}\n" for line in out.splitlines())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.conformance.regen", description=__doc__.split("\n")[0])
    ap.add_argument("--linuxkit", required=True, help="the linuxkit binary")
    ap.add_argument("--mirror", type=Path, default=DEFAULT_MIRROR,
                    help="LinuxKit git dir whose HEAD the binary was built from (for LINUXKIT_VERSION)")
    ap.add_argument("--case", action="append", help="only these cases (good or bad); default all")
    ap.add_argument("--keep", type=Path, help="also copy each output tar here")
    args = ap.parse_args(argv)
    linuxkit = str(Path(args.linuxkit).resolve())

    expected, expected_bad = HERE / "expected", HERE / "expected_bad"
    good = sorted(p for p in (HERE / "cases").iterdir() if (p / "spec.yml").exists())
    bad = sorted(p for p in (HERE / "cases_bad").iterdir() if (p / "spec.yml").exists())
    if args.case:
        good = [p for p in good if p.name in args.case]
        bad = [p for p in bad if p.name in args.case]
    else:
        for d in (expected, expected_bad):
            if d.exists():
                shutil.rmtree(d)
    expected.mkdir(exist_ok=True)
    expected_bad.mkdir(exist_ok=True)
    (expected / "LINUXKIT_VERSION").write_text(linuxkit_version(linuxkit, args.mirror))

    with tempfile.TemporaryDirectory(prefix="lkitconf-regen-") as td:
        tmp = Path(td)
        store_dir, cache, home = tmp / "store", tmp / "lkcache", tmp / "home"
        store_dir.mkdir()
        home.mkdir()
        digests = images.install(Store(store_dir))
        images_tar = tmp / "images.tar"
        subprocess.run([sys.executable, "-m", "lkit.cli", "cache", "--store", str(store_dir), "export",
                        *digests, "-o", str(images_tar)], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        subprocess.run([linuxkit, "cache", "import", "--cache", str(cache), str(images_tar)], check=True,
                       env=dict(os.environ, HOME=str(home)), capture_output=True)

        status = 0
        for case in good:
            out_tar = tmp / f"{case.name}.tar"
            proc = run_build(linuxkit, cache, case, out_tar, home)
            dest = expected / case.name
            if dest.exists():
                shutil.rmtree(dest)
            if proc.returncode != 0:
                dest.mkdir(parents=True)
                (dest / "refused.txt").write_text(refusal(proc))
                print(f"REFUSED {case.name}: {refusal(proc).splitlines()[1]}")
                status = 1
                continue
            write_expected(out_tar, dest)
            # The whole tar without the SBOM (the one part LinuxKit makes random): its digest and size.
            plain = tmp / f"{case.name}-no-sbom.tar"
            proc = run_build(linuxkit, cache, case, plain, home, ("--no-sbom",))
            assert proc.returncode == 0, proc.stderr
            digest = hashlib.sha256(plain.read_bytes()).hexdigest()
            (dest / "tar-no-sbom.sha256").write_text(f"{digest}  {plain.stat().st_size}\n")
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                shutil.copy(out_tar, args.keep / out_tar.name)
            print(f"built   {case.name}")
        for case in bad:
            proc = run_build(linuxkit, cache, case, tmp / f"bad-{case.name}.tar", home)
            text = refusal(proc)
            (expected_bad / f"{case.name}.txt").write_text(text)
            print(f"{'refused' if proc.returncode else 'BUILT!'} {case.name}: " + " | ".join(text.splitlines()))
            if proc.returncode == 0:
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
