"""lkit.images.debian: .deb reading, the package file tree, ELF and .modinfo readers, apt errors.

No network: packages are synthesised here (ar + data.tar.xz) and apt is replaced by a script on PATH.
The helpers (make_elf, make_ko, make_deb) are also loaded by test_pkgbuild*.py.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import struct
import tarfile
from pathlib import Path

import pytest

from lkit.errors import ImageError, InfraError
from lkit.images import debian

# -- synthetic ELF files and packages ------------------------------------------------------------


def make_elf(needed: list[str] = (), interp: str | None = None, runpath: str | None = None,
             payload: bytes = b"") -> bytes:
    """A minimal 64-bit ELF shared object/executable: PT_LOAD + PT_INTERP + PT_DYNAMIC."""
    strtab = b"\0"
    offsets = []
    for name in [*needed, *([runpath] if runpath else [])]:
        offsets.append(len(strtab))
        strtab += name.encode() + b"\0"
    phnum = 3 if interp else 2
    pos = 64 + 56 * phnum
    interp_off = pos
    interp_bytes = (interp.encode() + b"\0") if interp else b""
    pos += len(interp_bytes)
    str_off = pos
    pos += len(strtab)
    pos = (pos + 7) & ~7
    dyn_off = pos
    dyn = b"".join(struct.pack("<qQ", 1, off) for off in offsets[:len(needed)])
    if runpath:
        dyn += struct.pack("<qQ", 29, offsets[-1])
    dyn += struct.pack("<qQ", 5, str_off) + struct.pack("<qQ", 0, 0)
    total = dyn_off + len(dyn) + len(payload)
    header = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + b"\0" * 9, 3, 62, 1, 0, 64, 0, 0,
                         64, 56, phnum, 64, 0, 0)
    phdrs = struct.pack("<IIQQQQQQ", 1, 5, 0, 0, 0, total, total, 0x1000)
    if interp:
        phdrs += struct.pack("<IIQQQQQQ", 3, 4, interp_off, interp_off, interp_off, len(interp_bytes),
                             len(interp_bytes), 1)
    phdrs += struct.pack("<IIQQQQQQ", 2, 6, dyn_off, dyn_off, dyn_off, len(dyn), len(dyn), 8)
    body = header + phdrs + interp_bytes + strtab
    body += b"\0" * (dyn_off - len(body))
    return body + dyn + payload


def make_ko(**modinfo: str) -> bytes:
    """A relocatable ELF with a .modinfo section holding key=value strings (depends, alias, ...)."""
    info = b"".join(f"{k}={v}".encode() + b"\0" for k, vs in modinfo.items()
                    for v in (vs if isinstance(vs, list) else [vs]))
    shstr = b"\0.modinfo\0.shstrtab\0"
    info_off = 64
    shstr_off = info_off + len(info)
    shoff = (shstr_off + len(shstr) + 7) & ~7
    header = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + b"\0" * 9, 1, 62, 1, 0, 0, shoff, 0,
                         64, 0, 0, 64, 3, 2)
    body = header + info + shstr
    body += b"\0" * (shoff - len(body))
    sections = struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    sections += struct.pack("<IIQQQQIIQQ", 1, 1, 2, 0, info_off, len(info), 0, 0, 1, 0)
    sections += struct.pack("<IIQQQQIIQQ", 10, 3, 0, 0, shstr_off, len(shstr), 0, 0, 1, 0)
    return body + sections


def make_deb(path: Path, files: dict[str, bytes | str | None], modes: dict[str, int] | None = None,
             compression: str = "xz") -> Path:
    """A .deb (ar: debian-binary, control.tar.gz, data.tar.xz). Values: bytes = file, str = symlink
    target, None = directory."""
    modes = modes or {}
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name in sorted(files):
            value = files[name]
            info = tarfile.TarInfo("./" + name)
            if value is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            elif isinstance(value, str):
                info.type, info.linkname = tarfile.SYMTYPE, value
                tf.addfile(info)
            else:
                info.size, info.mode = len(value), modes.get(name, 0o644)
                tf.addfile(info, io.BytesIO(value))
    raw = data.getvalue()
    member = {"xz": ("data.tar.xz", lzma.compress(raw)), "none": ("data.tar", raw)}[compression]

    def ar(name: str, content: bytes) -> bytes:
        head = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(content):<10}`\n".encode()
        return head + content + (b"\n" if len(content) % 2 else b"")

    empty = io.BytesIO()
    with tarfile.open(fileobj=empty, mode="w:gz"):
        pass
    path.write_bytes(b"!<arch>\n" + ar("debian-binary", b"2.0\n") + ar("control.tar.gz", empty.getvalue())
                     + ar(*member))
    return path


# -- tests ---------------------------------------------------------------------------------------


def test_elf_deps_of_synthetic_binary():
    data = make_elf(["libfoo.so.1", "libc.so.6"], interp="/lib64/ld-linux-x86-64.so.2", runpath="$ORIGIN/../lib")
    deps = debian.elf_deps(data, "x")
    assert deps.interp == "/lib64/ld-linux-x86-64.so.2"
    assert deps.needed == ("libfoo.so.1", "libc.so.6")
    assert deps.runpath == ("$ORIGIN/../lib",)


def test_elf_deps_of_a_real_host_binary():
    data = Path("/bin/ls").read_bytes()
    deps = debian.elf_deps(data, "/bin/ls")
    assert deps.interp and deps.interp.endswith("ld-linux-x86-64.so.2")
    assert "libc.so.6" in deps.needed


def test_elf_deps_rejects_non_elf():
    with pytest.raises(ImageError, match="not a 64-bit"):
        debian.elf_deps(b"#!/bin/sh\n", "script")


def test_modinfo_reads_depends_and_aliases():
    info = debian.modinfo(make_ko(name="virtio_net", depends="virtio,net_failover",
                                  alias=["virtio:d00000001v*", "pci:v1AF4"]), "virtio_net.ko")
    assert info["depends"] == ["virtio,net_failover"]
    assert info["alias"] == ["virtio:d00000001v*", "pci:v1AF4"]


def test_modinfo_rejects_compressed_module():
    with pytest.raises(ImageError, match="compressed"):
        debian.modinfo(b"\x28\xb5\x2f\xfd....", "x.ko.zst")


@pytest.mark.parametrize("compression", ["xz", "none"])
def test_package_fs_reads_files_links_and_dirs(tmp_path, compression):
    deb = make_deb(tmp_path / "p.deb", {
        "usr": None, "usr/bin": None, "usr/bin/tool": b"hello", "usr/bin/alias": "tool",
        "lib": "usr/lib", "usr/lib": None, "usr/lib/libx.so.1": "/usr/lib/libx.so.1.2",
        "usr/lib/libx.so.1.2": b"lib"}, modes={"usr/bin/tool": 0o755}, compression=compression)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    fs = debian.PackageFS.open([("p", deb)], scratch)
    assert fs.read("/usr/bin/alias") == b"hello"
    assert fs.entries["usr/bin/tool"].mode == 0o755
    assert fs.resolve("/lib/libx.so.1") == "usr/lib/libx.so.1.2"
    assert fs.resolve("/lib/libx.so.1", follow_last=False) == "usr/lib/libx.so.1"
    assert fs.walk("/usr/bin") == ["usr/bin", "usr/bin/alias", "usr/bin/tool"]
    assert not fs.exists("/usr/bin/missing")
    # nothing was written outside the scratch directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.deb", "scratch"]


def test_package_fs_later_package_wins_and_symlink_loops_fail(tmp_path):
    a = make_deb(tmp_path / "a.deb", {"etc/x": b"a", "loop1": "loop2", "loop2": "loop1"})
    b = make_deb(tmp_path / "b.deb", {"etc/x": b"b"})
    fs = debian.PackageFS.open([("a", a), ("b", b)], tmp_path)
    assert fs.read("etc/x") == b"b" and fs.entries["etc/x"].package == "b"
    with pytest.raises(ImageError, match="too many levels"):
        fs.resolve("loop1")


def test_not_a_deb(tmp_path):
    bad = tmp_path / "bad.deb"
    bad.write_bytes(b"PK\x03\x04 zip")
    with pytest.raises(ImageError, match="not a Debian package"):
        debian.PackageFS.open([("bad", bad)], tmp_path)


def test_missing_apt_lists_says_run_apt_get_update(tmp_path):
    with pytest.raises(InfraError) as exc:
        debian.check_apt_lists(tmp_path)
    assert "apt-get update" in str(exc.value)


def _fake_apt(tmp_path: Path, monkeypatch, script: str) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "apt-get"
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setattr(debian, "check_apt_lists", lambda lists=None: None)


def test_download_of_a_vanished_version_says_update(tmp_path, monkeypatch):
    _fake_apt(tmp_path, monkeypatch, "echo \"E: Version '9.9' for 'runc' was not found\" >&2; exit 100\n")
    with pytest.raises(ImageError) as exc:
        debian.download("runc", "9.9", "0" * 64, cache=tmp_path / "debs")
    assert "runc=9.9" in exc.value.message and "--update" in (exc.value.hint or "")


def test_download_runs_apt_in_the_cache_and_checks_sha(tmp_path, monkeypatch):
    # the fake apt-get writes a .deb into its working directory, as the real one does
    _fake_apt(tmp_path, monkeypatch, 'printf "payload" > "${4%%=*}_1.0_amd64.deb"\n')
    cache = tmp_path / "debs"
    good = hashlib.sha256(b"payload").hexdigest()
    path, sha = debian.download("tool", "1:1.0", good, cache=cache)
    assert path.parent == cache and path.read_bytes() == b"payload" and sha == good
    assert [p.name for p in cache.iterdir()] == [path.name]  # no leftover download directory
    # cached now: a wrong lock checksum is refused and the bad file dropped
    with pytest.raises(ImageError, match="does not match"):
        debian.download("tool", "1:1.0", "f" * 64, cache=cache)
    assert not path.exists()


# -- data.tar.zst: the zstd child never outlives an error ----------------------------------------


@pytest.fixture()
def zstd_children(monkeypatch):
    """Every zstd process _decompress_member starts, to check it was reaped."""
    import subprocess
    started: list[subprocess.Popen] = []
    real = subprocess.Popen

    def popen(*args, **kwargs):
        proc = real(*args, **kwargs)
        started.append(proc)
        return proc

    monkeypatch.setattr(debian.subprocess, "Popen", popen)
    return started


def _zstd(data: bytes) -> bytes:
    import subprocess
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout


def test_zstd_member_round_trip(tmp_path, zstd_children):
    payload = os.urandom(1000) * 50
    packed = _zstd(payload)
    out = tmp_path / "out.tar"
    with open(out, "wb") as dest:
        debian._decompress_member(io.BytesIO(packed), "data.tar.zst", len(packed), dest, "p.deb")
    assert out.read_bytes() == payload
    assert zstd_children and all(p.returncode == 0 for p in zstd_children)


def test_truncated_zstd_member_kills_and_reaps_zstd(tmp_path, zstd_children):
    packed = _zstd(os.urandom(200_000))
    with open(tmp_path / "out.tar", "wb") as dest, pytest.raises(ImageError, match="truncated"):
        debian._decompress_member(io.BytesIO(packed[:1000]), "data.tar.zst", len(packed), dest, "p.deb")
    assert zstd_children and all(p.returncode is not None for p in zstd_children)


def test_corrupt_zstd_member_is_an_image_error(tmp_path, zstd_children):
    junk = os.urandom(300_000)
    with open(tmp_path / "out.tar", "wb") as dest, pytest.raises(ImageError, match="cannot decompress"):
        debian._decompress_member(io.BytesIO(junk), "data.tar.zst", len(junk), dest, "p.deb")
    assert zstd_children and all(p.returncode is not None for p in zstd_children)
