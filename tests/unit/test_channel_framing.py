"""The command channel's framing: requests and the answer parser against adversarial byte streams."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lkit.errors import MachineError
from lkit.machine.channel import LINE_B64_CHARS, encode_request, end_pattern, parse_response


def frame(nonce: str, out: bytes, err: bytes, rc: int, counts: bool = True, wrap: int = 76,
          nl: bytes = b"\n") -> bytes:
    def b64(data: bytes) -> bytes:
        enc = base64.b64encode(data)
        return b"".join(enc[i:i + wrap] + nl for i in range(0, len(enc), wrap))
    tail = f" {len(out)} {len(err)} ok" if counts else ""
    return (f"LKIT-BEGIN {nonce}".encode() + nl + b64(out) + f"LKIT-ERR {nonce}".encode() + nl + b64(err)
            + f"LKIT-END {nonce} {rc}{tail}".encode() + nl)


def test_request_is_one_line_for_short_commands() -> None:
    req = encode_request("nabc", "echo hi", 30)
    assert req == b"nabc 30 " + base64.b64encode(b"echo hi") + b"\n"


def test_long_commands_are_split_into_continuation_lines() -> None:
    cmd = "echo " + "x" * (LINE_B64_CHARS * 2)
    lines = encode_request("n1", cmd, 5).decode().splitlines()
    assert len(lines) == 3
    assert all(line.startswith("n1 + ") for line in lines[:-1])
    assert lines[-1].startswith("n1 5 ")
    payload = "".join(line.split(" ", 2)[2] for line in lines)
    assert base64.b64decode(payload).decode() == cmd


def test_bad_nonce_rejected() -> None:
    with pytest.raises(ValueError):
        encode_request("bad nonce", "true", 1)


def test_parses_exact_bytes_rc_and_stderr() -> None:
    res = parse_response(frame("n1", b"hello\n", b"oops\n", 3), "n1")
    assert res is not None and (res.rc, res.stdout, res.stderr) == (3, "hello\n", "oops\n")


def test_incomplete_answer_is_none() -> None:
    data = frame("n1", b"x" * 500, b"", 0)
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        assert parse_response(data[:cut], "n1") is None


def test_noise_around_and_other_nonces_are_ignored() -> None:
    noise = b"[   1.0] random: crng init done\r\nLKIT-BEGIN other\nLKIT-END other 9\n\x00\xff garbage\n"
    data = noise + frame("old", b"stale", b"", 1) + noise + frame("n2", b"fresh", b"", 0) + noise
    res = parse_response(data, "n2")
    assert res is not None and res.stdout == "fresh" and res.rc == 0


def test_crlf_line_ends_and_answers_without_counts() -> None:
    res = parse_response(frame("n3", b"a\nb", b"", 7, counts=False, nl=b"\r\n"), "n3")
    assert res is not None and res.stdout == "a\nb" and res.rc == 7


def test_output_containing_marker_text_is_data() -> None:
    evil = b"LKIT-END n4 0 0 0 ok\nLKIT-ERR n4\nLKIT-BEGIN n4\n"
    res = parse_response(frame("n4", evil, evil, 5), "n4")
    assert res is not None and res.stdout_bytes == evil and res.stderr_bytes == evil and res.rc == 5


def test_corrupted_payload_is_detected_by_byte_counts() -> None:
    good = frame("n5", b"0123456789" * 20, b"", 0)
    # drop one base64 line (as a lost line on a noisy console would)
    lines = good.split(b"\n")
    bad = b"\n".join(lines[:1] + lines[2:])
    with pytest.raises(MachineError, match="corrupted"):
        parse_response(bad, "n5")


def test_end_pattern_needs_rc_so_an_echoed_request_cannot_end_a_wait() -> None:
    echoed = b"printf 'LKIT-END %s %s' n6 $rc\n"
    assert end_pattern("n6").search(echoed) is None
    assert end_pattern("n6").search(b"LKIT-END n6 0 1 2 ok\n") is not None


@settings(max_examples=200, deadline=None)
@given(out=st.binary(max_size=600), err=st.binary(max_size=200), rc=st.integers(0, 255),
       pre=st.binary(max_size=200), post=st.binary(max_size=200), wrap=st.integers(4, 120).map(lambda w: w * 4 // 4))
def test_any_payload_round_trips_through_noise(out: bytes, err: bytes, rc: int, pre: bytes, post: bytes,
                                               wrap: int) -> None:
    # noise is kept on lines of its own (the agent's port carries nothing else mid-line)
    data = pre + b"\n" + frame("nz", out, err, rc, wrap=wrap) + post
    res = parse_response(data, "nz")
    assert res is not None
    assert (res.stdout_bytes, res.stderr_bytes, res.rc) == (out, err, rc)
