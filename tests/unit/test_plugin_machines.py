"""Multi-machine suites without a VM: the `machines:` schema, collection, ids and xdist groups."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lkit.errors import LkitError
from lkit.pytest_plugin.expectations import load_expectations

pytest_plugins = ["pytester"]
WEBNET = Path(__file__).resolve().parents[2] / "suites" / "webnet"


def _load(tmp_path: Path, text: str):
    (tmp_path / "net.yml").write_text("kernel: {image: lkit/kernel:6.1}\n")
    (tmp_path / "other.yml").write_text("kernel: {image: lkit/kernel:6.1}\n")
    path = tmp_path / "net.test.yml"
    path.write_text(text)
    return load_expectations(path, own_spec=tmp_path / "net.yml")


def test_machines_inherit_the_suite_defaults_and_override_them(tmp_path: Path) -> None:
    exp = _load(tmp_path, "memory: 300\nboot: {timeout: 99}\nnetwork: {subnet: 10.9.0.0/24, host: false}\n"
                          "machines:\n  a: {address: 10.9.0.1}\n  b: {spec: other.yml, memory: 200, format: iso-bios}\n")
    a, b = exp.machines["a"], exp.machines["b"]
    assert a.spec == (tmp_path / "net.yml").resolve() and b.spec == (tmp_path / "other.yml").resolve()
    assert (a.expectations.memory, b.expectations.memory) == (300, 200)
    assert a.expectations.boot_timeout == b.expectations.boot_timeout == 99
    assert (a.address, b.address, a.format, b.format) == ("10.9.0.1", None, None, "iso-bios")
    assert exp.network is not None and not exp.network.host


@pytest.mark.parametrize(("text", "message", "line"), [
    ("machines:\n  Server: {}\n", "not a valid machine name", 2),
    ("machines:\n  a: {spec: nope.yml}\n", "no spec file 'nope.yml'", 2),
    ("machines:\n  a: {spec: ../../etc.yml}\n", "outside the suite's folder", 2),
    ("machines:\n  a: {spec: net.test.yml}\n", "not a LinuxKit spec", 2),
    ("machines:\n  a: {format: floppy}\n", "unknown format 'floppy'", 2),
    ("network: {subnet: 10.0.0.0/24}\nmachines:\n  a:\n    address: 10.0.1.1\n", "not in the network's subnet", 4),
    ("network: {subnet: 10.0.0.0/24}\nmachines:\n  a: {address: 10.0.0.255}\n", "broadcast", 3),
    ("machines:\n  a: {address: 10.0.0.1}\n  b: {address: 10.0.0.1}\n", "already the address of machine 'a'", 3),
    ("machines:\n  a: {address: 10.0.0.1/24}\n", "not an IP address", 2),
    ("network: {subnet: banana}\nmachines: {a: {}}\n", "not a subnet", 1),
    ("network: {host: false}\nmachines:\n  a: {ports: [{port: 80}]}\n", "needs the host to reach", 3),
    ("ports: [{port: 80}]\nmachines: {a: {}}\n", "belongs to a machine", 1),
    ("network: {subnet: 10.0.0.0/24}\n", "needs `machines:`", 1),
    ("machines: {}\n", "declares no machine", 1),
    ("machines:\n  a: {colour: red}\n", "colour", 2),
])
def test_mistakes_in_machines_are_clean_errors_with_file_and_line(tmp_path: Path, text: str, message: str,
                                                                  line: int) -> None:
    with pytest.raises(LkitError) as caught:
        _load(tmp_path, text)
    assert message in str(caught.value)
    assert f"net.test.yml:{line}" in str(caught.value)


def _copy_webnet(pytester: pytest.Pytester) -> Path:
    pytester.makeini("[pytest]\n")
    suites = pytester.mkdir("suites")
    shutil.copytree(WEBNET, suites / "webnet", ignore=shutil.ignore_patterns("__pycache__"))
    return suites


def test_ids_name_the_machine_and_one_xdist_group_holds_the_suite(pytester: pytest.Pytester) -> None:
    _copy_webnet(pytester)
    listed = pytester.runpytest_inprocess("suites/", "--collect-only", "-q", "-p", "no:cacheprovider")
    ids = [line for line in listed.outlines if line.startswith("suites/")]
    assert "suites/webnet/webnet.yml::server::kernel+initrd::boots" in ids
    assert "suites/webnet/webnet.yml::client::iso-bios::address" in ids
    assert not any("client.yml" in i for i in ids), "a machine's spec is not a suite of its own"
    # run order: one format's machines and tests together, shutdowns last, then the next format
    formats = ["iso-bios" if "iso-bios" in i else "kernel+initrd" for i in ids]
    assert formats == sorted(formats, key=lambda f: f != "kernel+initrd")
    first = [i for i in ids if "kernel+initrd" in i]
    assert [i.rsplit("::", 1)[-1] for i in first[-2:]] == ["shutdown", "shutdown"]
    assert first.index("suites/webnet/webnet.yml::client::kernel+initrd::boots") < min(
        first.index(i) for i in first if "test_webnet.py" in i)
    items, _ = pytester.inline_genitems("suites/")
    assert {item.get_closest_marker("xdist_group").args[0] for item in items} == {"webnet.yml"}


def test_a_broken_machines_entry_is_a_clean_collection_error(pytester: pytest.Pytester) -> None:
    suites = _copy_webnet(pytester)
    test_yml = suites / "webnet" / "webnet.test.yml"
    test_yml.write_text(test_yml.read_text().replace("spec: client.yml", "spec: klient.yml"))
    result = pytester.runpytest_inprocess("suites/", "--collect-only", "-q", "-p", "no:cacheprovider")
    text = result.stdout.str()
    assert "webnet.test.yml:" in text and "no spec file 'klient.yml'" in text
    assert "Traceback" not in text
