"""Build manifests and the diff rules: what `lkit diff` and the gate say changed inside an image."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import pytest

from lkit.build.builder import build
from lkit.build.manifest import (BuildManifest, ContainerRecord, FileRecord, ImageRecord, KernelRecord, ManifestError,
                                 Origin, manifest_path, parse_apk_db, parse_dpkg_status, with_formats)
from lkit.cli import main
from lkit.images.store import Store
from lkit.report.diff import boot_changes, diff, explain_check, explain_figure, phases, privilege_gains
from lkit.spec import load_spec
from tests.conformance import images

HERE = Path(__file__).parent
SEED = HERE.parent / "conformance" / "cases" / "seed" / "spec.yml"
MB = 1_000_000


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store(tmp_path_factory.mktemp("diff-store"))
    images.install(store)
    return store


def base_manifest() -> BuildManifest:
    origins = [Origin("init/lkit/containerd", "init[0]", "docker.io/lkit/containerd:1.6", None),
               Origin("services/nginx", "services[0]", "docker.io/lkit/nginx:1.22", None),
               Origin("kernel", "kernel", "docker.io/lkit/kernel:6.1", None),
               Origin("files", "files[0]", "linuxkit.files", None)]
    files = [FileRecord("usr/bin/containerd", "f", 0o755, 0, 0, 30 * MB, "a" * 64, None, 0),
             FileRecord("usr/bin/ctr", "f", 0o755, 0, 0, 10 * MB, "b" * 64, None, 0),
             FileRecord("containers/services/nginx/rootfs/usr/sbin/nginx", "f", 0o755, 0, 0, 1 * MB, "c" * 64, None, 1),
             FileRecord("boot/kernel", "f", 0o644, 0, 0, 14 * MB, "d" * 64, None, 2),
             FileRecord("etc/motd", "f", 0o644, 0, 0, 10, "e" * 64, None, 3),
             FileRecord("bin/sh", "l", 0o777, 0, 0, 0, None, "busybox", 0)]
    nginx = ContainerRecord(slot="services/nginx", section="services", name="nginx", index=0, image="lkit/nginx:1.22",
                            where="suites/linuxkit.yml:47", config_sha256="1" * 64, runtime_sha256="2" * 64,
                            capabilities={s: ["CAP_CHOWN", "CAP_NET_BIND_SERVICE"] for s in ("effective", "permitted", "bounding")},
                            mounts=["/proc proc proc nosuid"], namespaces=["mount", "pid"], oom_score_adj=None,
                            readonly=True, command=["nginx", "-g", "daemon off;"], user="0:0", cwd="/")
    m = BuildManifest(name="linuxkit", key="k1", origins=origins, files={f.path: f for f in files},
                      images={"init/lkit/containerd": ImageRecord("init/lkit/containerd", "lkit/containerd:1.6", "sha256:" + "1" * 64,
                                                                  {"containerd": "1.6.20", "libc6": "2.36-9"}, "label"),
                              "services/nginx": ImageRecord("services/nginx", "lkit/nginx:1.22", "sha256:" + "2" * 64,
                                                            {"nginx": "1.22.1-9"}, "label"),
                              "kernel": ImageRecord("kernel", "lkit/kernel:6.1", "sha256:" + "3" * 64, None, "unknown")},
                      kernel=KernelRecord("6.1.0-57-cloud-amd64", "console=ttyS0", ["virtio_net.ko"], 14 * MB, "d" * 64),
                      containers={"services/nginx": nginx})
    return with_formats(m, {"kernel+initrd": [("linuxkit-kernel", 14 * MB, "d" * 64), ("linuxkit-initrd.img", 20 * MB, "f" * 64),
                                              ("linuxkit-cmdline", 13, "9" * 64)]})


def roundtrip(m: BuildManifest) -> BuildManifest:
    return BuildManifest.from_json(json.loads(m.dumps()))


def test_manifest_json_roundtrips_and_is_deterministic():
    m = base_manifest()
    assert roundtrip(m) == m
    assert roundtrip(m).dumps() == m.dumps()


def test_files_of_a_container_are_shown_in_its_root():
    from lkit.report.diff import display_path
    assert display_path("containers/services/nginx/lower/usr/sbin/nginx") == "nginx:/usr/sbin/nginx"
    assert display_path("containers/onboot/001-dhcpcd/rootfs/sbin/dhcpcd") == "dhcpcd:/sbin/dhcpcd"
    assert display_path("containers/onboot/001-dhcpcd/config.json") == "/containers/onboot/001-dhcpcd/config.json"
    assert display_path("usr/bin/containerd") == "/usr/bin/containerd"


def test_identical_builds_diff_empty():
    d = diff(base_manifest(), base_manifest())
    assert d.empty and d.lines() == ["linuxkit and linuxkit: identical builds"]


def test_files_added_removed_changed_with_size_deltas_biggest_first_summed_per_image():
    a, b = base_manifest(), base_manifest()
    b.files["usr/bin/containerd"] = b.files["usr/bin/containerd"]._replace(size=32_900_000, sha256="0" * 64)
    b.files["usr/share/blob"] = FileRecord("usr/share/blob", "f", 0o644, 0, 0, 3 * MB, "7" * 64, None, 0)
    del b.files["usr/bin/ctr"]
    b.files["etc/motd"] = b.files["etc/motd"]._replace(mode=0o600)
    b.images["init/lkit/containerd"].ref = "lkit/containerd:1.7"
    d = diff(a, b)
    files = {c.subject: c for c in d.group("files")}
    assert files["usr/share/blob"].kind == "added" and files["usr/share/blob"].delta == 3 * MB
    assert files["usr/bin/ctr"].kind == "removed" and files["usr/bin/ctr"].delta == -10 * MB
    assert files["usr/bin/containerd"].delta == 2_900_000
    assert "(lkit/containerd:1.6 -> 1.7)" in files["usr/bin/containerd"].text
    assert "mode 0644 -> 0600" in files["etc/motd"].text
    text = "\n".join(d.lines())
    assert "files: 1 added, 1 removed, 2 changed, -4.1 MB in all" in text
    assert "init/lkit/containerd: -4.1 MB in 3 file(s)" in text
    # the initrd's explanation: the biggest growth first, its image, and what the image's tag did
    lines = explain_figure(d, "kernel+initrd", "size.linuxkit-initrd.img")
    assert lines[0].startswith("linuxkit-initrd.img files -4.1 MB uncompressed: /usr/share/blob +3.0 MB (added, "
                               "lkit/containerd:1.6 -> 1.7), /usr/bin/containerd +2.9 MB (lkit/containerd:1.6 -> 1.7)")


def test_initrd_explanation_leaves_out_boot_and_kernel_explanation_uses_the_kernel():
    a, b = base_manifest(), base_manifest()
    b.files["boot/kernel"] = b.files["boot/kernel"]._replace(size=15 * MB, sha256="8" * 64)
    b.kernel.size, b.kernel.sha256, b.kernel.version = 15 * MB, "8" * 64, "6.1.0-58-cloud-amd64"  # type: ignore[union-attr]
    d = diff(a, b)
    assert explain_figure(d, "kernel+initrd", "size.linuxkit-initrd.img") == []
    kernel = explain_figure(d, "kernel+initrd", "size.linuxkit-kernel")
    assert kernel[0] == "version 6.1.0-57-cloud-amd64 -> 6.1.0-58-cloud-amd64"


def test_packages_upgraded_added_removed_and_unknown_packages_are_not_guessed():
    a, b = base_manifest(), base_manifest()
    b.images["init/lkit/containerd"].packages = {"containerd": "1.7.0", "zlib1g": "1:1.2.13"}
    b.images["kernel"].packages = {"linux-image": "6.1.192"}   # unknown before: not a change
    d = diff(a, b)
    texts = [c.text for c in d.group("packages")]
    assert texts == ["~ containerd 1.6.20 -> 1.7.0 (init/lkit/containerd)", "- libc6 2.36-9 (init/lkit/containerd)",
                     "+ zlib1g 1:1.2.13 (init/lkit/containerd)"]
    assert d.top(1)[0].group == "packages"


def test_kernel_cmdline_and_modules():
    a, b = base_manifest(), base_manifest()
    b.kernel.cmdline = "console=ttyS0 quiet"  # type: ignore[union-attr]
    b.kernel.modules = ["virtio_blk.ko"]  # type: ignore[union-attr]
    texts = [c.text for c in diff(a, b).group("kernel")]
    assert texts == ["cmdline 'console=ttyS0' -> 'console=ttyS0 quiet'", "modules +virtio_blk.ko -virtio_net.ko"]


def test_container_changes_capabilities_first_with_the_spec_line():
    a, b = base_manifest(), base_manifest()
    nginx = b.containers["services/nginx"]
    for s in ("effective", "permitted", "bounding"):
        nginx.capabilities[s] = sorted(nginx.capabilities[s] + ["CAP_NET_RAW"])
    nginx.mounts = nginx.mounts + ["/var bind /var rw,rbind"]
    nginx.namespaces = ["mount"]
    nginx.oom_score_adj = -800
    nginx.readonly = False
    nginx.command = ["nginx"]
    d = diff(a, b)
    texts = [c.text for c in d.group("containers")]
    assert texts[0] == "nginx gained CAP_NET_RAW (suites/linuxkit.yml:47)"
    assert "nginx mounts: - -> +/var bind /var rw,rbind (suites/linuxkit.yml:47)" in texts
    assert "nginx namespaces: mount pid -> mount (suites/linuxkit.yml:47)" in texts
    assert "nginx oomScoreAdj: None -> -800 (suites/linuxkit.yml:47)" in texts
    assert "nginx readonly: true -> false (suites/linuxkit.yml:47)" in texts
    assert "nginx command: nginx -g daemon off; -> nginx (suites/linuxkit.yml:47)" in texts
    assert d.top(1)[0].text == texts[0]
    assert explain_check(d, "capabilities")[0] == texts[0]
    gained = [c.subject for c in privilege_gains(d)]
    assert "services/nginx capabilities" in gained and "services/nginx readonly" in gained


def test_capability_lost_in_one_set_is_told_per_set():
    a, b = base_manifest(), base_manifest()
    b.containers["services/nginx"].capabilities["bounding"] = ["CAP_CHOWN"]
    (change,) = diff(a, b).group("containers")
    assert change.text == "nginx lost CAP_NET_BIND_SERVICE (bounding) (suites/linuxkit.yml:47)"
    assert not change.privilege


def test_containers_added_and_removed():
    a, b = base_manifest(), base_manifest()
    b.containers["onboot/nap"] = ContainerRecord(slot="onboot/nap", section="onboot", name="nap", index=0, image="lkit/binfmt:1",
                                                 where="x.yml:9", config_sha256="", runtime_sha256="",
                                                 command=["/bin/busybox", "sleep", "5"])
    del b.containers["services/nginx"]
    texts = [c.text for c in diff(a, b).group("containers")]
    assert texts == ["+ onboot/nap added: image lkit/binfmt:1, command /bin/busybox sleep 5, capabilities none (x.yml:9)",
                     "- services/nginx removed (suites/linuxkit.yml:47)"]


def test_boot_phases_by_their_own_duration_and_within_the_spread_is_noise():
    before = {"boot.kernel": 1.0, "boot.init": 5.0, "boot.onboot.dhcpcd": 8.0, "boot.services": 10.0}
    after = {"boot.kernel": 1.1, "boot.init": 5.2, "boot.onboot.nap": 10.4, "boot.onboot.dhcpcd": 13.3, "boot.services": 15.4}
    assert phases(before) == [("boot.kernel", 1.0), ("boot.init", 4.0), ("boot.onboot.dhcpcd", 3.0), ("boot.services", 2.0)]
    changes = {c.subject: c for c in boot_changes("kernel+initrd", before, after)}
    assert set(changes) == {"boot.onboot.nap"}    # every other phase took about as long as before
    assert changes["boot.onboot.nap"].text == "boot.onboot.nap new: 5.2 s"
    slower = dict(after, **{"boot.onboot.dhcpcd": 19.3, "boot.services": 21.4})
    assert [c.text for c in boot_changes("f", before, slower, {"boot.onboot.dhcpcd": 0.3})] == [
        "boot.onboot.dhcpcd +5.9 s (3.0 s -> 8.9 s, baseline spread ±0.4 s)", "boot.onboot.nap new: 5.2 s"]
    assert boot_changes("f", before, slower, {"boot.onboot.dhcpcd": 2.0})[0].subject == "boot.onboot.nap"


def test_unrelated_specs_are_refused_with_a_clear_error_unless_forced():
    a, b = base_manifest(), base_manifest()
    b.name = "redisos"
    b.containers = {"services/redis": dataclasses.replace(a.containers["services/nginx"], slot="services/redis", name="redis")}
    with pytest.raises(ManifestError, match="unrelated.*'linuxkit'.*nginx.*'redisos'.*redis"):
        diff(a, b)
    assert not diff(a, b, force=True).empty
    b.containers.update(a.containers)   # one container in common: two versions of one distribution
    assert not diff(a, b).empty


def test_truncated_or_foreign_manifests_are_clear_errors(tmp_path: Path):
    good = tmp_path / "good.json"
    base_manifest().save(good)
    text = good.read_text()
    (tmp_path / "cut.json").write_text(text[: len(text) // 2])
    with pytest.raises(ManifestError, match="truncated") as err:
        BuildManifest.load(tmp_path / "cut.json")
    assert err.value.where and err.value.where.startswith(str(tmp_path / "cut.json"))
    (tmp_path / "other.json").write_text('{"kind": "lkit-run", "schema": 2}')
    with pytest.raises(ManifestError, match="not an lkit build manifest"):
        BuildManifest.load(tmp_path / "other.json")
    data = json.loads(text)
    data["files"][0] = data["files"][0][:3]
    (tmp_path / "short.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="malformed"):
        BuildManifest.load(tmp_path / "short.json")
    data["schema"] = 99
    (tmp_path / "new.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="schema"):
        BuildManifest.load(tmp_path / "new.json")


def test_package_databases():
    status = (b"Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\n\n"
              b"Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n")
    assert parse_dpkg_status(status) == {"libc6": "2.36-9"}
    assert parse_apk_db(b"C:Q1x\nP:musl\nV:1.2.4-r2\n\nP:busybox\nV:1.36.1-r5\n") == {"musl": "1.2.4-r2", "busybox": "1.36.1-r5"}


# ---- built for real: the builder writes the manifest beside the outputs ------------------------------


def test_builder_writes_a_deterministic_manifest_beside_the_outputs(store: Store, tmp_path: Path):
    spec = load_spec([SEED])
    first = build(spec, ["kernel+initrd"], tmp_path / "a", store=store, cache_dir=tmp_path / "cache", offline=True)
    second = build(spec, ["kernel+initrd"], tmp_path / "b", store=store, use_cache=False, offline=True)
    assert first.manifest == manifest_path(tmp_path / "a", "spec")
    assert first.manifest is not None and second.manifest is not None
    assert first.manifest.read_bytes() == second.manifest.read_bytes()
    assert not any(p.name.endswith("manifest.json") for p in (tmp_path / "a").iterdir())  # not among the outputs
    m = BuildManifest.load(first.manifest)
    assert set(m.containers) == {"onboot/sysctl", "onboot/dhcpcd", "services/rngd", "services/svc-a", "services/svc-b"}
    assert m.containers["onboot/dhcpcd"].capabilities["effective"] == ["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"]
    assert m.containers["services/rngd"].oom_score_adj == -800 and m.containers["services/rngd"].readonly
    assert m.containers["services/svc-b"].where.endswith("spec.yml:37")
    assert m.kernel is not None and m.kernel.cmdline == "console=ttyS0 console=tty0 page_poison=1"
    assert [a.role for a in m.formats["kernel+initrd"]] == ["kernel", "initrd", "cmdline"]
    daemon = m.files["etc/docker/daemon.json"]
    assert (daemon.size, m.origins[daemon.origin].slot) == (len('{"debug": true}'), "files")
    assert m.origins[m.files["containers/onboot/001-dhcpcd/config.json"].origin].slot == "onboot/dhcpcd"
    # a cached rebuild into another folder reuses the cached manifest: the same bytes
    third = build(spec, ["kernel+initrd"], tmp_path / "c", store=store, cache_dir=tmp_path / "cache", offline=True)
    assert third.manifest is not None and third.manifest.read_bytes() == first.manifest.read_bytes()


def test_lkit_diff_command(store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LKIT_STORE", str(store.root))
    monkeypatch.setenv("LKIT_BUILD_CACHE", str(tmp_path / "cache"))
    case = tmp_path / "case"
    case.mkdir()
    shutil.copy(SEED, case / "spec.yml")
    changed = tmp_path / "changed"
    changed.mkdir()
    text = SEED.read_text().replace("     - CAP_DAC_OVERRIDE", "     - CAP_DAC_OVERRIDE\n     - CAP_SYS_TIME")
    (changed / "spec.yml").write_text(text.replace("page_poison=1", "page_poison=1 quiet"))
    spec_a, spec_b = load_spec([case / "spec.yml"]), load_spec([changed / "spec.yml"])
    build(spec_a, ["kernel+initrd"], tmp_path / "a", store=store, offline=True)
    build(spec_b, ["kernel+initrd"], tmp_path / "b", store=store, offline=True)
    assert main(["diff", str(tmp_path / "a"), str(tmp_path / "a")]) == 0
    assert "identical" in capsys.readouterr().out
    started = time.monotonic()
    assert main(["diff", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert time.monotonic() - started < 1.0
    out = capsys.readouterr().out
    assert "svc-b gained CAP_SYS_TIME" in out and "spec.yml:37" in out and "page_poison=1 quiet" in out
    assert main(["diff", "--json", str(manifest_path(tmp_path / "a", "spec")), str(tmp_path / "b")]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["identical"] is False and {c["group"] for c in data["diffs"][0]["changes"]} >= {"containers", "kernel"}
    # specs are built on the fly
    assert main(["diff", "-f", "kernel+initrd", str(case / "spec.yml"), str(changed / "spec.yml")]) == 1
    assert "CAP_SYS_TIME" in capsys.readouterr().out
    # bad input: a clear error, no traceback, exit 2
    cut = tmp_path / "cut.json"
    cut.write_text(manifest_path(tmp_path / "a", "spec").read_text()[:3000])
    assert main(["diff", str(cut), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "truncated" in err and "Traceback" not in err
    assert main(["diff", str(tmp_path), str(tmp_path / "b")]) == 2
    assert "holds no build manifest" in capsys.readouterr().err
