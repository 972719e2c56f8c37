"""lkit's pytest plugin (entry point `pytest11: lkit`).

`pytest suites/` collects every spec in the suite folders, builds each once, boots each output format
once, runs the built-in checks and the suite's own test modules on that VM, and writes reports.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from lkit.errors import InfraError
from lkit.pytest_plugin import fixtures
from lkit.pytest_plugin import shard as shard_mod
from lkit.pytest_plugin.fixtures import hosts, lkit_group, lkit_image, lkit_tpm, lkit_vm, machine, machines  # noqa: F401  (fixtures)
from lkit.pytest_plugin.variants import arch_of
from lkit.pytest_plugin.collect import CheckItem, SpecFile, is_spec_file, marker_name, variant_markers, xdist_group_name
from lkit.pytest_plugin.options import Settings, add_options
from lkit.pytest_plugin.results import RESULTS, Results
from lkit.pytest_plugin.state import RUN, Group, RunState
from lkit.report.baseline import load_reference

SHUTDOWN_CHECK = "shutdown"


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def _new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lkit: an lkit built-in check of a spec in a suite")
    from lkit.build.outputs.base import FORMAT_NAMES

    for fmt in FORMAT_NAMES:
        config.addinivalue_line("markers", f"{marker_name('lkit_', fmt)}: lkit items of output format {fmt}")
    from lkit.pytest_plugin.variants import NAMES as FIRMWARES

    for firmware in FIRMWARES:
        config.addinivalue_line("markers", f"{marker_name('lkit_', firmware)}: lkit items of firmware variant {firmware}")
    from lkit.core.arch import DEFAULT as DEFAULT_ARCH, NAMES as ARCHES
    for arch in ARCHES:
        if arch != DEFAULT_ARCH.name:
            config.addinivalue_line("markers", f"{marker_name('lkit_', arch)}: lkit items of architecture {arch}")
    config.addinivalue_line("markers", "lkit_spec(name): the spec file a suite test module checks (default: test_NAME.py -> NAME.yml)")
    settings = Settings.from_config(config)
    workerinput = getattr(config, "workerinput", None)
    run_id = workerinput["lkit_run_id"] if workerinput and "lkit_run_id" in workerinput else _new_run_id()
    run = RunState(settings, run_id)
    config.stash[RUN] = run
    config.stash[RESULTS] = Results(run, worker=workerinput["workerid"] if workerinput else None)
    # Registered last so that our `host` (a testinfra Host over the guest's console) wins over
    # pytest-testinfra's own, for suite modules; elsewhere ours falls back to testinfra's.
    config.pluginmanager.register(GroupOrder(), "lkit-group-order")
    from lkit.pytest_plugin import host_fixture

    if not config.pluginmanager.is_registered(host_fixture):
        config.pluginmanager.register(host_fixture, "lkit-host-fixture")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist controller -> workers: one run id, so every worker writes into the same run folder."""
    node.workerinput["lkit_run_id"] = node.config.stash[RUN].run_id


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    run: RunState = parent.config.stash[RUN]
    if is_spec_file(file_path, run.settings.suites) and not run.is_machine_spec(file_path):
        return SpecFile.from_parent(parent, path=file_path)
    return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    fixtures.parametrize_formats(metafunc)


def _group_key(item: pytest.Item) -> tuple[str, str] | None:
    """The items that run together on one VM (on one network of VMs, for a multi-machine suite)."""
    if isinstance(item, CheckItem):
        return (str(item.suite.path), item.format)
    suite = fixtures.suite_of(item)
    callspec = getattr(item, "callspec", None)
    if suite is not None and callspec is not None and "lkit_format" in callspec.params:
        return (str(suite.path), callspec.params["lkit_format"])
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark suite tests with their (spec, format) group before xdist reads the groups (`--dist loadgroup`
    sends a group to one worker: the checks and the suite's tests must share that worker's VM)."""
    run: RunState = config.stash[RUN]
    for item in items:
        key = _group_key(item)
        if key is not None and not isinstance(item, CheckItem):
            item.add_marker(pytest.mark.xdist_group(xdist_group_name(run.suite(Path(key[0])), key[1])))
            for marker in variant_markers(key[1]):
                item.add_marker(marker)
    if run.settings.shard is not None:
        _select_shard(run, config, items)


def _xdist_group(item: pytest.Item) -> str:
    mark = item.get_closest_marker("xdist_group")
    return str(mark.args[0]) if mark and mark.args else shard_mod.NO_GROUP


def _select_shard(run: RunState, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the items of this shard's groups (every machine computes the same partition)."""
    shard = run.settings.shard
    assert shard is not None
    measured = shard_mod.measured_seconds(load_reference(run.settings.baseline)) if run.settings.baseline else {}
    weights: dict[str, shard_mod.Weighed] = {}
    for item in items:
        name = _xdist_group(item)
        if name in weights:
            continue
        if name in measured:
            weights[name] = shard_mod.Weighed(name, measured[name], "baseline")
            continue
        key = _group_key(item)
        refs = run.suite(Path(key[0])).spec.images() if key else []
        size = shard_mod.image_bytes(refs, run.store, arch_of(key[1]).platform) if key else 0
        seconds = shard_mod.estimate_seconds(key[1], size) if key else 1.0
        weights[name] = shard_mod.Weighed(name, seconds, "estimate")
    # ordinary tests outside any spec run once, in shard 1, whatever they weigh
    dealt = shard_mod.partition([w for w in weights.values() if w.group != shard_mod.NO_GROUP], shard.count)
    mine = {w.group for w in dealt[shard.index - 1]}
    if shard.index == 1:
        mine.add(shard_mod.NO_GROUP)
    keep = [item for item in items if _xdist_group(item) in mine]
    dropped = [item for item in items if _xdist_group(item) not in mine]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
    run.shard_plan = dealt[shard.index - 1]
    for item in keep:
        key = _group_key(item)
        if key is not None:
            suite = run.suite(Path(key[0]))
            chosen = run.shard_formats.setdefault(suite.path, [])
            if key[1] not in chosen:
                chosen.append(key[1])
    for suite_path, chosen in run.shard_formats.items():   # in the spec's own order
        chosen.sort(key=run.suite(suite_path).formats.index)


