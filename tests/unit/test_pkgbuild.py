"""lkit.images.pkgbuild without the network: build.yml validation, lock handling, library closure,
kernel module selection, deterministic layers and content-addressed no-op builds (synthetic .debs)."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from lkit.errors import ImageError, SpecError
from lkit.images import debian, pkgbuild
from lkit.images.store import Store

_spec = importlib.util.spec_from_file_location("lkit_test_debian_fakes", Path(__file__).with_name("test_debian.py"))
fakes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fakes)

INTERP = "/lib64/ld-linux-x86-64.so.2"


def write_build(tmp_path: Path, text: str, lock: str | None = None, name: str = "tool") -> Path:
    d = tmp_path / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "build.yml").write_text(text)
    if lock is not None:
        (d / "build.lock").write_text(lock)
    return d


def expect_error(tmp_path: Path, text: str, line: int, *words: str) -> SpecError:
    d = write_build(tmp_path, text)
    with pytest.raises(SpecError) as exc:
        pkgbuild.load_build(d)
    assert exc.value.where == f"{d / 'build.yml'}:{line}", str(exc.value)
    for word in words:
        assert word in str(exc.value)
    return exc.value


BASE = "image: lkit/tool\ntag: \"1\"\npackages: [tool]\n"


# -- validation ----------------------------------------------------------------------------------


def test_valid_build_yml_is_parsed(tmp_path):
    d = write_build(tmp_path, BASE + """take:
  - binaries: ["/usr/sbin/tool:/usr/bin/tool"]
  - paths: [/etc/tool]
  - kernel: {modules: [virtio-net]}
