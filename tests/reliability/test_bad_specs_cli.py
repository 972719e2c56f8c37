"""Bad specs through the real `lkit build` command: non-zero exit, one message naming file:line, no traceback.

The corpus tests/data/specs/bad/ (63+ files, `# expect:` / `# line:` headers) is run in a subprocess
per file; tests/data/hostile/ adds inputs that need the store or the file system (a missing image with
--offline, files sources outside the allowed folders); the rest (dangling path, directory, huge,
binary, empty) is generated here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from relkit import REPO, CliResult, assert_clean_error, lkit_env, run_lkit

BAD = sorted((REPO / "tests" / "data" / "specs" / "bad").glob("*.yml"))
HOSTILE = REPO / "tests" / "data" / "hostile"
HOSTILE_SPECS = sorted(p for p in HOSTILE.glob("*.yml") if p.name != "source_symlink_out.yml")


def header(path: Path) -> tuple[str, int]:
    head = path.read_text(encoding="utf-8", errors="replace").splitlines()[:2]
    expect = re.fullmatch(r"# expect: (.*)", head[0])
    line = re.fullmatch(r"# line: (\d+)", head[1])
    assert expect and line, f"{path.name} lacks its '# expect:' / '# line:' header"
    return expect.group(1), int(line.group(1))


@pytest.fixture(scope="module")
def corpus_results(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, CliResult]:
    """Every corpus file through `lkit build` (two at a time: 2 cores), into a scratch folder."""
    out = tmp_path_factory.mktemp("bad-out")
    env = lkit_env(LKIT_STORE=out / "store", LKIT_BUILD_CACHE=out / "cache")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {p: pool.submit(run_lkit, ["build", "--offline", "--dir", out / p.stem, p], env=env)
                   for p in BAD}
        return {p: f.result() for p, f in futures.items()}


def test_corpus_is_there():
    assert len(BAD) >= 63


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_corpus_file_refused_by_cli(path: Path, corpus_results: dict[Path, CliResult], case) -> None:
    case("bad spec", f"corpus {path.name}")
    expected, line = header(path)
    res = corpus_results[path]
    text = assert_clean_error(res, expected)
    assert text.startswith(f"lkit: error: {path}:{line}: "), text
    assert res.rc == 2, f"a spec error is a usage error (exit 2), got {res.rc}"
    assert not list(Path(res.argv[-2]).glob("*-initrd.img")), "a refused spec must write no output"


@pytest.mark.parametrize("path", HOSTILE_SPECS, ids=lambda p: p.stem)
def test_hostile_spec_refused_by_cli(path: Path, fixture_env: dict[str, str], tmp_path: Path, case) -> None:
    case("bad spec", f"hostile {path.name}")
    expected, line = header(path)
    res = run_lkit(["build", "--offline", "--dir", tmp_path / "out", path], env=fixture_env)
    text = assert_clean_error(res, expected)
    assert text.startswith(f"lkit: error: {path}:{line}"), text
    assert not list(tmp_path.glob("out/*-initrd.img")), "a refused spec must write no output"


def test_source_symlink_pointing_outside(fixture_env: dict[str, str], tmp_path: Path, case) -> None:
    case("bad spec", "files source: a symlink beside the spec pointing at /etc/shadow")
    spec = tmp_path / "spec" / "source_symlink_out.yml"
    spec.parent.mkdir()
    shutil.copy(HOSTILE / spec.name, spec)
    (spec.parent / "link-to-shadow").symlink_to("/etc/shadow")
    expected, line = header(spec)
    res = run_lkit(["build", "--offline", "--dir", tmp_path / "out", spec], env=fixture_env)
    text = assert_clean_error(res, expected, "/etc/shadow")
    assert text.startswith(f"lkit: error: {spec}:{line}"), text


def test_dangling_path(tmp_path: Path, case) -> None:
    case("bad spec", "spec path that does not exist (dangling symlink)")
    link = tmp_path / "spec.yml"
    link.symlink_to(tmp_path / "gone.yml")
    res = run_lkit(["build", "--dir", tmp_path / "out", link], env=lkit_env(LKIT_STORE=tmp_path / "s"))
    assert_clean_error(res, str(link), "no such file")


def test_directory_as_spec(tmp_path: Path, case) -> None:
    case("bad spec", "a directory given as the spec (unreadable as a file)")
    res = run_lkit(["build", "--dir", tmp_path / "out", tmp_path], env=lkit_env(LKIT_STORE=tmp_path / "s"))
    assert_clean_error(res, str(tmp_path), "directory")


def test_huge_file(tmp_path: Path, case) -> None:
    case("bad spec", "a 9 MiB spec file")
    big = tmp_path / "big.yml"
    with open(big, "wb") as f:
        f.write(b"# padding padding padding padding padding padding padding padding\n" * (9 * 1024 * 1024 // 66 + 1))
    res = run_lkit(["build", "--dir", tmp_path / "out", big], env=lkit_env(LKIT_STORE=tmp_path / "s"))
    assert_clean_error(res, str(big), "larger than")
    assert res.seconds < 30


def test_binary_garbage(tmp_path: Path, case) -> None:
    case("bad spec", "binary garbage as the spec")
    garbage = tmp_path / "garbage.yml"
    garbage.write_bytes(bytes(range(256)) * 40 + b"\xff\xfe\x00kernel:\n")
    res = run_lkit(["build", "--dir", tmp_path / "out", garbage], env=lkit_env(LKIT_STORE=tmp_path / "s"))
    text = assert_clean_error(res, str(garbage))
    assert re.search(rf"{re.escape(str(garbage))}:\d+: ", text), text


def test_nul_bytes_in_valid_utf8(tmp_path: Path, case) -> None:
    case("bad spec", "NUL bytes inside an otherwise valid spec")
    spec = tmp_path / "nul.yml"
    spec.write_bytes(b"kernel:\n  image: lkit/kernel:6.1\x00\n  cmdline: x\n")
    res = run_lkit(["build", "--dir", tmp_path / "out", spec], env=lkit_env(LKIT_STORE=tmp_path / "s"))
    assert_clean_error(res, str(spec))


def test_empty_file(tmp_path: Path, case) -> None:
    case("bad spec", "an empty spec file")
    empty = tmp_path / "empty.yml"
    empty.write_bytes(b"")
    res = run_lkit(["build", "--dir", tmp_path / "out", empty], env=lkit_env(LKIT_STORE=tmp_path / "s"))
    assert_clean_error(res, str(empty), "kernel")
    assert not (tmp_path / "out" / "empty-initrd.img").exists()


@pytest.mark.parametrize("name", ["../../escaped", "sub/dir", ".."])
def test_output_name_cannot_leave_dir(name: str, fixture_env: dict[str, str], tmp_path: Path, case) -> None:
    case("bad spec", f"--name {name!r} (output and stamp must stay in --dir)")
    out = tmp_path / "a" / "b" / "out"
    res = run_lkit(["build", "--offline", "--dir", out, "--name", name, REPO / "tests" / "reliability" / "specs" / "base.yml"],
                   env=fixture_env)
    assert_clean_error(res, "not a plain file name")
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == [], f"files written: {written}"


def test_fifo_without_writer_does_not_hang(tmp_path: Path, case) -> None:
    case("bad spec", "a FIFO nobody writes to given as the spec (must not hang)")
    fifo = tmp_path / "spec.yml"
    os.mkfifo(fifo)
    res = run_lkit(["build", "--dir", tmp_path / "out", fifo], env=lkit_env(LKIT_STORE=tmp_path / "s"), timeout=60)
    assert_clean_error(res, str(fifo), "pipe")
    assert res.seconds < 30


def test_reader_closing_the_pipe(tmp_path: Path, case) -> None:
    case("bad spec", "stdout closed early (`lkit build --dry-run ... | head -1`)")
    spec = tmp_path / "big.yml"
    lines = "\n".join(f"  - path: etc/f{i}\n    contents: '{'x' * 1000}'" for i in range(600))
    spec.write_text(f"kernel:\n  image: lkit/kernel:6.1\ninit:\n  - lkit/init:1\nfiles:\n{lines}\n")
    argv = [sys.executable, "-m", "lkit.cli", "build", "--offline", "--dry-run", str(spec)]
    env = lkit_env(LKIT_STORE=tmp_path / "s")
    with subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()  # like `head -1`
        err = proc.stderr.read().decode(errors="replace")
        rc = proc.wait(timeout=60)
    assert first.startswith(b"kernel:")
    assert "Traceback" not in err, err
    assert rc == 141, f"600 kB of output cannot fit a pipe: expected the broken-pipe exit 141, got {rc}"
