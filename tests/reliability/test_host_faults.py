"""Faults around the builder on the host: disk full while writing outputs, Ctrl-C mid-build, and two
`lkit build` processes sharing one store and build cache.

The disk-full case mounts a 2 MiB tmpfs (root only) and unmounts it in every path.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from relkit import REPO, assert_clean_error, lkit_env, run_lkit

SPECS = Path(__file__).resolve().parent / "specs"


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs; always unmounted afterwards."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(mnt)], check=True, timeout=30,
                   capture_output=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, timeout=30)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _leftovers(outdir: Path) -> list[str]:
    """Temp files or dirs a build may leave in its output folder (none may survive)."""
    if not outdir.exists():
        return []
    return sorted(p.name for p in outdir.rglob("*") if "lkit-build." in p.name or "lkit-cache." in p.name
                  or ".tmp" in p.name)


@pytest.mark.parametrize("where", ["outputs", "outputs+cache"])
def test_disk_full(where: str, tiny_fs: Path, store_copy: Path, tmp_path: Path, case) -> None:
    case("host fault", f"disk full while writing {where}")
    cache = tiny_fs / "cache" if where == "outputs+cache" else tmp_path / "cache"
    env = lkit_env(LKIT_STORE=store_copy, LKIT_BUILD_CACHE=cache)
    out = tiny_fs / "out"
    res = run_lkit(["build", "--offline", "--no-cache", "--dir", out, SPECS / "base.yml"], env=env)
    text = assert_clean_error(res, "No space left on device", "base")
    assert res.rc == 11, f"a full disk is the host's fault (exit 11), got {res.rc}: {text}"
    assert not list(out.glob("base-*")), f"outputs left behind: {sorted(p.name for p in out.glob('base-*'))}"
    assert not (out / ".lkit" / "base.json").exists(), "no stamp may claim a finished build"
    assert not _leftovers(out), _leftovers(out)
    if cache.exists():
        assert not [p for p in cache.iterdir() if "." in p.name], "half-written cache entries left"


def test_disk_full_then_space_builds(tiny_fs: Path, store_copy: Path, tmp_path: Path, case) -> None:
    """After a failed build in a full folder, the same command elsewhere builds normally (nothing stuck)."""
    case("host fault", "build again after a disk-full failure")
    env = lkit_env(LKIT_STORE=store_copy, LKIT_BUILD_CACHE=tmp_path / "cache")
    bad = run_lkit(["build", "--offline", "--dir", tiny_fs / "out", SPECS / "base.yml"], env=env)
    assert bad.rc == 11
    good = run_lkit(["build", "--offline", "--dir", tmp_path / "out", SPECS / "base.yml"], env=env)
    assert good.rc == 0, good.stderr
    assert (tmp_path / "out" / "base-initrd.img").stat().st_size > 1_000_000


def test_sigint_during_build(store_copy: Path, tmp_path: Path, case) -> None:
    case("host fault", "Ctrl-C (SIGINT to the process group) during lkit build")
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    env = lkit_env(LKIT_STORE=store_copy, LKIT_BUILD_CACHE=cache)
    before_tmp = set(os.listdir(store_copy / "lkit-tmp"))
    argv = [sys.executable, "-m", "lkit.cli", "build", "--offline", "--no-cache", "--dir", str(out),
            "-f", "kernel+initrd", "-f", "iso-bios", "-f", "tar", str(SPECS / "base.yml")]
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and any(p.name.startswith("lkit-build.") for p in out.iterdir()):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the build ended before it could be interrupted"
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    stderr = err.decode(errors="replace")
    assert proc.returncode == 130, f"rc {proc.returncode}: {stderr}"
    assert "interrupted" in stderr and "Traceback" not in stderr, stderr
    assert not _leftovers(out), _leftovers(out)
    assert set(os.listdir(store_copy / "lkit-tmp")) <= before_tmp, "temp files left in the store"
    assert not list(out.glob("base-*")) or all(p.stat().st_size > 0 for p in out.glob("base-*"))
    stamp = out / ".lkit" / "base.json"
    if stamp.exists():
        json.loads(stamp.read_text())


@pytest.mark.parametrize("mode", ["same spec", "different specs"])
def test_two_builds_share_store_and_cache(mode: str, store_copy: Path, tmp_path: Path, case) -> None:
    case("concurrency", f"two lkit build at once, one store + one build cache, {mode}")
    cache = tmp_path / "cache"
    env = lkit_env(LKIT_STORE=store_copy, LKIT_BUILD_CACHE=cache)
    specs = [SPECS / "base.yml", SPECS / "base.yml"] if mode == "same spec" else \
        [SPECS / "base.yml", SPECS / "crash_service.yml"]
    outs = [tmp_path / "a", tmp_path / "b"]
    procs = [subprocess.Popen([sys.executable, "-m", "lkit.cli", "build", "--offline", "--dir", str(o), str(s)],
                              env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for s, o in zip(specs, outs)]
    try:
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err.decode(errors="replace")
    # Rebuild each alone into fresh folders with a fresh cache: the concurrent outputs must be identical.
    solo_env = lkit_env(LKIT_STORE=store_copy, LKIT_BUILD_CACHE=tmp_path / "solo-cache")
    for spec, out in zip(specs, outs):
        solo = tmp_path / f"solo-{out.name}"
        res = run_lkit(["build", "--offline", "--dir", solo, spec], env=solo_env)
        assert res.rc == 0, res.stderr
        for suffix in ("-kernel", "-initrd.img", "-cmdline"):
            name = spec.stem + suffix
            assert _sha(out / name) == _sha(solo / name), f"{name} differs between concurrent and solo builds"
    if mode == "same spec":
        assert _sha(outs[0] / "base-initrd.img") == _sha(outs[1] / "base-initrd.img")
    # A finished key is `<sha256>` (folder) or `<sha256>.manifest.json`; anything else is a half-made leftover.
    finished = re.compile(r"[0-9a-f]{64}(\.manifest\.json)?")
    assert not [p for p in cache.iterdir() if not finished.fullmatch(p.name)], "temp entries left in the shared build cache"
    index = json.loads((store_copy / "index.json").read_text())
    assert index["manifests"], "the shared store's index survived"