dirs: ["/tmp:1777", /run]
users: {www-data: 33, app: {uid: 1000, gid: 100, home: /app}}
config: {Cmd: [/usr/bin/tool], Env: ["A=1"], WorkingDir: /}
label: {capabilities: [CAP_NET_ADMIN], net: host, readonly: true}
""")
    spec = pkgbuild.load_build(d)
    assert spec.ref == "lkit/tool:1"
    assert spec.take[0].value == [("/usr/sbin/tool", "/usr/bin/tool")]
    assert spec.take[2].value == ["virtio_net"]
    assert spec.dirs == [("tmp", 0o1777), ("run", 0o755)]
    assert [(u.name, u.uid, u.gid, u.home) for u in spec.users] == [("www-data", 33, 33, "/nonexistent"),
                                                                    ("app", 1000, 100, "/app")]
    assert spec.label == {"capabilities": ["CAP_NET_ADMIN"], "net": "host", "readonly": True}


def test_unknown_top_key(tmp_path):
    expect_error(tmp_path, BASE + "take: [{paths: [/x]}]\npackage: [x]\n", 5, "unknown key 'package'", "packages")


def test_missing_required_key(tmp_path):
    expect_error(tmp_path, "image: lkit/tool\ntag: \"1\"\npackages: [tool]\n", 1, "missing required key 'take'")


def test_unquoted_numeric_tag(tmp_path):
    err = expect_error(tmp_path, "image: lkit/tool\ntag: 6.1\npackages: [x]\ntake: [{paths: [/x]}]\n", 2, "tag")
    assert "quote" in (err.hint or "")


def test_bad_package_name(tmp_path):
    expect_error(tmp_path, "image: lkit/tool\ntag: \"1\"\npackages:\n  - ok\n  - Bad_Name=1.0\ntake: [{paths: [/x]}]\n",
                 5, "packages[1]", "Bad_Name=1.0")


def test_unknown_take_kind(tmp_path):
    expect_error(tmp_path, BASE + "take:\n  - paths: [/x]\n  - copy: [/y]\n", 6, "take[1]", "copy", "binaries")


def test_relative_take_path(tmp_path):
    expect_error(tmp_path, BASE + "take:\n  - binaries: [usr/bin/x]\n", 5, "binaries[0]", "absolute")


def test_bad_label_capability_is_a_spec_error(tmp_path):
    expect_error(tmp_path, BASE + "take: [{paths: [/x]}]\nlabel:\n  capabilities: [CAP_NOPE]\n", 6, "CAP_NOPE")


def test_unknown_label_field(tmp_path):
    expect_error(tmp_path, BASE + "take: [{paths: [/x]}]\nlabel:\n  capability: [CAP_CHOWN]\n", 6, "capability")


def test_bad_dir_mode_and_env(tmp_path):
    expect_error(tmp_path, BASE + "take: [{paths: [/x]}]\ndirs: [/tmp:999]\n", 5, "dirs[0]")
    expect_error(tmp_path, BASE + "take: [{paths: [/x]}]\nconfig: {Env: [NOEQUALS]}\n", 5, "NAME=VALUE")


def test_files_must_be_inside_the_folder(tmp_path):
    expect_error(tmp_path, BASE + "take: [{paths: [/x]}]\nfiles: ../\n", 5, "files", "not a directory inside")


# -- lock ----------------------------------------------------------------------------------------

SHA = "a" * 64


def test_lock_round_trip_and_errors(tmp_path):
    path = tmp_path / "build.lock"
    entries = [pkgbuild.Locked("tool", "1:1.0-1", SHA), pkgbuild.Locked("linux-image-6.1.0-1-cloud-amd64", "6.1.1-1",
                                                                         SHA, via="linux-image-cloud-amd64")]
    pkgbuild.write_lock(path, entries)
    assert pkgbuild.read_lock(path) == entries
    path.write_text("# c\n\ntool 1.0 md5:abc\n")
    with pytest.raises(SpecError) as exc:
        pkgbuild.read_lock(path)
    assert exc.value.where == f"{path}:3" and "--update" in exc.value.hint


def test_lock_must_match_packages(tmp_path):
    d = write_build(tmp_path, BASE.replace("[tool]", "[tool, other]") + "take: [{paths: [/x]}]\n",
                    lock=f"tool 1.0 sha256:{SHA}\n")
    spec = pkgbuild.load_build(d)
    with pytest.raises(SpecError, match="1 packages") as exc:
        pkgbuild.match_lock(spec, pkgbuild.read_lock(d / "build.lock"), d / "build.lock")
    assert "--update" in exc.value.hint
    lock = [pkgbuild.Locked("tool", "1", SHA), pkgbuild.Locked("another", "1", SHA)]
    with pytest.raises(SpecError, match="does not match packages item other"):
        pkgbuild.match_lock(spec, lock, d / "build.lock")


def test_missing_lock_asks_for_update(tmp_path):
    d = write_build(tmp_path, BASE + "take: [{paths: [/x]}]\n")
    with pytest.raises(SpecError, match="no build.lock") as exc:
        pkgbuild.build(d, Store(tmp_path / "store"))
    assert "--update" in exc.value.hint


# -- assembling from synthetic packages ----------------------------------------------------------


@pytest.fixture()
def fake_archive(tmp_path, monkeypatch):
    """Fake .debs served by a fake `download` that records what was asked for (name, version, sha)."""
    debs = tmp_path / "debs"
    debs.mkdir()
    libc = {"lib": None, "lib/x86_64-linux-gnu": None, "lib64": None,
            "lib/x86_64-linux-gnu/libc.so.6": fakes.make_elf([]),
            "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2": fakes.make_elf([]),
            "lib64/ld-linux-x86-64.so.2": "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"}
    tool = {"usr/sbin/tool": fakes.make_elf(["libseccomp.so.2", "libc.so.6"], interp=INTERP),
            "usr/sbin/tool-link": "tool", "etc/tool/a.conf": b"a=1\n", "etc/tool/sub/b.conf": b"b=2\n",
            "usr/share/certs/b.crt": b"B\n", "usr/share/certs/a.crt": b"A"}
    seccomp = {"usr/lib/x86_64-linux-gnu/libseccomp.so.2": "libseccomp.so.2.5.4",
               "usr/lib/x86_64-linux-gnu/libseccomp.so.2.5.4": fakes.make_elf(["libc.so.6"])}
    paths = {name: fakes.make_deb(debs / f"{name}.deb", files, modes={"usr/sbin/tool": 0o755})
             for name, files in (("libc6", libc), ("tool", tool), ("libseccomp2", seccomp))}
    calls = []

    def download(name, version, sha256, cache=None, arch=None):
        calls.append((name, version, sha256))
        actual = debian.sha256_file(paths[name])
        if sha256 is not None and sha256 != actual:
            raise ImageError("sha mismatch")
        return paths[name], actual

    monkeypatch.setattr(debian, "download", download)
    monkeypatch.setattr(debian, "depends", lambda name, version, arch=None: ["libc6", "libseccomp2"])
    lock = "".join(f"{n} 1.0-1 sha256:{debian.sha256_file(p)}\n" for n, p in sorted(paths.items()))
    return {"paths": paths, "calls": calls, "lock": lock}


TOOL_BUILD = """image: lkit/tool
tag: "1"
packages: [libc6, libseccomp2, tool]
take:
  - binaries: ["/usr/sbin/tool-link:/usr/bin/tool"]
  - paths: ["/etc/tool", "/etc/tool/a.conf:/etc/copy.conf"]
  - certificates: {from: /usr/share/certs, to: /etc/ssl/certs/ca-certificates.crt}
