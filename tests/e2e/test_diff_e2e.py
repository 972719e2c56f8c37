"""Every regression explained, on real builds of the seed spec: a baseline from suites/linuxkit.yml,
then one seeded change at a time, built and gated against it; the gate output and report.md name the
change as their top item. Identical rebuilds diff empty.

Boots are few (TCG on a shared machine): the baseline boots once, and so does the one change that
only a boot can show (an onboot container that sleeps 5 s). The other changes are inside the image
and are gated on the build checks alone (`-k "build or size_budget"`).
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lkit.images.store import Store

STORE = str(Store.default().root)  # before pytester moves HOME
ROOT = Path(__file__).resolve().parents[2]
SEED = (ROOT / "suites" / "linuxkit.yml").read_text()
EXPECT = (ROOT / "suites" / "linuxkit.test.yml").read_text()
pytestmark = pytest.mark.e2e
pytest_plugins = ["pytester"]

BOOTED = ("-k", "build or size_budget or boots or boot_time")
BUILT = ("-k", "build or size_budget")
GATE = ("--lkit-formats", "kernel+initrd", "--lkit-baseline", "baseline.json",
        "--lkit-thresholds", "size=5%,time=50%,time_floor=3s")
OLD_NGINX = "1.22.1-9+deb12u9"   # bookworm main; the fixture's build.lock pins the security update


def lkit(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lkit.cli", *args], cwd=cwd, check=check, capture_output=True,
                          text=True, timeout=900)


def build(spec_text: str, out: Path, *extra: str) -> Path:
    src = out.with_suffix(".yml")
    src.write_text(spec_text)
    lkit("build", "--store", STORE, "--name", "linuxkit", "-f", "kernel+initrd", "--dir", str(out), *extra, str(src))
    return out


def nginx_variant(tmp: Path, tag: str, change) -> None:
    """A copy of fixtures/pkgs/nginx built as lkit/nginx:TAG, after `change(folder)`."""
    folder = tmp / f"nginx-{tag}"
    shutil.copytree(ROOT / "fixtures" / "pkgs" / "nginx", folder)
    build_yml = folder / "build.yml"
    build_yml.write_text(build_yml.read_text().replace('tag: "1.22"', f'tag: "{tag}"'))
    change(folder)
    lkit("pkg", "build", "--store", STORE, str(folder))


def apt_sha256(package: str, version: str) -> str:
    shown = subprocess.run(["apt-cache", "show", f"{package}={version}"], capture_output=True, text=True)
    for line in shown.stdout.splitlines():
        if line.startswith("SHA256: "):
            return line.split()[1]
    pytest.skip(f"{package}={version} is not in the apt lists (apt-get update?)")


def older_nginx(folder: Path) -> None:
    lock = folder / "build.lock"
    lines = []
    for line in lock.read_text().splitlines():
        name = line.split(" ", 1)[0]
        if name in ("nginx", "nginx-common"):
            line = f"{name} {OLD_NGINX} sha256:{apt_sha256(name, OLD_NGINX)}"
        lines.append(line)
    lock.write_text("\n".join(lines) + "\n")


def with_blob(folder: Path) -> None:
    blob = folder / "files" / "usr" / "share" / "lkit-blob"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(random.Random(11).randbytes(3 << 20))   # incompressible: the initrd grows by 3 MB


def gate(pytester: pytest.Pytester, prebuilt: Path, name: str, *extra: str) -> tuple[int, str, str]:
    result = pytester.runpytest_subprocess("suites/", "-p", "no:cacheprovider", "--lkit-accel", "tcg", "--lkit-reruns", "0",
                                           "--lkit-store", STORE, "--lkit-prebuilt", str(prebuilt),
                                           "--lkit-arch", "amd64",   # prebuilt artifacts are amd64's
                                           "--lkit-report-dir", f"reports-{name}", *extra, timeout=900)
    (run_dir,) = (pytester.path / f"reports-{name}").iterdir()
    return result.ret, result.stdout.str(), (run_dir / "report.md").read_text()


def gate_lines(out: str) -> list[str]:
    """The gate's lines at the end of the session (REGRESSION, its explanation, changed ...)."""
    lines = out.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(("REGRESSION", "changed", "gate:"))), len(lines))
    return lines[start:]


