"""`lkit run` argument handling (no VM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lkit.cli import make_parser
from lkit.errors import MachineError
from lkit.machine.cli import parse_publish, resolve_files


def test_parser_registers_run() -> None:
    args = make_parser().parse_args(["run", "out/x", "--publish", "8080:80", "--mem", "512", "--cpus", "2",
                                     "--accel", "tcg", "--format", "iso-efi"])
    assert (args.images, args.publish, args.mem, args.cpus, args.accel, args.format) == \
        (["out/x"], ["8080:80"], 512, 2, "tcg", "iso-efi")
    assert callable(args.func)


@pytest.mark.parametrize("bad", ["80", "a:80", "8080:", "0:80", "8080:70000", ":80"])
def test_bad_publish_is_a_clear_error(bad: str) -> None:
    with pytest.raises(MachineError, match="HOST:GUEST"):
        parse_publish([bad])


def test_publish_maps_guest_to_host() -> None:
    assert parse_publish(["8080:80", "2222:22"]) == {80: 8080, 22: 2222}


def test_resolve_files_by_prefix_and_missing(tmp_path: Path) -> None:
    for n in ("lk-kernel", "lk-initrd.img", "lk-cmdline"):
        (tmp_path / n).write_text("")
    assert len(resolve_files([str(tmp_path / "lk")])) == 3
    with pytest.raises(MachineError, match="no such file"):
        resolve_files([str(tmp_path / "nothing")])
