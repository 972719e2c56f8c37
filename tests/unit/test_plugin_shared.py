"""The processes of one run (xdist workers) build a spec once and rebuild it once between them."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from types import SimpleNamespace

from lkit.build.builder import Artifact, BuiltImage
from lkit.pytest_plugin import shared, state
from lkit.pytest_plugin.state import RunState


def _hold(path: str, ready, seconds: float) -> None:
    with shared.exclusive(Path(path)):
        ready.set()
        time.sleep(seconds)


def test_the_lock_makes_another_process_wait(tmp_path: Path) -> None:
    lock = tmp_path / "deep" / ".seed.lock"
    ready = multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold, args=(str(lock), ready, 0.5))
    holder.start()
    assert ready.wait(10)
    start = time.monotonic()
    with shared.exclusive(lock):
        waited = time.monotonic() - start
    holder.join(10)
    assert waited >= 0.3


def image(key: str, outdir: Path) -> BuiltImage:
    built = BuiltImage(name="seed", outdir=outdir, key=key)
    built.artifacts = {"kernel+initrd": [Artifact(outdir / "seed-kernel", 10, "aa"), Artifact(outdir / "seed-initrd.img", 20, "bb")],
                       "iso-efi": [Artifact(outdir / "seed-efi.iso", 30, "cc")]}
    return built


def test_digests_round_trip_only_for_the_same_key_and_formats(tmp_path: Path) -> None:
    path = tmp_path / "seed.rebuild.json"
    shared.save_digests(path, image("k1", tmp_path / "scratch"))
    loaded = shared.load_digests(path, "k1", ["kernel+initrd", "iso-efi"])
    assert loaded is not None
    assert {a.path.name: a.sha256 for a in loaded.artifacts["kernel+initrd"]} == {"seed-kernel": "aa", "seed-initrd.img": "bb"}
    assert shared.load_digests(path, "k2", ["kernel+initrd"]) is None          # another build
    assert shared.load_digests(path, "k1", ["raw-bios"]) is None               # a format it lacks
    assert shared.load_digests(tmp_path / "missing.json", "k1", []) is None
    path.write_text("{not json")
    assert shared.load_digests(path, "k1", ["kernel+initrd"]) is None


def test_two_workers_of_a_run_rebuild_once(tmp_path: Path, monkeypatch) -> None:
    calls: list[bool] = []

    def fake_build(spec, formats, outdir, *, store=None, use_cache=True, **_kw):
        calls.append(use_cache)
        return image("k1", outdir)

    monkeypatch.setattr(state, "build", fake_build)
    settings = SimpleNamespace(report_dir=tmp_path / "reports", build_dir=tmp_path / "build", prebuilt=None,
                               prebuilt_oci=None, push=None, uses_prebuilt=False,
                               store=tmp_path / "store")
    suite = SimpleNamespace(path=tmp_path / "seed.yml", spec=SimpleNamespace(name="seed"),
                            formats=["kernel+initrd", "iso-efi"])
    workers = [RunState(settings, "run-1"), RunState(settings, "run-1")]   # one run id: xdist gives it to both
    first = workers[0].rebuilt(suite)
    second = workers[1].rebuilt(suite)
    assert calls == [True, False, True]      # build, rebuild (worker 1); build only (worker 2: a no-change build)
    assert {a.path.name: a.sha256 for a in second.artifacts["iso-efi"]} == {a.path.name: a.sha256 for a in first.artifacts["iso-efi"]}
    assert workers[1].rebuilt(suite) is second
    another_run = RunState(settings, "run-2")
    another_run.rebuilt(suite)
    assert calls[-2:] == [True, False]       # another run proves determinism for itself
    for worker in [*workers, another_run]:
        worker.close()


def test_each_architecture_and_signing_builds_in_its_own_folder(tmp_path: Path, monkeypatch) -> None:
    """amd64 in NAME/, signed in NAME/secureboot, arm64 in NAME/arm64, arm64 signed in NAME/arm64/secureboot:
    each with only its own variants' formats, and keys only for the signed ones."""
    from lkit.core.arch import AMD64, ARM64

    calls: list[tuple[Path, list[str], bool, str]] = []

    def fake_build(spec, formats, outdir, *, store=None, keys=None, arch=AMD64, **_kw):
        calls.append((outdir, list(formats), keys is not None, arch.name))
        return image("k", outdir)

    monkeypatch.setattr(state, "build", fake_build)
    settings = SimpleNamespace(report_dir=tmp_path / "reports", build_dir=tmp_path / "build", prebuilt=None,
                               prebuilt_oci=None, push=None, uses_prebuilt=False, store=tmp_path / "store")
    suite = SimpleNamespace(path=tmp_path / "seed.yml", spec=SimpleNamespace(name="seed"),
                            expectations=SimpleNamespace(secureboot_keys="KEYS"),
                            formats=["kernel+initrd", "iso-efi", "iso-efi@efi-secureboot", "arm64.kernel+initrd",
                                     "arm64.iso-efi", "arm64.iso-efi@efi-secureboot"])
    run = RunState(settings, "run-1")
    for arch in (AMD64, ARM64):
        for signed in (False, True):
            run.built(suite, signed=signed, arch=arch)
    b = tmp_path / "build" / "seed"
    assert calls == [(b, ["kernel+initrd", "iso-efi"], False, "amd64"),
                     (b / "secureboot", ["iso-efi"], True, "amd64"),
                     (b / "arm64", ["kernel+initrd", "iso-efi"], False, "arm64"),
                     (b / "arm64" / "secureboot", ["iso-efi"], True, "arm64")]
    run.built(suite, signed=True, arch=ARM64)
    assert len(calls) == 4                   # once per session
    run.close()
