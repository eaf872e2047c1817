"""Error codes and how failures map to them (p2psync/control/errors.py)."""

import errno
import sqlite3

from p2psync.control import errors


def test_disk_full_is_recognised_through_wrapping_and_nothing_else_is() -> None:
    full = sqlite3.OperationalError("database or disk is full")
    assert errors.is_disk_full(full)
    assert errors.is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    try:
        try:
            raise full
        except sqlite3.OperationalError as exc:
            raise RuntimeError("commit failed") from exc
    except RuntimeError as wrapped:
        assert errors.is_disk_full(wrapped)
    assert not errors.is_disk_full(sqlite3.OperationalError("database is locked"))
    assert not errors.is_disk_full(OSError(errno.EIO, "I/O error"))
    assert not errors.is_disk_full(ValueError("full"))
