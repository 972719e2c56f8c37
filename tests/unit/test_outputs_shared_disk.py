"""raw-X and qcow2-X asked together: the disk is made once and both outputs come from it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lkit.build.outputs import _qcow2, qcow2_bios, qcow2_efi, raw_bios, raw_efi
from lkit.build.outputs.base import BootFiles


def _files(tmp_path: Path) -> BootFiles:
    work = tmp_path / "work"
    work.mkdir()
    return BootFiles(name="x", kernel=tmp_path / "k", initrd=tmp_path / "i", cmdline="",
                     rootfs_tar=lambda: tmp_path / "t", workdir=work)


@pytest.mark.parametrize("raw, qcow2", [(raw_bios, qcow2_bios), (raw_efi, qcow2_efi)])
@pytest.mark.parametrize("raw_first", [True, False])
def test_disk_made_once_for_raw_and_qcow2(tmp_path: Path, monkeypatch, raw, qcow2, raw_first: bool) -> None:
    made: list[Path] = []

    def fake_build_disk(files: BootFiles, out: Path) -> Path:
        made.append(out)
        out.write_bytes(b"disk" * 1000)
        return out

    def fake_to_qcow2(src: Path, dest: Path) -> Path:
        shutil.copyfile(src, dest)
        return dest

    monkeypatch.setattr(raw, "build_disk", fake_build_disk)
    monkeypatch.setattr(_qcow2, "to_qcow2", fake_to_qcow2)
    files, outdir = _files(tmp_path), tmp_path / "out"
    order = [raw, qcow2] if raw_first else [qcow2, raw]
    written = [p for fmt in order for p in fmt.FORMAT.write(files, outdir)]
    assert len(made) == 1
    assert sorted(p.name for p in written) == sorted(raw.filenames("x") + qcow2.filenames("x"))
    assert all(p.read_bytes() == b"disk" * 1000 and p.stat().st_mode & 0o777 == 0o644 for p in written)
    assert not list(files.workdir.glob("*.partial"))
