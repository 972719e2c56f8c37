"""Collection of a suite (no VM): ids, the order that lets one VM serve a group, and the xdist groups."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
SUITES = Path(__file__).resolve().parents[2] / "suites"


def test_items_of_a_group_stay_together_and_share_an_xdist_group(pytester: pytest.Pytester):
    pytester.makeini("[pytest]\n")
    suites = pytester.mkdir("suites")
    for name in ("redisos.yml", "redisos.test.yml", "test_redisos.py"):
        shutil.copy(SUITES / name, suites / name)
    listed = pytester.runpytest_inprocess("suites/", "--collect-only", "-q", "-p", "no:cacheprovider")
    ids = [line for line in listed.outlines if line.startswith("suites/")]   # the order they will run in
    checks = ["build", "size_budget", "boots", "boot_time", "onboot", "services_running", "capabilities",
              "files", "ports"]
    # redisos.test.yml asks for amd64 and arm64: each architecture's group runs whole, amd64 first
    assert ids == ([f"suites/redisos.yml::kernel+initrd::{c}" for c in checks]
                   + ["suites/test_redisos.py::test_set_then_get_from_the_host[kernel+initrd]",
                      "suites/test_redisos.py::test_redis_runs_without_capabilities[kernel+initrd]",
                      "suites/redisos.yml::kernel+initrd::shutdown"]
                   + [f"suites/redisos.yml::arm64::kernel+initrd::{c}" for c in checks]
                   + ["suites/test_redisos.py::test_set_then_get_from_the_host[arm64.kernel+initrd]",
                      "suites/test_redisos.py::test_redis_runs_without_capabilities[arm64.kernel+initrd]",
                      "suites/redisos.yml::arm64::kernel+initrd::shutdown"])
    items, _ = pytester.inline_genitems("suites/")
    # Marked before xdist reads the groups: `--dist loadgroup` keeps them on one worker and its VM.
    groups = {item.get_closest_marker("xdist_group").args[0] for item in items}
    assert groups == {"redisos.yml::kernel+initrd", "redisos.yml::arm64.kernel+initrd"}
    assert all(item.get_closest_marker("lkit_kernel_initrd") for item in items)


def test_host_fixture_follows_the_format_parameter(pytester: pytest.Pytester):
    pytester.makeini("[pytest]\n")
    suites = pytester.mkdir("suites")
    for name in ("redisos.yml", "redisos.test.yml", "test_redisos.py"):
        shutil.copy(SUITES / name, suites / name)
    items, _ = pytester.inline_genitems("suites/")
    host_item = next(i for i in items if "test_redis_runs_without_capabilities" in i.nodeid)
    definition = host_item._fixtureinfo.name2fixturedefs["host"][-1]
    # lkit's own `host` (not testinfra's), function-scoped so a new format's VM is never missed.
    assert definition.func.__module__ == "lkit.pytest_plugin.host_fixture"
    assert definition.scope == "function"


def test_an_unexpected_collection_error_is_reported_not_an_internal_error(pytester: pytest.Pytester,
                                                                         monkeypatch: pytest.MonkeyPatch):
    """SpecFile.repr_failure hands non-lkit errors to pytest with pytest's own signature."""
    from lkit.pytest_plugin.state import RunState

    def boom(self: RunState, path: Path) -> None:
        raise RuntimeError("boom while reading the suite")

    monkeypatch.setattr(RunState, "suite", boom)
    pytester.makeini("[pytest]\n")
    suites = pytester.mkdir("suites")
    shutil.copy(SUITES / "redisos.yml", suites / "redisos.yml")
    result = pytester.runpytest_inprocess("suites/", "--collect-only", "-q", "-p", "no:cacheprovider")
    text = result.stdout.str()
    assert "INTERNALERROR" not in text and "boom while reading the suite" in text
    result.assert_outcomes(errors=1)
