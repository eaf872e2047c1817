"""The daemon's side of `p2psync backup`: the `backup` control stream (trio, admin only).

The daemon copies its database with SQLite's online backup API on a connection of its own, in a
worker thread: one read transaction, so the copy is one consistent moment while the node goes on
writing (WAL: readers never block the writer). The copy goes to a hidden file in the state dir
(under the service's sandbox that is the only place the daemon may write), is opened, unlinked
at once and streamed to the client as the backup archive (`archive.py`), base64 in event lines.
The client writes the file with its own user's rights, where it likes: the daemon never writes
to a path a client names (that would let any admin make the service's user write anywhere it
can). It never changes the database and never keeps a copy after the stream.
"""

import base64
import hashlib
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import trio

from .. import __version__
from ..control.connection import Follow, Send
from ..control.errors import DISK_FULL, INTERNAL, RequestError, is_disk_full
from ..control.lines import json_line
from ..control.writes import param
from ..node import Node
from . import archive

CHUNK_BYTES = 192 * 1024  # a line of 256 KiB of base64: far below any line limit of the clients
COPY_PREFIX = ".backup-"  # the copy's name in the state dir, while SQLite writes it

# One copy at a time per daemon: so whatever named like a copy is there when a copy starts is
# left over from one that a crash interrupted, and is removed.
_copying = trio.Lock()


@dataclass
class DatabaseCopy:
    """A consistent copy of the database, already unlinked: readable through `file` only."""

    file: IO[bytes]
    size: int
    schema_version: int


def copy_database(database: Path) -> DatabaseCopy:
    """Copy `database` beside itself with SQLite's backup API (blocking: run it in a thread)."""
    state_dir = database.parent
    for stale in state_dir.glob(f"{COPY_PREFIX}*"):
        stale.unlink(missing_ok=True)
    target = state_dir / f"{COPY_PREFIX}{time.time_ns()}.db"
    try:
        with closing(sqlite3.connect(database)) as source, closing(sqlite3.connect(target)) as copy:
            source.backup(copy)  # all pages in one step: one read transaction, one moment
            # the copy needs no -wal file beside it to be read (by sqlite3, or after a restore)
            copy.execute("PRAGMA journal_mode=DELETE")
            schema_version = int(copy.execute("PRAGMA user_version").fetchone()[0])
        file = open(target, "rb")  # noqa: SIM115 - the stream closes it
    finally:
        target.unlink(missing_ok=True)  # an open file stays readable: nothing is left behind
    file.seek(0, 2)
    size = file.tell()
    file.seek(0)
    return DatabaseCopy(file, size, schema_version)


async def start_backup(
    node: Node, device_name: str, request: dict[str, Any]
) -> tuple[dict[str, Any], Follow]:
    """`backup` answers with what the archive holds and its length, then streams it:
    `backup_data` lines, and `backup_done` with its SHA-256 (or `backup_failed`)."""
    with_key: bool = param(request, "with_key", bool, False)
    database = Path(node.replica.store.path)
    async with _copying:
        try:
            copy = await trio.to_thread.run_sync(copy_database, database)
        except (OSError, sqlite3.Error) as exc:
            if is_disk_full(exc):
                raise RequestError(
                    DISK_FULL,
                    f"the disk holding {database.parent} is full: a backup needs room there for "
                    "one copy of the database while it is sent",
                ) from None
            raise
    identity = node.replica.identity
    manifest = archive.Manifest(
        device=identity.device_id,
        name=device_name,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        with_key=with_key,
        schema_version=copy.schema_version,
        software=__version__,
    )
    small = {
        archive.MANIFEST: manifest.to_json(),
        archive.CERT: identity.cert_pem,
        **({archive.KEY: identity.key_pem()} if with_key else {}),
    }
    sizes = [copy.size, *map(len, small.values())]
    started = {
        "device": manifest.device,
        "name": manifest.name,
        "created": manifest.created,
        "with_key": with_key,
        "bytes": archive.tar_size(sizes),
    }

    async def follow(send: Send) -> None:
        digest = hashlib.sha256()
        sent = 0
        try:
            for piece in _pieces(manifest, copy, small):
                data = await trio.to_thread.run_sync(_read_piece, piece)
                if not data:
                    continue
                digest.update(data)
                sent += len(data)
                encoded = base64.b64encode(data).decode()
                await send(json_line({"event": "backup_data", "data": encoded}))
        except OSError as exc:
            error = {"code": INTERNAL, "message": f"reading the database copy failed: {exc}"}
            await send(json_line({"event": "backup_failed", "error": error}))
            return
        finally:
            copy.file.close()
        await send(json_line({"event": "backup_done", "bytes": sent, "sha256": digest.hexdigest()}))

    return started, follow


# A piece of the archive: bytes as they are, or the next chunk of the database copy.
Piece = bytes | IO[bytes]


def _pieces(
    manifest: archive.Manifest, copy: DatabaseCopy, small: dict[str, bytes]
) -> Iterator[Piece]:
    mtime = int(datetime.fromisoformat(manifest.created).timestamp())
    written = 0
    for name in archive.members(manifest.with_key):
        size = copy.size if name == archive.DATABASE else len(small[name])
        header = archive.tar_header(name, size, mtime)
        if name == archive.DATABASE:
            yield header
            for _ in range(0, size, CHUNK_BYTES):
                yield copy.file
        else:
            yield header + small[name]
        written += len(header) + size + len(archive.tar_padding(size))
        yield archive.tar_padding(size)
    yield archive.tar_end(written)


def _read_piece(piece: Piece) -> bytes:
    return piece if isinstance(piece, bytes) else piece.read(CHUNK_BYTES)
