"""The backup file's format: a tar archive a person can also unpack by hand (pure).

Members, in this order: `backup.json` (the manifest: which device, when, whether the key is in),
`replica.db` (the SQLite database, a consistent copy), `device.crt`, and `device.key` only in a
backup taken `--with-key`. The daemon builds it piece by piece while it streams (`tar_header`,
`tar_padding`, `TAR_END`), so the database is never held in memory; `check_manifest` judges a
manifest read back from a file. This module never opens a file, a socket or the database.
"""

import json
import tarfile
from dataclasses import dataclass
from typing import Any

FORMAT = "p2psync-backup"
FORMAT_VERSION = 1
MANIFEST = "backup.json"
DATABASE = "replica.db"
CERT = "device.crt"
KEY = "device.key"
BLOCK = 512
# tar files end with two zero blocks, and tar(1) reads in records of 20 blocks
TAR_END = b"\0" * (2 * BLOCK)
RECORD = 20 * BLOCK


class BackupFormatError(ValueError):
    """A file that is not a p2psync backup this version can restore; the message says why."""


@dataclass(frozen=True)
class Manifest:
    device: str
    name: str
    created: str  # ISO 8601, UTC
    with_key: bool
    schema_version: int  # of the database (store.SCHEMA_VERSION when it was taken)
    software: str  # the p2psync version that took it

    def to_json(self) -> bytes:
        return (
            json.dumps(
                {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "device": self.device,
                    "name": self.name,
                    "created": self.created,
                    "with_key": self.with_key,
                    "schema_version": self.schema_version,
                    "p2psync": self.software,
                },
                indent=2,
                ensure_ascii=False,
            ).encode()
            + b"\n"
        )


def members(with_key: bool) -> tuple[str, ...]:
    """The member names of a backup, in order."""
    return (MANIFEST, DATABASE, CERT, *((KEY,) if with_key else ()))


def member_mode(name: str) -> int:
    """The database and the key are as private as in the state dir; the rest is not secret."""
    return 0o600 if name in (DATABASE, KEY) else 0o644


def tar_header(name: str, size: int, mtime: int) -> bytes:
    """The 512-byte ustar header of a regular file member."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = member_mode(name)
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def tar_padding(size: int) -> bytes:
    """The zeros that follow a member's `size` bytes of data up to a whole block."""
    return b"\0" * (-size % BLOCK)


def tar_size(sizes: list[int]) -> int:
    """The length of an archive whose members hold `sizes` bytes, with its end, in records."""
    body = sum(BLOCK + size + (-size % BLOCK) for size in sizes) + len(TAR_END)
    return body + (-body % RECORD)


def tar_end(written: int) -> bytes:
    """What ends an archive of which `written` bytes were sent (end blocks, then a whole
    record)."""
    body = written + len(TAR_END)
    return TAR_END + b"\0" * (-body % RECORD)


def check_manifest(raw: bytes) -> Manifest:
    """The manifest of a backup, or BackupFormatError saying what is wrong with it."""
    try:
        found: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BackupFormatError(f"its {MANIFEST} is not JSON") from None
    if not isinstance(found, dict) or found.get("format") != FORMAT:
        raise BackupFormatError(f"its {MANIFEST} does not describe a p2psync backup")
    version = found.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BackupFormatError(
            f"it was written in backup format {version!r} by p2psync {found.get('p2psync')}; "
            f"this p2psync reads format {FORMAT_VERSION}: upgrade p2psync"
        )
    fields = {
        "device": str,
        "name": str,
        "created": str,
        "with_key": bool,
        "schema_version": int,
        "p2psync": str,
    }
    for field, kind in fields.items():
        if not isinstance(found.get(field), kind):
            raise BackupFormatError(f"its {MANIFEST} lacks a valid {field!r}")
    return Manifest(
        device=found["device"],
        name=found["name"],
        created=found["created"],
        with_key=found["with_key"],
        schema_version=found["schema_version"],
        software=found["p2psync"],
    )
