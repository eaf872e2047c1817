"""Log records as systemd journal entries (pure): the fields of a record and their encoding in the
native journal protocol (systemd.journal-fields(7), "Native Journal Protocol" in systemd's docs).

Owns which fields a record becomes (MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, CODE_*, and the
P2PSYNC_PEER, P2PSYNC_PEER_NAME, P2PSYNC_SHARE and MESSAGE_ID that a log call gives through
`extra=`, see `log_extra`), the fixed MESSAGE_ID of each kind of event, the datagram bytes, and
whether stderr is the journal. It never opens a socket or reads the environment itself
(journal_handler.py does).
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Mapping
from typing import Any

SYSLOG_IDENTIFIER = "p2psync"
# One 128-bit id per kind of event, fixed forever (`journalctl MESSAGE_ID=...` finds them in any
# release): made once with uuid4, never to be reused for another kind.
MESSAGE_IDS = {
    "peer_connected": "03afcb7631064fdf9896b561818c44fb",
    "peer_disconnected": "f75cce0edd9d43f3abb32cd576c46877",
    "paired": "e97c166445d14268bf986761793dd9e4",
    "pairing_failed": "b9d0ac86bd824cdebd7f136fba5abdb3",
    "revoked": "28a06e8f0d234f60bd6a883d72056b9e",
    "conflict": "3d62bb2abfcb4d7b93f4ca4875a21226",
}
# LogRecord attribute -> journal field, set by `log_extra`
EXTRA_FIELDS = {
    "p2psync_peer": "P2PSYNC_PEER",
    "p2psync_peer_name": "P2PSYNC_PEER_NAME",
    "p2psync_share": "P2PSYNC_SHARE",
}
_EVENT_ATTRIBUTE = "p2psync_event"
# syslog(3) priorities; anything above ERROR is CRIT
PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}
_FIELD_NAME = re.compile(r"[A-Z0-9][A-Z0-9_]*\Z")


def log_extra(
    event: str | None = None,
    *,
    peer: str | None = None,
    peer_name: str | None = None,
    share: str | None = None,
) -> dict[str, str]:
    """The `extra=` of a log call about a device, a share or an event of a kind in MESSAGE_IDS
    (`None`s left out); other handlers ignore it."""
    if event is not None and event not in MESSAGE_IDS:
        raise ValueError(f"no MESSAGE_ID for event kind {event!r}")
    given = {_EVENT_ATTRIBUTE: event, "p2psync_peer": peer, "p2psync_peer_name": peer_name,
             "p2psync_share": share}  # fmt: skip
    return {key: value for key, value in given.items() if value is not None}


def priority(levelno: int) -> int:
    return PRIORITIES.get(levelno, 2)


def record_fields(record: logging.LogRecord, message: str) -> list[tuple[str, str]]:
    """The journal fields of `record`, whose text (exception included) is `message`."""
    fields = [
        ("MESSAGE", message),
        ("PRIORITY", str(priority(record.levelno))),
        ("SYSLOG_IDENTIFIER", SYSLOG_IDENTIFIER),
        ("CODE_FILE", record.pathname),
        ("CODE_LINE", str(record.lineno)),
        ("CODE_FUNC", record.funcName),
        ("P2PSYNC_LOGGER", record.name),
    ]
    attributes: Mapping[str, Any] = record.__dict__
    event = attributes.get(_EVENT_ATTRIBUTE)
    if event in MESSAGE_IDS:
        fields.append(("MESSAGE_ID", MESSAGE_IDS[event]))
    for attribute, field in EXTRA_FIELDS.items():
        value = attributes.get(attribute)
        if value is not None:
            fields.append((field, str(value)))
    return fields


def message_text(record: logging.LogRecord) -> str:
    """The record's message, with its traceback if it has one (as logging.Formatter shows it)."""
    text = record.getMessage()
    if record.exc_info:
        text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
    return text


def encode(fields: list[tuple[str, str]]) -> bytes:
    """The datagram: `KEY=value\\n`, or for a value with a newline `KEY\\n`, its length as 64-bit
    little-endian, the value, `\\n`."""
    parts = []
    for name, value in fields:
        if not _FIELD_NAME.match(name):
            raise ValueError(f"not a journal field name: {name!r}")
        raw = value.encode("utf-8", "replace")
        if b"\n" in raw:
            parts.append(name.encode() + b"\n" + len(raw).to_bytes(8, "little") + raw + b"\n")
        else:
            parts.append(name.encode() + b"=" + raw + b"\n")
    return b"".join(parts)


def is_journal_stream(journal_stream: str | None, device: int, inode: int) -> bool:
    """Whether `JOURNAL_STREAM` ("DEVICE:INODE", set by systemd for a service whose output goes to
    the journal) names the stream whose device and inode are given (stderr's: a child whose
    stderr was redirected elsewhere inherits the variable, not the journal)."""
    if not journal_stream:
        return False
    device_text, _, inode_text = journal_stream.partition(":")
    try:
        return (int(device_text), int(inode_text)) == (device, inode)
    except ValueError:
        return False
