"""OVMF chosen through QEMU firmware descriptors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lkit.errors import InfraError
from lkit.machine.firmware import choose, find_ovmf


def desc(code: Path, vars_: Path, features=(), machines=("pc-q35-*",), arch="x86_64", device="flash",
         interfaces=("uefi",)) -> dict:
    return {"interface-types": list(interfaces),
            "mapping": {"device": device, "executable": {"filename": str(code), "format": "raw"},
                        "nvram-template": {"filename": str(vars_), "format": "raw"}},
            "targets": [{"architecture": arch, "machines": list(machines)}],
            "features": list(features)}


def test_choose_rules(tmp_path: Path) -> None:
    c, v = tmp_path / "c", tmp_path / "v"
    assert choose(desc(c, v))
    assert not choose(desc(c, v, features=["secure-boot", "requires-smm"]))
    assert not choose(desc(c, v, features=["enrolled-keys"]))
    assert not choose(desc(c, v, machines=["pc-i440fx-*"]))
    assert not choose(desc(c, v, arch="aarch64"))
    assert not choose(desc(c, v, device="memory"))
    assert not choose(desc(c, v, interfaces=["bios"]))


def test_picks_the_non_secure_one_and_copies_vars(tmp_path: Path) -> None:
    fwdir = tmp_path / "fw"
    fwdir.mkdir()
    for n in ("c1", "v1", "c2", "v2"):
        (tmp_path / n).write_bytes(n.encode() * 10)
    (fwdir / "40-secure.json").write_text(json.dumps(desc(tmp_path / "c1", tmp_path / "v1",
                                                          features=["secure-boot", "enrolled-keys"])))
    (fwdir / "60-plain.json").write_text(json.dumps(desc(tmp_path / "c2", tmp_path / "v2")))
    (fwdir / "10-broken.json").write_text("{not json")
    fw = find_ovmf([fwdir])
    assert fw.code == tmp_path / "c2" and fw.descriptor.name == "60-plain.json"
    vm = tmp_path / "vm"
    vm.mkdir()
    copy = fw.copy_vars(vm)
    assert copy.parent == vm and copy.read_bytes() == (tmp_path / "v2").read_bytes()
    copy.write_bytes(b"changed")
    assert (tmp_path / "v2").read_bytes() == b"v2" * 10   # the template is never touched


def test_missing_files_and_no_descriptor_say_install_ovmf(tmp_path: Path) -> None:
    fwdir = tmp_path / "fw"
    fwdir.mkdir()
    (fwdir / "60.json").write_text(json.dumps(desc(tmp_path / "gone", tmp_path / "gone2")))
    with pytest.raises(InfraError) as err:
        find_ovmf([fwdir])
    assert "ovmf" in str(err.value) and "missing files" in str(err.value)
    with pytest.raises(InfraError, match="apt-get install ovmf"):
        find_ovmf([tmp_path / "nothing"])


def test_this_host_has_debian_ovmf() -> None:
    fw = find_ovmf()
    assert fw.code.name == "OVMF_CODE_4M.fd" and fw.vars_template.name == "OVMF_VARS_4M.fd"
