"""The daemon's copy of its database for `backup` (backup/stream.py): one consistent moment
while the replica goes on writing, and nothing left behind in the state dir. The stream itself
runs through a real control socket in tests/test_cli_data.py and real daemons in
tests/test_backup_restore.py."""

import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import msgpack

from p2psync import entry
from p2psync.backup.stream import COPY_PREFIX, copy_database
from p2psync.shares import DEFAULT_SHARE
from p2psync.store import SCHEMA_VERSION
from tests.control_harness import open_replica


def test_a_copy_taken_while_the_replica_writes_is_one_consistent_moment(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    replica = open_replica(state / "replica.db")
    for n in range(200):
        replica.commit(DEFAULT_SHARE, [entry.put("notes", f"k{n}", msgpack.packb(n))])
    (state / f"{COPY_PREFIX}123.db").write_bytes(b"left by a crash")
    stop = threading.Event()
    written: list[int] = []

    def keep_writing() -> None:  # on the replica's own connection, as the node does
        n = 0
        while not stop.is_set():
            ops = [
                entry.put("busy", f"k{n}", msgpack.packb(n)),
                entry.delete("notes", f"k{n % 200}"),
            ]
            replica.commit(DEFAULT_SHARE, ops)
            written.append(n)
            n += 1

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        while len(written) < 20:  # the copy starts in the middle of the writes
            stop.wait(0.001)
        copies = [copy_database(state / "replica.db") for _ in range(3)]
    finally:
        stop.set()
        writer.join()
    assert len(written) > 20, "the writer was not held up by the copies"
    assert sorted(p.name for p in state.iterdir() if p.name.startswith(COPY_PREFIX)) == []
    for number, copy in enumerate(copies):
        target = tmp_path / f"copy{number}.db"
        with copy.file:
            target.write_bytes(copy.file.read())
        assert target.stat().st_size == copy.size and copy.schema_version == SCHEMA_VERSION
        with closing(sqlite3.connect(target)) as db:
            assert db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
            # `counts` changes in the same transaction as the records it counts: equal in a copy
            # of one moment, and each entry's records are all there or not at all
            counted = db.execute("SELECT live FROM counts").fetchone()[0]
            live = db.execute(
                "SELECT count(*) FROM records WHERE NOT deleted"
                " AND coll NOT LIKE '\\_%' ESCAPE '\\'"
            )
            assert counted == live.fetchone()[0]
            busy = db.execute("SELECT count(*) FROM records WHERE coll='busy'").fetchone()[0]
            deleted = db.execute("SELECT count(*) FROM records WHERE coll='notes' AND deleted")
            assert busy == deleted.fetchone()[0] or busy > 200
    replica.close()
