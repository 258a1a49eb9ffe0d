"""Checkpoint sinks: what is appended, how it is read back, which checkpoints verify uses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave.audit.chain import make_checkpoint, parse_public_key, public_key_text, verify_chain
from enclave.audit.sink import (
    FileSink,
    SinkEntry,
    SinkError,
    checkpoint_line,
    parse_sink,
    read_sink,
    to_check,
)

KEY = Ed25519PrivateKey.generate()


def cp(seq: int, digest: str = "ab" * 32):  # type: ignore[no-untyped-def]
    return make_checkpoint(KEY, seq, digest, f"2026-12-05T10:00:{seq % 60:02d}.000000+00:00")


def test_the_file_sink_only_appends(tmp_path: Path) -> None:
    path = tmp_path / "sink.log"
    path.write_text("older line\n")
    sink = FileSink(path)
    sink.ship(checkpoint_line(cp(1), public_key_text(KEY.public_key())))
    sink.ship(checkpoint_line(cp(2), public_key_text(KEY.public_key())))
    sink.close()
    lines = path.read_text().splitlines()
    assert lines[0] == "older line" and len(lines) == 3
    assert [e.checkpoint for e in read_sink(path)] == [cp(1), cp(2)]
    assert [e.line for e in read_sink(path)] == [2, 3]
    # The descriptor is append-only: a seek back cannot overwrite.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, b"x\n")
    os.close(fd)
    assert path.read_text().startswith("older line\n")


def test_syslog_exports_parse_and_damaged_lines_are_errors() -> None:
    line = checkpoint_line(cp(7), "k")
    exported = [f"Dec  5 10:00:00 host enclave-audit: {line}\x00", "Dec  5 10:00:01 host sshd[1]: hello"]
    assert [e.checkpoint for e in parse_sink(exported)] == [cp(7)]
    with pytest.raises(SinkError, match="line 2"):
        parse_sink(["nothing", "enclave-audit-checkpoint {not json"])


def entries(*seqs: int) -> list[SinkEntry]:
    return [SinkEntry(i, cp(s, f"{s:064x}"), "k") for i, s in enumerate(seqs, 1)]


def test_to_check_takes_the_newest_and_the_newest_before_each_step_back() -> None:
    assert to_check([]) == []
    assert [c.seq for c in to_check(entries(1, 2, 3, 5, 8))] == [8]
    # Truncated after 8 back to 4: the server went on from 5; both 8 and the new 6 count.
    assert [c.seq for c in to_check(entries(1, 3, 8, 5, 6))] == [8]
    assert [c.seq for c in to_check(entries(1, 3, 8, 5, 6, 9, 10, 2, 3))] == [10, 8]
    assert len(to_check(entries(*[9, 1] * 50), limit=3)) == 1


def test_the_chain_must_match_every_sink_checkpoint() -> None:
    other = cp(1, "cd" * 32)
    result = verify_chain([], KEY.public_key(), None, [other])
    assert (result.ok, result.first_bad_seq) == (False, 1)
    assert (
        result.problem
        == "log truncated: the sink's checkpoint covers 1 records, found 0: record 1 is missing"
    )
    forged = make_checkpoint(Ed25519PrivateKey.generate(), 1, "cd" * 32, "t")
    assert "invalid signature" in str(verify_chain([], KEY.public_key(), None, [forged]).problem)


def test_public_key_forms() -> None:
    text = public_key_text(KEY.public_key())
    assert text.startswith("ed25519:") and len(text) == 8 + 64
    assert public_key_text(parse_public_key(text)) == text
    assert public_key_text(parse_public_key(text.removeprefix("ed25519:"))) == text
    for bad in (
        "",
        "ed25519:zz",
        "ed25519:" + "00" * 31,
        "-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----",
    ):
        with pytest.raises(ValueError):
            parse_public_key(bad)