def _record_key(item: pytest.Item) -> tuple[str, str] | None:
    """Where an item's result goes in the reports: its (spec, format); a machine's checks under
    `spec::machine`, a multi-machine suite's own tests under the suite's spec."""
    if isinstance(item, CheckItem) and item.machine is not None:
        return item.group.record_key
    return _group_key(item)


class GroupOrder:
    """Registered as a plugin of its own: a module can implement a hook only once, and ordering must
    come last (after pytest's own fixture-based reordering) while marking must come first."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        _reorder(items)


def _reorder(items: list[pytest.Item]) -> None:
    """Keep each (spec, format) together: checks, then the suite's tests on the same VM, then shutdown."""
    first_seen: dict[tuple[str, str], int] = {}
    for index, item in enumerate(items):
        key = _group_key(item)
        if key is not None:
            first_seen.setdefault(key, index)

    def order(pair: tuple[int, pytest.Item]) -> tuple[int, int, int]:
        index, item = pair
        key = _group_key(item)
        if key is None:
            return (index, 0, index)
        phase = 2 if isinstance(item, CheckItem) and item.check == SHUTDOWN_CHECK else (0 if isinstance(item, CheckItem) else 1)
        return (first_seen[key], phase, index)

    items[:] = [item for _, item in sorted(enumerate(items), key=order)]


def _group_of(item: pytest.Item) -> Group | None:
    """The (spec, format) group an item belongs to (created on first use), else None."""
    if isinstance(item, CheckItem):
        return item.group
    key = _group_key(item)
    if key is None:
        return None
    run: RunState = item.config.stash[RUN]
    return run.group(run.suite(Path(key[0])), key[1])


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """A group's time window: from its first item's start to its last item's end (VM release included)."""
    group = _group_of(item)
    if group is not None:
        group.clock.open()
    yield
    if group is not None and (nextitem is None or _group_key(nextitem) != _group_key(item)):
        group.clock.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """Each built-in check is a phase of its own; the suite's test bodies are `tests`."""
    group = _group_of(item)
    if group is None:
        yield
        return
    with group.clock.span(f"check.{item.check}" if isinstance(item, CheckItem) else "tests"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    key = _record_key(item)
    if key is None:
        yield
        return
    group = _group_of(item)
    assert group is not None
    with group.clock.span("report"):
        outcome = yield
        report = outcome.get_result()
        results: Results = item.config.stash[RESULTS]
        results.record(item, report, key, infra=call.excinfo is not None and isinstance(call.excinfo.value, InfraError))


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """When a group's last item ran, release its VM at once (one VM at a time on a small machine)."""
    key = _group_key(item)
    if key is None:
        return
    if nextitem is None or _group_key(nextitem) != key:
        run: RunState = item.config.stash[RUN]
        for group in list(run.groups.values()):
            if group.order_key == key and group.network_group is group:
                keep = run.settings.keep_vm
                if keep and group.vm is not None and item.config.stash[RESULTS].failed(key):
                    fixtures.keep_for_debugging(group, keep)
                group.close()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Say what this shard runs, before it runs (serial runs and xdist workers' collection alike)."""
    run: RunState | None = session.config.stash.get(RUN, None)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if run is None or reporter is None:
        return
    for line in run.notes:      # what collection left out and why (firmware variants of BIOS formats...)
        reporter.write_line(line)
    if run.settings.shard is None:
        return
    for line in shard_mod.plan_lines(run.settings.shard, run.shard_plan):
        reporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    run: RunState | None = config.stash.get(RUN, None)
    if run is None:
        return
    if run.settings.shard is not None and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        # more shards than groups: an empty shard is a pass, not pytest's "no tests" (exit 5)
        session.exitstatus = exitstatus = pytest.ExitCode.OK
        config.stash[RESULTS].lines.append(f"lkit shard {run.settings.shard}: no groups in this shard, nothing to run")
    try:
        try:
            run.close()
        except KeyboardInterrupt:
            # Ctrl-C again while the VMs were being released: kill what is left, report as interrupted.
            run.kill()
            exitstatus = session.exitstatus = pytest.ExitCode.INTERRUPTED
    finally:
        results: Results = config.stash[RESULTS]
        try:
            status = results.finish(int(exitstatus))
        except KeyboardInterrupt:
            status = pytest.ExitCode.INTERRUPTED   # reports are written atomically: none is half-written
            results.lines = ["lkit: interrupted before the reports were written"]
        if status is not None and status != exitstatus:
            session.exitstatus = status


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    results: Results | None = config.stash.get(RESULTS, None)
    if results is not None:
        for line in results.summary_lines():
            terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    run: RunState | None = config.stash.get(RUN, None)
    if run is not None:
        run.close()

