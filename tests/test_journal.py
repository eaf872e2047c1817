"""Tests for p2psync.journal: the fields of a log record and the native protocol's encoding."""

from __future__ import annotations

import logging
import sys

import hypothesis.strategies as st
import pytest
from hypothesis import given

from p2psync import journal
from tests.journal_datagrams import parse_datagram


def _record(message: str, level: int = logging.INFO, **extra: str) -> logging.LogRecord:
    logger = logging.getLogger("p2psync.peers")
    record = logger.makeRecord(
        "p2psync.peers", level, "/src/p2psync/peers.py", 42, message, (), None, "run", extra
    )
    return record


def test_a_plain_record_has_message_priority_identifier_and_code_location() -> None:
    fields = dict(journal.record_fields(_record("hello"), "hello"))
    assert fields == {
        "MESSAGE": "hello",
        "PRIORITY": "6",
        "SYSLOG_IDENTIFIER": "p2psync",
        "CODE_FILE": "/src/p2psync/peers.py",
        "CODE_LINE": "42",
        "CODE_FUNC": "run",
        "P2PSYNC_LOGGER": "p2psync.peers",
    }


def test_extra_gives_peer_name_share_and_the_message_id_of_its_event() -> None:
    extra = journal.log_extra("peer_connected", peer="MFRGG-ZDFMZ-A", peer_name="Küche",
                              share="photos")  # fmt: skip
    fields = dict(journal.record_fields(_record("up", logging.WARNING, **extra), "up"))
    assert fields["P2PSYNC_PEER"] == "MFRGG-ZDFMZ-A"
    assert fields["P2PSYNC_PEER_NAME"] == "Küche"
    assert fields["P2PSYNC_SHARE"] == "photos"
    assert fields["MESSAGE_ID"] == journal.MESSAGE_IDS["peer_connected"]
    assert fields["PRIORITY"] == "4"


def test_message_ids_are_distinct_128_bit_hex() -> None:
    ids = list(journal.MESSAGE_IDS.values())
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_an_unknown_event_kind_is_refused_at_the_log_call() -> None:
    with pytest.raises(ValueError, match="no MESSAGE_ID"):
        journal.log_extra("peer_joined")


def test_missing_extras_are_left_out() -> None:
    assert journal.log_extra(peer="X") == {"p2psync_peer": "X"}


def test_a_value_with_newlines_uses_the_length_form() -> None:
    datagram = journal.encode([("MESSAGE", "two\nlines"), ("PRIORITY", "3")])
    assert datagram == b"MESSAGE\n\x09\x00\x00\x00\x00\x00\x00\x00two\nlines\nPRIORITY=3\n"
    assert parse_datagram(datagram) == [("MESSAGE", "two\nlines"), ("PRIORITY", "3")]


@given(st.lists(st.tuples(st.from_regex(r"[A-Z][A-Z0-9_]{0,20}", fullmatch=True), st.text())))
def test_encoding_round_trips(fields: list[tuple[str, str]]) -> None:
    clean = [(name, value.encode("utf-8", "replace").decode()) for name, value in fields]
    assert parse_datagram(journal.encode(fields)) == clean


def test_a_bad_field_name_is_refused() -> None:
    with pytest.raises(ValueError, match="not a journal field name"):
        journal.encode([("message", "x")])


def test_an_exception_is_part_of_the_message() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = _record("failed")
        record.exc_info = sys.exc_info()
    text = journal.message_text(record)
    assert text.startswith("failed\nTraceback")
    assert text.endswith("RuntimeError: boom")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("8:1234", True), ("8:1235", False), ("9:1234", False), (None, False), ("", False),
     ("junk", False), ("8:", False)],
)  # fmt: skip
def test_journal_stream_must_name_this_very_stream(value: str | None, expected: bool) -> None:
    assert journal.is_journal_stream(value, 8, 1234) is expected
