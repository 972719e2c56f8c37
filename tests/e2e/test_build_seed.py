"""`lkit build` on the seed spec, as a user runs it: the initrd holds LinuxKit's bundles with the
config.json LinuxKit's rules give; builds are byte-identical and cached; --dry-run merges files."""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "suites" / "linuxkit.yml"


def lkit(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lkit.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def initrd_files(path: Path) -> dict[str, tuple[int, bytes]]:
    """name -> (mode, data) of every entry of a (multi-member) gzip newc cpio."""
    out: dict[str, tuple[int, bytes]] = {}
    data = path.read_bytes()
    while data:
        d = zlib.decompressobj(31)
        raw = d.decompress(data)
        data = d.unused_data
        pos = 0
        while True:
            head = raw[pos:pos + 110]
            assert head[:6] == b"070701", f"bad cpio header at {pos}"
            fields = [int(head[6 + 8 * i: 14 + 8 * i], 16) for i in range(13)]
            mode, size, namesize = fields[1], fields[6], fields[11]
            name_end = pos + 110 + namesize
            name = raw[pos + 110: name_end - 1].decode()
            data_start = (name_end + 3) & ~3
            if name == "TRAILER!!!":
                break
            out[name] = (mode, raw[data_start: data_start + size])
            pos = (data_start + size + 3) & ~3
    return out


@pytest.fixture(scope="module")
def seed_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seed")
    result = lkit("build", "--no-cache", "--dir", str(out), "--format", "kernel+initrd", str(SEED))
    assert result.returncode == 0, result.stderr
    assert "trust: is accepted and ignored" in result.stderr
    return out


def config(files: dict[str, tuple[int, bytes]], bundle: str) -> dict:
    return json.loads(files[f"containers/{bundle}/config.json"][1])


def test_initrd_holds_the_five_bundles_with_linuxkit_configs(seed_build: Path):
    assert {p.name for p in seed_build.iterdir() if p.is_file()} == {"linuxkit-kernel", "linuxkit-initrd.img", "linuxkit-cmdline"}
    assert (seed_build / "linuxkit-cmdline").read_text() == "console=ttyS0 console=tty0 page_poison=1"
    files = initrd_files(seed_build / "linuxkit-initrd.img")
    bundles = sorted({"/".join(n.split("/")[:3]) for n in files if n.startswith("containers/") and n.count("/") >= 2})
    assert bundles == ["containers/onboot/000-sysctl", "containers/onboot/001-binfmt", "containers/onboot/002-dhcpcd",
                       "containers/services/nginx", "containers/services/rngd"]

    nginx = config(files, "services/nginx")["process"]["capabilities"]
    five = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_NET_BIND_SERVICE", "CAP_SETGID", "CAP_SETUID"]
    for which in ("effective", "permitted", "bounding", "inheritable"):
        assert sorted(nginx[which]) == five, which
    assert "ambient" not in nginx or not nginx["ambient"]

    rngd = config(files, "services/rngd")
    assert rngd["process"]["oomScoreAdj"] == -800
    assert rngd["root"] == {"path": "rootfs", "readonly": True}
    assert rngd["process"]["capabilities"]["effective"] == ["CAP_SYS_ADMIN"]

    sysctl = config(files, "onboot/000-sysctl")
    kinds = {ns["type"] for ns in sysctl["linux"]["namespaces"]}
    assert not kinds & {"network", "pid", "ipc"}, kinds     # net/pid/ipc: host
    assert "mount" in kinds

    dhcpcd = config(files, "onboot/002-dhcpcd")
    binds = {m["destination"]: m for m in dhcpcd["mounts"] if m.get("type") == "bind"}
    assert binds["/var"]["source"] == "/var" and binds["/etc"]["source"] == "/tmp/etc"
    assert dhcpcd["process"]["args"] == ["/sbin/dhcpcd", "--nobackground", "-f", "/dhcpcd.conf", "-1"]

    # Writable containers: image in lower/, tmpfs + overlay described in runtime.json (LinuxKit's layout).
    assert any(n.startswith("containers/services/nginx/lower/usr/sbin/nginx") for n in files)
    runtime = json.loads(files["containers/services/nginx/runtime.json"][1])
    assert [m.get("type") for m in runtime["mounts"]] == ["tmpfs", None, "overlay"]
    # The spec's files entry, default mode 0600.
    mode, data = files["etc/docker/daemon.json"]
    assert data == b'{"debug": true}' and mode & 0o7777 == 0o600


def test_builds_are_byte_identical_and_unchanged_inputs_are_not_rebuilt(seed_build: Path, tmp_path: Path):
    again = lkit("build", "--no-cache", "--dir", str(tmp_path), "--format", "kernel+initrd", str(SEED))
    assert again.returncode == 0, again.stderr
    for name in ("linuxkit-kernel", "linuxkit-initrd.img", "linuxkit-cmdline"):
        assert (tmp_path / name).read_bytes() == (seed_build / name).read_bytes(), name
    before = (tmp_path / "linuxkit-initrd.img").stat().st_mtime_ns
    third = lkit("build", "--dir", str(tmp_path), "--format", "kernel+initrd", str(SEED))
    assert third.returncode == 0 and "unchanged" in third.stdout
    assert (tmp_path / "linuxkit-initrd.img").stat().st_mtime_ns == before


def test_dry_run_merges_files_as_linuxkit_and_builds_nothing(tmp_path: Path):
    extra = tmp_path / "extra.yml"
    extra.write_text("kernel:\n  cmdline: console=ttyS0\nservices:\n  - name: redis\n    image: lkit/redis:7.0\n")
    result = lkit("build", "--dry-run", "--dir", str(tmp_path / "out"), str(SEED), str(extra))
    assert result.returncode == 0, result.stderr
    merged = yaml.safe_load(result.stdout)
    assert merged["kernel"]["cmdline"] == "console=ttyS0"
    assert merged["kernel"]["image"] == "lkit/kernel:6.1"
    assert [s["name"] for s in merged["services"]] == ["rngd", "nginx", "redis"]
    assert not (tmp_path / "out").exists()


def test_a_spec_mistake_is_one_clear_line_with_file_and_line(tmp_path: Path):
    bad = tmp_path / "bad.yml"
    bad.write_text("kernel:\n  image: lkit/kernel:6.1\nservices:\n  - name: x\n    image: lkit/nginx:1.22\n    capabilities: [CAP_FLY]\n")
    result = lkit("build", str(bad))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"{bad}:6" in result.stderr and "CAP_FLY" in result.stderr
