"""Shards: parsing K/N, the deterministic LPT partition, weights from a baseline or an estimate."""

from __future__ import annotations

import random

import pytest

from lkit.pytest_plugin.shard import Shard, Weighed, estimate_seconds, measured_seconds, partition, plan_lines
from lkit.report.baseline import Baseline
from lkit.report.model import CheckResult, FormatRun, RunSummary, Timing


@pytest.mark.parametrize(("text", "index", "count"), [("1/1", 1, 1), ("2/3", 2, 3), (" 3 / 3 ", 3, 3)])
def test_parse(text: str, index: int, count: int) -> None:
    assert Shard.parse(text) == Shard(index, count)


@pytest.mark.parametrize("text", ["0/3", "4/3", "2", "a/b", "1/0", "-1/2", ""])
def test_parse_refuses_with_the_source_named(text: str) -> None:
    with pytest.raises(pytest.UsageError, match=r"LKIT_SHARD: .* is not K/N"):
        Shard.parse(text, "LKIT_SHARD")


def _weights(n: int, seed: int = 1) -> list[Weighed]:
    rng = random.Random(seed)
    return [Weighed(f"spec{i}.yml::kernel+initrd", round(rng.uniform(5, 60), 1), "estimate") for i in range(n)]


def test_partition_covers_every_group_once_and_is_order_independent() -> None:
    weights = _weights(17)
    shuffled = list(weights)
    random.Random(7).shuffle(shuffled)
    a, b = partition(weights, 4), partition(shuffled, 4)
    assert a == b
    dealt = [w.group for shard in a for w in shard]
    assert sorted(dealt) == sorted(w.group for w in weights)


def test_partition_is_balanced_longest_first() -> None:
    shards = partition([Weighed("a", 10, "b"), Weighed("b", 9, "b"), Weighed("c", 5, "b"), Weighed("d", 4, "b"),
                        Weighed("e", 1, "b")], 2)
    loads = sorted(sum(w.seconds for w in s) for s in shards)
    assert loads == [14, 15]
    many = partition(_weights(40), 3)
    totals = [sum(w.seconds for w in s) for s in many]
    assert max(totals) / (sum(totals) / 3) < 1.1


def test_ties_are_broken_by_name() -> None:
    shards = partition([Weighed("b", 5, "e"), Weighed("a", 5, "e")], 2)
    assert [[w.group for w in s] for s in shards] == [["a"], ["b"]]


def test_more_shards_than_groups_leaves_empty_shards() -> None:
    shards = partition(_weights(2), 5)
    assert sum(1 for s in shards if s) == 2
    assert plan_lines(Shard(5, 5), shards[4]) == ["lkit shard 5/5: no groups in this shard (there are fewer "
                                                  "groups than shards)"]


def _summary(walls: dict[tuple[str, str], float]) -> RunSummary:
    return RunSummary(run_id="r", started="s", finished="f", runs=[
        FormatRun(spec=spec, format=fmt, checks=[CheckResult("build", "passed")], timing=Timing(wall=wall))
        for (spec, fmt), wall in walls.items()])


def test_measured_seconds_from_a_run_and_from_a_baseline() -> None:
    run = _summary({("suites/linuxkit.yml", "iso-efi"): 40.0, ("suites/minimal.yml", "kernel+initrd"): 4.0})
    assert measured_seconds(run) == {"linuxkit.yml::iso-efi": 40.0, "minimal.yml::kernel+initrd": 4.0}
    other = _summary({("suites/linuxkit.yml", "iso-efi"): 50.0, ("suites/minimal.yml", "kernel+initrd"): 6.0})
    third = _summary({("suites/linuxkit.yml", "iso-efi"): 44.0, ("suites/minimal.yml", "kernel+initrd"): 5.0})
    baseline = Baseline.from_json(Baseline.from_runs([run, other, third]).to_json())   # survives its JSON
    assert measured_seconds(baseline) == {"linuxkit.yml::iso-efi": 44.0, "minimal.yml::kernel+initrd": 5.0}
    assert measured_seconds(None) == {}


def test_estimate_grows_with_efi_and_image_size() -> None:
    assert estimate_seconds("iso-efi", 0) > estimate_seconds("iso-bios", 0)
    assert estimate_seconds("kernel+initrd", 100_000_000) > estimate_seconds("kernel+initrd", 1_000_000)
    assert estimate_seconds("tar", 0) < estimate_seconds("kernel+initrd", 0)   # not booted