def test_every_seeded_change_is_explained(pytester: pytest.Pytester, tmp_path: Path):
    pytester.makeini("[pytest]\n")
    suites = pytester.mkdir("suites")
    (suites / "linuxkit.yml").write_text(SEED)
    (suites / "linuxkit.test.yml").write_text(EXPECT)

    # The baseline: the seed spec, built and booted once.
    base = build(SEED, tmp_path / "base")
    ret, out, _ = gate(pytester, base, "base", "--lkit-formats", "kernel+initrd", *BOOTED)
    assert ret == 0, out[-3000:]
    (run_dir,) = (pytester.path / "reports-base").iterdir()
    assert (run_dir / "manifests" / "linuxkit.json").stat().st_size < 1 << 20
    lkit("report", "baseline", str(run_dir), "-o", "baseline.json", cwd=pytester.path)
    assert list((pytester.path / "baseline.manifests").glob("linuxkit-*.json"))

    # An identical rebuild, from scratch: no difference, and a clean gate.
    again = build(SEED, tmp_path / "again", "--no-cache")
    same = lkit("diff", str(base), str(again), check=False)
    assert same.returncode == 0 and "identical" in same.stdout, same.stdout + same.stderr
    ret, out, report = gate(pytester, again, "again", *GATE, *BUILT)
    assert ret == 0, out[-3000:]
    assert not any(line.startswith(("REGRESSION", "changed")) for line in gate_lines(out)), out[-3000:]
    assert "What changed" not in report

    # A 3 MB file added to one image: the initrd's growth, explained by that file, first.
    nginx_variant(tmp_path, "1.22-blob", with_blob)
    blob = build(SEED.replace("lkit/nginx:1.22", "lkit/nginx:1.22-blob"), tmp_path / "blob")
    ret, out, report = gate(pytester, blob, "blob", *GATE, *BUILT)
    assert ret == 10, out[-3000:]
    lines = gate_lines(out)
    at = next(i for i, line in enumerate(lines) if line.startswith("REGRESSION") and "linuxkit-initrd.img size" in line)
    assert "uncompressed: nginx:/usr/share/lkit-blob +3.1 MB (added, lkit/nginx:1.22 -> 1.22-blob)" in lines[at + 1], out[-3000:]
    assert "+ nginx:/usr/share/lkit-blob +3.1 MB" in report

    # A package version changed in a fixture's build.lock: the package, first.
    nginx_variant(tmp_path, "1.22-old", older_nginx)
    old = build(SEED.replace("lkit/nginx:1.22", "lkit/nginx:1.22-old"), tmp_path / "old")
    ret, out, report = gate(pytester, old, "old", *GATE, *BUILT)
    changed = [line for line in gate_lines(out) if line.startswith("changed")]
    assert changed and changed[0].endswith(f"packages: ~ nginx 1.22.1-9+deb12u12 -> {OLD_NGINX} (services/nginx)"), out[-3000:]
    assert f"~ nginx 1.22.1-9+deb12u12 -> {OLD_NGINX} (services/nginx)" in report

    # A capability added to nginx in the spec: a regression naming the container, the capability, the line.
    caps = SEED.replace("     - CAP_DAC_OVERRIDE\n", "     - CAP_DAC_OVERRIDE\n     - CAP_NET_RAW\n")
    line = next(n for n, text in enumerate(caps.splitlines(), 1) if text.strip() == "- name: nginx")
    ret, out, report = gate(pytester, build(caps, tmp_path / "caps"), "caps", *GATE, *BUILT)
    assert ret == 10, out[-3000:]
    regression = next(x for x in gate_lines(out) if x.startswith("REGRESSION"))
    assert "privileges gained since the baseline: nginx gained CAP_NET_RAW" in regression, out[-3000:]
    assert regression.endswith(f"caps.yml:{line})"), out[-3000:]
    assert "nginx gained CAP_NET_RAW" in report

    # A changed kernel command line.
    cmdline = SEED.replace("page_poison=1", "page_poison=1 lkit.e2e=1")
    ret, out, report = gate(pytester, build(cmdline, tmp_path / "cmdline"), "cmdline", *GATE, *BUILT)
    changed = [line for line in gate_lines(out) if line.startswith("changed")]
    assert changed and "kernel: cmdline 'console=ttyS0 console=tty0 page_poison=1' -> " \
        "'console=ttyS0 console=tty0 page_poison=1 lkit.e2e=1'" in changed[0], out[-3000:]
    assert "lkit.e2e=1" in report

    # An onboot container that sleeps 5 s: booted, the new boot phase is the boot's explanation.
    nap = SEED.replace("services:\n", "  - name: nap\n    image: lkit/binfmt:1\n"
                                      "    command: [/bin/busybox, sleep, '5']\nservices:\n", 1)
    ret, out, report = gate(pytester, build(nap, tmp_path / "nap"), "nap", *GATE, *BOOTED)
    lines = gate_lines(out)
    boot = [x for x in lines if "boot.onboot.nap new:" in x]
    assert boot, out[-3000:]
    assert float(boot[0].split("new: ")[1].split(" s")[0]) >= 4.5
    assert any(x.startswith("changed") and "+ onboot/nap added" in x for x in lines), out[-3000:]
    # binfmt's label grants CAP_SYS_ADMIN: a new container with a capability is a privilege gained
    assert any(x.startswith("REGRESSION") and "privileges gained" in x and "onboot/nap added" in x for x in lines)
    slower = [i for i, x in enumerate(lines) if x.startswith("REGRESSION") and ": boot." in x]
    if slower:   # slower beyond the thresholds on this machine: the nap explains it, first
        assert "boot.onboot.nap new:" in lines[slower[0] + 1], out[-3000:]
    assert "boot.onboot.nap new:" in report


def test_manifest_size_and_diff_time_of_the_seed_spec(tmp_path: Path):
    """Figures: the seed spec's manifest stays under 1 MB; diffing two of its builds takes under 1 s."""
    a = build(SEED, tmp_path / "a")
    b = build(SEED.replace("page_poison=1", "page_poison=1 quiet"), tmp_path / "b")
    size = (a / ".lkit" / "linuxkit.manifest.json").stat().st_size
    started = time.monotonic()
    result = lkit("diff", str(a), str(b), check=False)
    seconds = time.monotonic() - started
    print(f"seed manifest {size / 1000:.0f} kB; lkit diff of two seed builds {seconds:.2f} s (process included)")
    assert result.returncode == 1 and "quiet" in result.stdout
    assert size < 1 << 20 and seconds < 1.0