dirs: ["/tmp:1777"]
users: {www-data: 33}
files: files/
config: {Cmd: [/usr/bin/tool]}
label: {readonly: true, capabilities: [CAP_SYS_ADMIN]}
"""


def layer_members(store: Store, ref: str) -> dict[str, tarfile.TarInfo]:
    img = store.resolve(ref)
    with tarfile.open(store.uncompressed_layer(img.layers[0], img.diff_ids[0])) as tf:
        return {m.name: m for m in tf.getmembers()}


def read_member(store: Store, ref: str, name: str) -> bytes:
    img = store.resolve(ref)
    with tarfile.open(store.uncompressed_layer(img.layers[0], img.diff_ids[0])) as tf:
        return tf.extractfile(name).read()


def tool_dir(tmp_path: Path, fake_archive) -> Path:
    d = write_build(tmp_path, TOOL_BUILD, lock=fake_archive["lock"])
    (d / "files" / "etc").mkdir(parents=True)
    (d / "files" / "etc" / "motd").write_text("hi\n")
    (d / "files" / "run.sh").write_text("#!/bin/sh\n")
    (d / "files" / "run.sh").chmod(0o750)
    return d


def test_build_takes_closure_paths_users_files(tmp_path, fake_archive):
    d = tool_dir(tmp_path, fake_archive)
    store = Store(tmp_path / "store")
    result = pkgbuild.build(d, store)
    assert result.status == "built" and result.digest.startswith("sha256:") and result.size > 0
    m = layer_members(store, "lkit/tool:1")
    # the binary under its new name, its interpreter (link + target), its library chain
    assert m["usr/bin/tool"].isfile() and m["usr/bin/tool"].mode == 0o755
    assert m["lib64/ld-linux-x86-64.so.2"].issym()
    assert m["lib64/ld-linux-x86-64.so.2"].linkname == "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    assert m["lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"].isfile()
    assert m["usr/lib/x86_64-linux-gnu/libseccomp.so.2"].linkname == "libseccomp.so.2.5.4"
    assert m["usr/lib/x86_64-linux-gnu/libseccomp.so.2.5.4"].isfile()
    assert m["lib/x86_64-linux-gnu/libc.so.6"].isfile()
    assert "usr/sbin/tool" not in m  # renamed, not copied twice
    # paths: a tree and a renamed file
    assert {"etc/tool/a.conf", "etc/tool/sub/b.conf", "etc/copy.conf"} <= set(m)
    assert read_member(store, "lkit/tool:1", "etc/ssl/certs/ca-certificates.crt") == b"A\nB\n"
    assert m["tmp"].isdir() and m["tmp"].mode == 0o1777
    assert read_member(store, "lkit/tool:1", "etc/passwd").decode().splitlines() == [
        "root:x:0:0:root:/root:/bin/sh", "www-data:x:33:33:www-data:/nonexistent:/usr/sbin/nologin"]
    assert m["run.sh"].mode == 0o755 and read_member(store, "lkit/tool:1", "etc/motd") == b"hi\n"
    # every entry: root-owned, fixed time, sorted, parents present
    names = [n for n in m]
    assert names == sorted(names)
    assert all(i.mtime == pkgbuild.EPOCH and i.uid == 0 and i.gid == 0 for i in m.values())
    assert all(n.rpartition("/")[0] in m for n in names if "/" in n)
    img = store.resolve("lkit/tool:1")
    assert json.loads(img.labels[pkgbuild.MOBY_LABEL]) == {"capabilities": ["CAP_SYS_ADMIN"], "readonly": True}
    assert img.config["config"]["Cmd"] == ["/usr/bin/tool"]
    assert img.config["config"]["Env"] == [pkgbuild.DEFAULT_PATH]


def test_lock_is_obeyed(tmp_path, fake_archive):
    d = tool_dir(tmp_path, fake_archive)
    pkgbuild.build(d, Store(tmp_path / "store"))
    locked = {e.name: e for e in pkgbuild.read_lock(d / "build.lock")}
    assert fake_archive["calls"] and all(
        (v, s) == (locked[n].version, locked[n].sha256) for n, v, s in fake_archive["calls"])
    # a lock whose checksum differs from the archive's file: the build fails, nothing is tagged
    bad = [e if e.name != "tool" else pkgbuild.Locked(e.name, e.version, "0" * 64) for e in locked.values()]
    pkgbuild.write_lock(d / "build.lock", bad)
    store = Store(tmp_path / "store2")
    with pytest.raises((ImageError, SpecError)):
        pkgbuild.build(d, store)
    assert store.lookup("lkit/tool:1") is None


def test_same_inputs_same_digest_in_two_fresh_stores_and_noop(tmp_path, fake_archive):
    d = tool_dir(tmp_path, fake_archive)
    first = pkgbuild.build(d, Store(tmp_path / "s1"))
    second = pkgbuild.build(d, Store(tmp_path / "s2"))
    assert first.digest == second.digest and first.status == second.status == "built"
    n = len(fake_archive["calls"])
    again = pkgbuild.build(d, Store(tmp_path / "s1"))
    assert again.status == "unchanged" and again.digest == first.digest
    assert len(fake_archive["calls"]) == n  # the no-op fetched nothing
    # a changed input (a file under files/) rebuilds with another digest
    (d / "files" / "etc" / "motd").write_text("changed\n")
    changed = pkgbuild.build(d, Store(tmp_path / "s1"))
    assert changed.status == "built" and changed.digest != first.digest


def test_files_modes_do_not_depend_on_the_checkout_umask(tmp_path, fake_archive):
    """The same build under umask 022 and 002 (everything g+w) gives the same modes and digest."""
    d = tool_dir(tmp_path / "u022", fake_archive)
    (d / "files" / "run.sh").chmod(0o755)
    (d / "files" / "etc").chmod(0o755)
    (d / "files" / "etc" / "motd").chmod(0o644)
    loose = tmp_path / "u002" / d.name
    shutil.copytree(d, loose, symlinks=True)
    for p in [loose / "files", *(loose / "files").rglob("*")]:
        p.chmod(p.stat().st_mode | 0o020)
    assert (loose / "files" / "run.sh").stat().st_mode & 0o777 == 0o775
    strict = pkgbuild.build(d, Store(tmp_path / "s022"))
    lax_store = Store(tmp_path / "s002")
    lax = pkgbuild.build(loose, lax_store)
    assert lax.digest == strict.digest
    m = layer_members(lax_store, "lkit/tool:1")
    assert (m["run.sh"].mode, m["etc"].mode, m["etc/motd"].mode) == (0o755, 0o755, 0o644)


def test_image_mode_keeps_only_the_exec_bit():
    assert [pkgbuild.image_mode(m, "file") for m in (0o644, 0o664, 0o600, 0o666)] == [0o644] * 4
    assert [pkgbuild.image_mode(m, "file") for m in (0o755, 0o775, 0o700, 0o750, 0o744)] == [0o755] * 5
    assert [pkgbuild.image_mode(m, "dir") for m in (0o755, 0o775, 0o700)] == [0o755] * 3


def test_missing_library_names_the_binary_and_the_package_depends(tmp_path, fake_archive):
    text = TOOL_BUILD.replace("[libc6, libseccomp2, tool]", "[libc6, tool]")
    lock = "".join(line + "\n" for line in fake_archive["lock"].splitlines() if not line.startswith("libseccomp2"))
    d = write_build(tmp_path, text.replace("files: files/\n", ""), lock=lock)
    with pytest.raises(ImageError) as exc:
        pkgbuild.build(d, Store(tmp_path / "store"))
    assert "libseccomp.so.2 (needed by /usr/sbin/tool)" in exc.value.message
    assert exc.value.where == f"{d / 'build.yml'}:5"
    assert "tool depends on libc6, libseccomp2" in exc.value.hint


def test_missing_path_is_an_error_at_its_take_item(tmp_path, fake_archive):
    text = TOOL_BUILD.replace('"/etc/tool", ', '"/etc/nothere", ').replace("files: files/\n", "")
    d = write_build(tmp_path, text, lock=fake_archive["lock"])
    with pytest.raises(ImageError, match="/etc/nothere is not in the packages") as exc:
        pkgbuild.build(d, Store(tmp_path / "store"))
    assert exc.value.where.endswith("build.yml:6")


# -- kernel modules ------------------------------------------------------------------------------


def test_kernel_tar_takes_module_closure_and_writes_modules_dep(tmp_path):
    base = "lib/modules/6.1.0-9-cloud-amd64"
    k = f"{base}/kernel"
    files = {
        "boot/vmlinuz-6.1.0-9-cloud-amd64": b"VMLINUZ",
        f"{k}/drivers/virtio/virtio_ring.ko": fakes.make_ko(name="virtio_ring", depends=""),
        f"{k}/drivers/virtio/virtio.ko": fakes.make_ko(name="virtio", depends="virtio_ring"),
        f"{k}/net/core/failover.ko": fakes.make_ko(name="failover", depends=""),
        f"{k}/drivers/net/net_failover.ko": fakes.make_ko(name="net_failover", depends="failover"),
        f"{k}/drivers/net/virtio_net.ko": fakes.make_ko(name="virtio_net", depends="virtio,net_failover,virtio_ring",
                                                        alias="virtio:d00000001v*"),
        f"{k}/drivers/net/unrelated.ko": fakes.make_ko(name="unrelated", depends=""),
        f"{base}/modules.builtin": b"kernel/drivers/tty/serial/8250.ko\n",
    }
    deb = fakes.make_deb(tmp_path / "k.deb", files)
    fs = debian.PackageFS.open([("linux-image", deb)], tmp_path)
    data = pkgbuild.kernel_tar(fs, "6.1.0-9-cloud-amd64", ["virtio_net", "8250"], "build.yml:5")
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = tf.getnames()
        dep = tf.extractfile(f"{base}/modules.dep").read().decode().splitlines()
        alias = tf.extractfile(f"{base}/modules.alias").read().decode()
    assert f"{k}/drivers/net/virtio_net.ko" in names and f"{k}/drivers/net/unrelated.ko" not in names
    assert names == sorted(names)
    line = next(x for x in dep if x.startswith("kernel/drivers/net/virtio_net.ko:"))
    deps = line.split(":")[1].split()
    # modprobe loads the last dependency first: each module's own deps come after it in the list
    assert set(deps) == {"kernel/drivers/virtio/virtio.ko", "kernel/drivers/virtio/virtio_ring.ko",
                         "kernel/drivers/net/net_failover.ko", "kernel/net/core/failover.ko"}
    assert deps.index("kernel/drivers/virtio/virtio.ko") < deps.index("kernel/drivers/virtio/virtio_ring.ko")
    assert deps.index("kernel/drivers/net/net_failover.ko") < deps.index("kernel/net/core/failover.ko")
    assert "alias virtio:d00000001v* virtio_net" in alias
    with pytest.raises(ImageError, match="'nosuch'") as exc:
        pkgbuild.kernel_tar(fs, "6.1.0-9-cloud-amd64", ["nosuch"], "build.yml:5")
    assert exc.value.where == "build.yml:5"


# -- tar writer and helpers ----------------------------------------------------------------------


def test_write_tar_is_deterministic_and_has_no_pax_headers():
    entries = {"b/long/" + "x" * 120: pkgbuild.ImageFile("file", 0o644, b"data"),
               "a": pkgbuild.ImageFile("symlink", 0o777, link="/b"), "c": pkgbuild.ImageFile("dir", 0o700)}
    one, two = io.BytesIO(), io.BytesIO()
    pkgbuild.write_layer_tar(one, entries)
    pkgbuild.write_layer_tar(two, dict(reversed(list(entries.items()))))
    assert one.getvalue() == two.getvalue()
    raw = one.getvalue()
    assert b"PaxHeader" not in raw and b"mtime=" not in raw
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        assert tf.getnames() == ["a", "b", "b/long", "b/long/" + "x" * 120, "c"]


def test_find_build_dirs(tmp_path):
    for name in ("b", "a"):
        write_build(tmp_path / "pkgs", BASE, name=name)
    (tmp_path / "pkgs" / "notes").mkdir()
    found = pkgbuild.find_build_dirs([tmp_path / "pkgs", tmp_path / "pkgs" / "a"])
    assert [p.name for p in found] == ["a", "b"]
    with pytest.raises(SpecError, match="no build.yml"):
        pkgbuild.find_build_dirs([tmp_path / "pkgs" / "notes"])


def test_cli_prints_one_line_per_image(tmp_path, fake_archive, capsys):
    from lkit.cli import main
    d = tool_dir(tmp_path, fake_archive)
    assert main(["pkg", "build", "--store", str(tmp_path / "store"), str(d)]) == 0
    assert main(["pkg", "build", "--store", str(tmp_path / "store"), str(d)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("lkit/tool:1 ") and "built" in lines[0]
    assert "unchanged" in lines[1] and lines[0].split()[1] == lines[1].split()[1]


# -- --update --------------------------------------------------------------------------------------


def test_update_resolves_candidates_and_via_and_rewrites_the_lock(tmp_path, monkeypatch):
    d = write_build(tmp_path, """image: lkit/k
