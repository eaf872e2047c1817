"""The control protocol's error codes, and which failures map to which (pure).

It owns the stable codes of error answers, `RequestError` (a request answered with one), and how
a failure below the protocol is recognised as a full disk. Every other control module raises or
returns these codes; none invents its own. Messages are for people and may change; codes may not.
"""

import errno
import sqlite3

BAD_REQUEST = "bad_request"
UNKNOWN_METHOD = "unknown_method"
NOT_FOUND = "not_found"
TOO_LARGE = "too_large"
CONFLICT = "conflict"
INVALID_VALUE = "invalid_value"  # a write its type's schema manifest refuses (schemas/manifest.py)
PAIRING_FAILED = "pairing_failed"
FORBIDDEN = "forbidden"  # an app asked for something outside its grants (access/grants.py)
DISK_FULL = "disk_full"
INTERNAL = "internal"

DISK_FULL_MESSAGE = (
    "the disk holding this device's database is full, so nothing was written; free some space "
    "there and send it again (reads keep working)"
)
INTERNAL_MESSAGE = "internal error; the daemon's log has the details"


class RequestError(Exception):
    """A request answered with an error response: a stable `code` and a human `message`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def is_disk_full(error: BaseException) -> bool:
    """Whether `error`, or what it was raised from, is SQLite's SQLITE_FULL or ENOSPC."""
    seen: set[int] = set()
    found: BaseException | None = error
    while found is not None and id(found) not in seen:
        seen.add(id(found))
        if isinstance(found, sqlite3.Error):
            code = getattr(found, "sqlite_errorcode", None)
            if (code is not None and code & 0xFF == sqlite3.SQLITE_FULL) or (
                "database or disk is full" in str(found)
            ):
                return True
        if isinstance(found, OSError) and found.errno == errno.ENOSPC:
            return True
        found = found.__cause__ or found.__context__
    return False
