"""Tests for p2psync.journal_handler: records sent to a real unix datagram socket standing in for
journald's, read back and parsed; the stderr fallback; and `setup_logging`'s choice."""

from __future__ import annotations

import array
import fcntl
import io
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2psync import journal
from p2psync.daemon_setup import setup_logging
from p2psync.journal_handler import JournalHandler
from tests.journal_datagrams import parse_datagram


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "journal.socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listening:
        listening.bind(path)
        listening.settimeout(5)
        yield listening, path


def _fallback() -> tuple[logging.Handler, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler, stream


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger("p2psync.test_journal_handler")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def _receive(listening: socket.socket) -> dict[str, str]:
    data, ancillary, _, _ = listening.recvmsg(1 << 20, socket.CMSG_SPACE(4))
    if not data:  # the large form: a sealed memfd
        [(_, _, fd_bytes)] = ancillary
        fd = array.array("i", fd_bytes)[0]
        assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_WRITE  # journald requires it
        with os.fdopen(fd, "rb") as memfd:
            memfd.seek(0)  # journald maps it; the offset is where the sender's write ended
            data = memfd.read()
    return dict(parse_datagram(data))


def test_a_record_arrives_with_its_fields(journald: tuple[socket.socket, str]) -> None:
    listening, path = journald
    fallback, stream = _fallback()
    logger = _logger(JournalHandler(fallback, path))
    extra = journal.log_extra("paired", peer="MFRGG-ZDFMZ-A", peer_name="living room.tv")
    logger.info("paired with %s", "living room.tv", extra=extra)
    fields = _receive(listening)
    assert fields["MESSAGE"] == "paired with living room.tv"
    assert fields["PRIORITY"] == "6"
    assert fields["SYSLOG_IDENTIFIER"] == "p2psync"
    assert fields["CODE_FILE"] == __file__
    assert fields["CODE_FUNC"] == "test_a_record_arrives_with_its_fields"
    assert fields["MESSAGE_ID"] == journal.MESSAGE_IDS["paired"]
    assert fields["P2PSYNC_PEER"] == "MFRGG-ZDFMZ-A"
    assert fields["P2PSYNC_PEER_NAME"] == "living room.tv"
    assert stream.getvalue() == ""


def test_a_traceback_keeps_its_newlines(journald: tuple[socket.socket, str]) -> None:
    listening, path = journald
    logger = _logger(JournalHandler(_fallback()[0], path))
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logger.exception("it failed")
    message = _receive(listening)["MESSAGE"]
    assert message.startswith("it failed\nTraceback")
    assert message.endswith("ValueError: bad\nvalue")


def test_a_record_too_large_for_a_datagram_goes_in_a_memfd(
    journald: tuple[socket.socket, str],
) -> None:
    listening, path = journald
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    logger = _logger(JournalHandler(_fallback()[0], path))
    big = "x" * 400_000  # over the kernel's datagram limit (wmem_max)
    logger.warning("%s", big)
    assert _receive(listening)["MESSAGE"] == big


def test_without_journald_records_go_to_the_fallback(tmp_path: Path) -> None:
    fallback, stream = _fallback()
    logger = _logger(JournalHandler(fallback, str(tmp_path / "absent.socket")))
    logger.warning("still said")
    assert stream.getvalue() == "still said\n"


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level


def _journal_stream() -> str:
    status = os.fstat(2)
    return f"{status.st_dev}:{status.st_ino}"


@pytest.mark.usefixtures("root_logging")
def test_setup_logging_uses_the_journal_when_stderr_is_it(
    journald: tuple[socket.socket, str],
) -> None:
    listening, path = journald
    setup_logging("info", {"JOURNAL_STREAM": _journal_stream()}, path)
    [handler] = logging.getLogger().handlers
    assert isinstance(handler, JournalHandler)
    logging.getLogger("p2psync").info("through the journal")
    assert _receive(listening)["MESSAGE"] == "through the journal"


@pytest.mark.usefixtures("root_logging")
@pytest.mark.parametrize("stream", ["1:1", ""])
def test_setup_logging_keeps_stderr_when_it_is_not_the_journal(
    journald: tuple[socket.socket, str], stream: str
) -> None:
    """An inherited JOURNAL_STREAM naming another stream (stderr redirected by a script) or none."""
    setup_logging("info", {"JOURNAL_STREAM": stream}, journald[1])
    [handler] = logging.getLogger().handlers
    assert not isinstance(handler, JournalHandler)


@pytest.mark.usefixtures("root_logging")
def test_setup_logging_keeps_stderr_when_journald_is_not_there(tmp_path: Path) -> None:
    setup_logging("info", {"JOURNAL_STREAM": _journal_stream()}, str(tmp_path / "absent"))
    [handler] = logging.getLogger().handlers
    assert not isinstance(handler, JournalHandler)
