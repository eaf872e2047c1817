"""The tables of schemas 4 and 5 behind compaction: each share's baseline and its frontier, the
reads and deletes of the log that folding needs, and the snapshot a device is receiving
(sqlite3, through the store's connection).

A mixin of `store.Store`, kept apart so each file can be read whole; like the store it knows rows
and bytes, and never decides what is folded or purged (that is `history/compaction.py`).
"""

import sqlite3
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from functools import cache
from itertools import islice
from typing import Any

import msgpack

from ..merge import RecordKey, Sibling, is_conflict, winner

# keys per `IN (...)` list: under the 999 parameters older SQLite builds allow
KEY_CHUNK = 900
# rows per multi-row INSERT of the baseline (5 parameters a row, under the 999 too)
_ROWS_PER_INSERT = 150
# not a system collection ('_...'), as the store counts records
_USER = "coll NOT LIKE '\\_%' ESCAPE '\\'"


class BaselineTables:
    # set by Store
    _db: sqlite3.Connection
    _actor_ids: dict[str, int]
    _actor_names: dict[int, str]
    _pack: Callable[[Any], bytes]
    forget_last_position: Callable[[], None]  # store_log.EntryLog's
    # bumped by every write to `baseline`: what a cache of the rows' totals is valid for
    baseline_changes = 0

    def share_id(self, name: str) -> int:
        raise NotImplementedError

    def actor_id(self, name: str) -> int:
        raise NotImplementedError

    def _note_flip(self, share_id: int, record_key: RecordKey, was: bool, now: bool) -> None:
        raise NotImplementedError

    def _counted_in(self, share_id: int) -> dict[RecordKey, tuple[bool, int]]:
        raise NotImplementedError

    def _pack_siblings(self, siblings: list[Sibling]) -> bytes:
        raise NotImplementedError

    def _unpack_siblings(self, blob: bytes) -> list[Sibling]:
        raise NotImplementedError

    def baseline_frontier(self, share: str) -> dict[str, int]:
        """B: the entries of the share folded into its baseline ({}: none)."""
        return self._baseline_row(share)[0]

    def folded_writes(self, share: str) -> dict[str, int]:
        """Per actor, the newest folded entry that was more than a stability report."""
        return self._baseline_row(share)[1]

    def _baseline_row(self, share: str) -> tuple[dict[str, int], dict[str, int]]:
        row = self._db.execute(
            "SELECT frontier, written FROM baselines WHERE share=?", (self.share_id(share),)
        ).fetchone()
        return ({}, {}) if row is None else (msgpack.unpackb(row[0]), msgpack.unpackb(row[1]))

    def set_baseline_frontier(
        self, share: str, frontier: Mapping[str, int], written: Mapping[str, int]
    ) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO baselines(share, frontier, written) VALUES(?, ?, ?)",
            (self.share_id(share), self._pack(dict(frontier)), self._pack(dict(written))),
        )

    def load_baseline(
        self, share: str, keys: Iterable[RecordKey]
    ) -> dict[RecordKey, list[Sibling]]:
        share_id, found = self.share_id(share), {}
        by_collection: dict[str, list[str]] = {}
        for collection, key in keys:
            by_collection.setdefault(collection, []).append(key)
        for collection, wanted in by_collection.items():
            for start in range(0, len(wanted), KEY_CHUNK):
                chunk = wanted[start : start + KEY_CHUNK]
                rows = self._db.execute(
                    "SELECT key, siblings FROM baseline WHERE share=? AND coll=?"
                    f" AND key IN ({','.join('?' * len(chunk))})",
                    (share_id, collection, *chunk),
                )
                for key, blob in rows:
                    found[(collection, key)] = self._unpack_siblings(blob)
        return found

    def save_baseline(self, share: str, records: Mapping[RecordKey, list[Sibling]]) -> None:
        share_id = self.share_id(share)
        self.baseline_changes += 1
        self._db.executemany(
            "INSERT OR REPLACE INTO baseline(share, coll, key, siblings, tombstone)"
            " VALUES(?, ?, ?, ?, ?)",
            (
                (share_id, coll, key, self._pack_siblings(sibs), _only_deletes(sibs))
                for (coll, key), sibs in records.items()
            ),
        )

    def baseline_tombstones(self, share: str) -> list[tuple[RecordKey, list[Sibling]]]:
        """The baseline's records that are deletes and nothing else."""
        rows = self._db.execute(
            "SELECT coll, key, siblings FROM baseline INDEXED BY baseline_tombstones"
            " WHERE share=? AND tombstone",
            (self.share_id(share),),
        )
        return [((coll, key), self._unpack_siblings(blob)) for coll, key, blob in rows]

    def remove_baseline(self, share: str, keys: Iterable[RecordKey]) -> None:
        share_id = self.share_id(share)
        self.baseline_changes += 1
        self._db.executemany(
            "DELETE FROM baseline WHERE share=? AND coll=? AND key=?",
            ((share_id, coll, key) for coll, key in keys),
        )

    def baseline_fields(
        self, share: str, after: RecordKey | None = None
    ) -> Generator[tuple[str, str, list[list[Any]]], None, None]:
        """The baseline's rows after `after` in (collection, key) order, from one read, each
        sibling as its fields [actor, seq, hlc, deleted, value, meta] (no Sibling built: a
        snapshot encodes them straight away). Close it when stopping early."""
        coll, key = after if after is not None else ("", "")
        names = self._actor_names
        rows = self._db.execute(
            "SELECT coll, key, siblings FROM baseline WHERE share=? AND (coll, key) > (?, ?)"
            " ORDER BY coll, key",
            (self.share_id(share), coll, key),
        )
        try:
            for c, k, blob in rows:
                fields = msgpack.unpackb(blob)
                for sibling in fields:
                    sibling[0] = names[sibling[0]]
                yield c, k, fields
        finally:
            rows.close()

    def clear_baseline(self, share: str) -> None:
        self.baseline_changes += 1
        self._db.execute("DELETE FROM baseline WHERE share=?", (self.share_id(share),))

    def pack_fields(self, fields: Iterable[Sequence[Any]]) -> bytes:
        """What `_pack_siblings` gives for siblings given as their fields."""
        return self._pack([(self.actor_id(f[0]), *f[1:]) for f in fields])

    def insert_baseline(self, share: str, rows: Iterable[tuple[str, str, bytes, bool]]) -> None:
        """Add rows (collection, key, packed siblings, only deletes) to a cleared baseline."""
        share_id = self.share_id(share)
        self.baseline_changes += 1
        pending = iter(rows)
        while chunk := list(islice(pending, _ROWS_PER_INSERT)):
            params: list[object] = [share_id]
            for row in chunk:
                params += row
            self._db.execute(_insert_baseline_sql(len(chunk)), params)

    def records_from_baseline(self, share: str, rebuilt: Mapping[RecordKey, list[Sibling]]) -> None:
        """Make `records` the baseline's rows, but those of `rebuilt` (which may add keys):
        copied in SQL, as a single sibling's row is the same in both tables (deleted when its
        only sibling is; `rebuilt` must hold every row of several siblings, whose flags need
        the merge rules). Counts are taken again, conflict flips noted."""
        share_id = self.share_id(share)
        in_conflict = "SELECT coll, key FROM records WHERE share=? AND conflict AND " + _USER
        was = set(self._db.execute(in_conflict, (share_id,)))
        self._counted_in(share_id).clear()
        self._db.execute("DELETE FROM records WHERE share=?", (share_id,))
        self._db.execute(
            "INSERT INTO records(share, coll, key, siblings, deleted, conflict)"
            " SELECT share, coll, key, siblings, tombstone, 0 FROM baseline WHERE share=?",
            (share_id,),
        )
        self._db.executemany(
            "INSERT INTO records(share, coll, key, siblings, deleted, conflict)"
            " VALUES(?, ?, ?, ?, ?, ?) ON CONFLICT(share, coll, key) DO UPDATE SET"
            " siblings=excluded.siblings, deleted=excluded.deleted, conflict=excluded.conflict",
            (
                (share_id, coll, key, self._pack_siblings(sibs), *_record_flags(sibs))
                for (coll, key), sibs in rebuilt.items()
            ),
        )
        self._db.execute(
            "INSERT OR REPLACE INTO counts(share, live, conflicts) SELECT ?,"
            f" coalesce(sum(NOT deleted), 0), coalesce(sum(conflict), 0) FROM records"
            f" WHERE share=? AND {_USER}",
            (share_id, share_id),
        )
        now = set(self._db.execute(in_conflict, (share_id,)))
        for coll, key in was ^ now:
            self._note_flip(share_id, (coll, key), (coll, key) in was, (coll, key) in now)

    def staged_fields(self, share: str) -> Iterator[tuple[str, str, bytes]]:
        """Every staged row (collection, key, row as received), in key order, from one read."""
        rows = self._db.execute(
            "SELECT coll, key, row FROM snapshot_rows WHERE share=? ORDER BY coll, key",
            (self.share_id(share),),
        )
        try:
            yield from rows
        finally:
            rows.close()

    def remove_entries_within(self, share: str, frontier: Mapping[str, int]) -> None:
        """Forget entries a snapshot's baseline holds (each epoch's first entry stays)."""
        share_id = self.share_id(share)
        self._db.executemany(
            "DELETE FROM entries WHERE share=? AND actor=? AND seq>1 AND seq<=?",
            (
                (share_id, self._actor_ids[actor], seq)
                for actor, seq in frontier.items()
                if actor in self._actor_ids
            ),
        )
        self.forget_last_position()

    # a snapshot being received (schema 5) -------------------------------------------------

    def staged_snapshot(self, share: str) -> tuple[bytes, bytes] | None:
        """(packed offer, packed progress) of the snapshot being received for `share`."""
        row = self._db.execute(
            "SELECT offer, progress FROM snapshot_offers WHERE share=?", (self.share_id(share),)
        ).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    def stage_snapshot(self, share: str, offer: bytes, progress: bytes) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO snapshot_offers(share, offer, progress) VALUES(?, ?, ?)",
            (self.share_id(share), offer, progress),
        )

    def stage_rows(self, share: str, rows: Iterable[tuple[RecordKey, bytes]]) -> None:
        share_id = self.share_id(share)
        self._db.executemany(
            "INSERT OR REPLACE INTO snapshot_rows(share, coll, key, row) VALUES(?, ?, ?, ?)",
            ((share_id, coll, key, raw) for (coll, key), raw in rows),
        )

    def clear_staged(self, share: str) -> None:
        share_id = self.share_id(share)
        self._db.execute("DELETE FROM snapshot_offers WHERE share=?", (share_id,))
        self._db.execute("DELETE FROM snapshot_rows WHERE share=?", (share_id,))

    def entries_down(self, share: str, actor: str, high: int, low: int) -> Iterator[bytes]:
        """An actor's entries from seq `high` down to just above `low`, newest first."""
        rows = self._db.execute(
            "SELECT raw FROM entries WHERE share=? AND actor=? AND seq>? AND seq<=?"
            " ORDER BY seq DESC",
            (self.share_id(share), self._actor_ids.get(actor), low, high),
        )
        for (raw,) in rows:
            yield bytes(raw)

    def remove_entries(self, lseqs: Sequence[int]) -> None:
        """Forget folded entries (and what their deletes replaced)."""
        self._db.executemany("DELETE FROM entries WHERE lseq=?", ((lseq,) for lseq in lseqs))
        self.forget_last_position()
        self._db.executemany("DELETE FROM deleted_values WHERE lseq=?", ((lseq,) for lseq in lseqs))

    def reclaim_free_pages(self, at_least: int) -> int:
        """Give the file's free pages back to the filesystem (VACUUM, outside any transaction)
        when they hold `at_least` bytes and half the file: what folding freed. Returns the bytes
        given back."""
        page = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        free = int(self._db.execute("PRAGMA freelist_count").fetchone()[0]) * page
        total = int(self._db.execute("PRAGMA page_count").fetchone()[0]) * page
        if free < at_least or free * 2 < total:
            return 0
        try:
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError:
            return 0  # busy (a backup reading, say): the pages are reused, and the next time
        return total - int(self._db.execute("PRAGMA page_count").fetchone()[0]) * page


@cache
def _insert_baseline_sql(rows: int) -> str:
    values = ",".join(["(?1,?,?,?,?)"] * rows)
    return f"INSERT INTO baseline(share, coll, key, siblings, tombstone) VALUES {values}"


def _record_flags(siblings: list[Sibling]) -> tuple[bool, bool]:
    """A record's (winner is deleted, values conflict), as `records` keeps them."""
    return winner(siblings).deleted, is_conflict(siblings)


def _only_deletes(siblings: list[Sibling]) -> bool:
    return all(sibling.deleted for sibling in siblings)
