"""Every file in tests/data/specs/bad/ is refused with one clear line naming file:line and field.

Each bad file starts with `# expect: <text in the message>` and `# line: <N>`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lkit.build.ociconfig import ImageInfo, generate_all
from lkit.errors import SpecError
from lkit.spec import load_spec

DATA = Path(__file__).resolve().parents[1] / "data" / "specs"
BAD = sorted((DATA / "bad").glob("*.yml"))
GOOD = sorted((DATA / "good").glob("*.yml"))


def expectations(path: Path) -> tuple[str, int]:
    head = path.read_text(encoding="utf-8", errors="replace").splitlines()[:2]
    expect = re.fullmatch(r"# expect: (.*)", head[0])
    line = re.fullmatch(r"# line: (\d+)", head[1])
    assert expect and line, f"{path.name} lacks its '# expect:' / '# line:' header"
    return expect.group(1), int(line.group(1))


def test_corpus_is_big_enough():
    assert len(BAD) >= 50
    assert GOOD


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_spec_is_refused_clearly(path: Path):
    expected, line = expectations(path)
    with pytest.raises(SpecError) as info:
        load_spec([path])
    error = info.value
    assert error.where == f"{path}:{line}", str(error)
    assert expected in error.message, str(error)
    assert "\n" not in error.message, "the message itself must be one line"
    assert "Traceback" not in str(error)
    first = str(error).splitlines()[0]
    assert first.startswith(f"{path}:{line}: ")


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.stem)
def test_good_spec_loads(path: Path):
    spec = load_spec([path])
    assert spec.name == path.stem
    assert spec.images()
    images = {ref: ImageInfo(ref, {"Cmd": ["/bin/true"]}) for ref in spec.images()}
    bundles = generate_all(spec, images)
    assert len(bundles) == len(spec.entries())
    assert all(b.config["process"]["args"] for b in bundles)


def test_unknown_key_hint_lists_allowed_keys():
    with pytest.raises(SpecError) as info:
        load_spec([DATA / "bad" / "unknown_service_key.yml"])
    assert "capabilities" in info.value.hint and "oomScoreAdj" in info.value.hint


def test_bad_capability_hint_lists_names_and_guess():
    with pytest.raises(SpecError) as info:
        load_spec([DATA / "bad" / "bad_capability.yml"])
    hint = info.value.hint
    assert "did you mean CAP_NET_ADMIN" in hint
    assert "CAP_CHECKPOINT_RESTORE" in hint and "all" in hint and "none" in hint


def test_huge_file_is_refused(tmp_path: Path):
    big = tmp_path / "big.yml"
    with open(big, "wb") as handle:
        handle.write(b"# padding\n" * (900 * 1024))
    with pytest.raises(SpecError, match="larger than 8 MiB"):
        load_spec([big])


def test_missing_file_is_a_spec_error(tmp_path: Path):
    with pytest.raises(SpecError, match="no such file"):
        load_spec([tmp_path / "nope.yml"])


def test_bad_utf8_names_line(tmp_path: Path):
    path = tmp_path / "latin1.yml"
    path.write_bytes(b"services:\n  - name: caf\xe9\n")
    with pytest.raises(SpecError) as info:
        load_spec([path])
    assert info.value.where == f"{path}:2"


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(SpecError) as info:
        load_spec([DATA / "bad" / "unknown_top_key.yml"])
    assert info.value.hint.startswith("did you mean 'services'?")
