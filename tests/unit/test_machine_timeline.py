"""Timeline parsing from console markers."""

from __future__ import annotations

import pytest

from lkit.machine.timeline import Timeline, parse_marker


@pytest.mark.parametrize(("line", "expected"), [
    ("[    0.000000] Linux version 6.1.0-57-cloud-amd64 (debian-kernel@...)", ("kernel", 0.0, "")),
    ("Welcome to LinuxKit", ("banner", None, "")),
    ("lkit: init start uptime=4.99", ("init", 4.99, "")),
    ("lkit: onboot 000-sysctl exit 0 uptime=5.52", ("onboot:000-sysctl", 5.52, "0")),
    ("lkit: onboot dhcpcd exit 1", ("onboot:dhcpcd", None, "1")),
    ("lkit: services started uptime=5.72", ("services", 5.72, "")),
    ("lkit: shell ready uptime=5.77", ("shell", 5.77, "")),
    ("lkit: onshutdown 000-stop exit 0 uptime=9.1", ("onshutdown:000-stop", 9.1, "0")),
    ("lkit: poweroff uptime=9.5", ("poweroff", 9.5, "")),
    ("random: crng init done", None),
])
def test_parse_marker(line: str, expected: tuple | None) -> None:
    assert parse_marker(line) == expected


def test_timeline_records_first_output_markers_and_onboot_exits() -> None:
    tl = Timeline()
    tl.feed("", 0.5)                     # empty lines are not the firmware hand-over
    tl.feed("SeaBIOS (version 1.16)", 0.8)
    tl.feed("[    0.000000] Linux version 6.1", 2.0)
    tl.feed("lkit: init start uptime=3.00", 5.0)
    tl.feed("lkit: onboot a exit 0 uptime=3.50", 5.5)
    tl.feed("lkit: onboot b exit 2 uptime=3.60", 5.6)
    tl.feed("lkit: services started uptime=4.00", 6.1)
    assert [e.name for e in tl.entries] == ["firmware", "kernel", "init", "onboot:a", "onboot:b", "services"]
    assert tl.get("firmware").host == 0.8
    assert tl.onboot_exits() == {"a": 0, "b": 2}
    assert tl.skew() == pytest.approx((6.1 - 5.0) - (4.0 - 3.0))
    assert tl.as_list()[2] == ("init", 5.0, 3.0)


def test_every_marker_of_the_table_is_parsed():
    """One table (timeline.MARKERS) gives the machine its waits and the timeline its phases."""
    from lkit.machine.timeline import MARKERS, parse_marker

    lines = {"kernel": "[    0.000000] Linux version 6.1.0 (gcc)", "banner": "Welcome to LinuxKit",
             "onboot": "lkit: onboot dhcpcd exit 0 uptime=3.5", "onshutdown": "lkit: onshutdown x exit 1"}
    for kind, text in MARKERS.items():
        line = lines.get(kind, f"{text} uptime=1.25")
        parsed = parse_marker(line)
        assert parsed is not None and parsed[0].split(":")[0] == kind, (kind, line, parsed)