tag: "1"
packages:
  - {via: linux-image-cloud-amd64, match: "linux-image-*-cloud-amd64"}
  - tool
take: [{paths: [/x]}]
""", lock=f"tool 0.9 sha256:{SHA}\n")
    monkeypatch.setattr(debian, "candidate_versions", lambda names, arch=None: {
        "linux-image-cloud-amd64": "6.1.9-1", "linux-image-6.1.0-9-cloud-amd64": "6.1.9-1", "tool": "1.0"})
    monkeypatch.setattr(debian, "depends", lambda name, version, arch=None: ["initramfs-tools", "linux-image-6.1.0-9-cloud-amd64"])
    fetched = []
    monkeypatch.setattr(debian, "download", lambda n, v, s, arch=None: (fetched.append((n, v, s)), (tmp_path, "b" * 64))[1])
    spec = pkgbuild.load_build(d)
    locked = pkgbuild.resolve_packages(spec, pkgbuild.read_lock(d / "build.lock"))
    assert locked == [pkgbuild.Locked("linux-image-6.1.0-9-cloud-amd64", "6.1.9-1", "b" * 64,
                                      via="linux-image-cloud-amd64"),
                      pkgbuild.Locked("tool", "1.0", "b" * 64)]
    assert fetched == [("linux-image-6.1.0-9-cloud-amd64", "6.1.9-1", None), ("tool", "1.0", None)]
    # the re-resolved lock matches build.yml again
    assert pkgbuild.match_lock(spec, locked, d / "build.lock") == locked


def test_update_with_ambiguous_via_is_an_error(tmp_path, monkeypatch):
    d = write_build(tmp_path, """image: lkit/k
tag: "1"
packages:
  - {via: meta, match: "lib*"}
take: [{paths: [/x]}]
""")
    monkeypatch.setattr(debian, "candidate_versions", lambda names, arch=None: {n: "1" for n in names})
    monkeypatch.setattr(debian, "depends", lambda name, version, arch=None: ["liba", "libb"])
    with pytest.raises(SpecError, match="need one") as exc:
        pkgbuild.resolve_packages(pkgbuild.load_build(d), [])
    assert exc.value.where.endswith("build.yml:4")


def test_unused_package_is_reported(tmp_path, fake_archive):
    text = TOOL_BUILD.replace("[libc6, libseccomp2, tool]", "[libc6, libseccomp2, tool, extra]")
    extra = fakes.make_deb(tmp_path / "debs" / "extra.deb", {"usr/share/extra": b"x"})
    fake_archive["paths"]["extra"] = extra
    lock = fake_archive["lock"] + f"extra 1 sha256:{debian.sha256_file(extra)}\n"
    d = write_build(tmp_path, text.replace("files: files/\n", ""), lock=lock)
    messages: list[str] = []
    pkgbuild.build(d, Store(tmp_path / "store"), log=messages.append)
    assert any("extra" in m and "nothing was taken" in m for m in messages)
