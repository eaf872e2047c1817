"""The SQLite file behind a replica: opening it, running the schema's migration steps (held in
`store_schema.py`), transactions, and the queries of records, meta, shares and actors. With its
mixins (`store_log.py`: the entry log and heads; `history/baseline.py`: compaction's tables) it is
the only disk I/O.

WAL mode with synchronous=FULL, so a committed transaction survives kill -9 and power loss; the
caller groups many local transactions into one SQLite transaction (group commit) to amortise the
fsync. One connection, used by one thread at a time. This module knows rows and bytes; it never
decides what merges with what (that is `merge.py`) and never talks to the network.
"""

import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from itertools import islice
from pathlib import Path

import msgpack

from .history.baseline import KEY_CHUNK, BaselineTables
from .merge import RecordKey, Sibling, SiblingFields, is_conflict, winner
from .store_log import ROWS_PER_INSERT, EntryLog
from .store_schema import MIGRATIONS, SCHEMA_VERSION

WAL_SIZE_LIMIT = 8 * 1024 * 1024
AUTO_CHECKPOINT_PAGES = 1000  # SQLite's default, set again after `checkpoints_deferred`
_HIGHEST_CHAR = "\U0010ffff"
# Not a system collection ('_...'); in Python, where the write path counts: `coll[:1] != "_"`.
_USER_COLLECTION = "coll NOT LIKE '\\_%' ESCAPE '\\'"

# A user record whose conflict state a committed transaction changed: (share, collection, key,
# in conflict now).
ConflictFlip = tuple[str, str, str, bool]
# The query of `collections`: the primary key (share, coll, key) gives the rows of one share
# in collection order, so the GROUP BY needs no sorting (see test_store).
COLLECTIONS_SQL = (
    "SELECT coll, sum(NOT deleted) FROM records WHERE share=? AND coll NOT LIKE '\\_%'"
    " ESCAPE '\\' GROUP BY coll HAVING sum(NOT deleted) > 0 ORDER BY coll"
)


class StoreError(Exception):
    """The database cannot be used (newer schema, not a p2psync file, unreadable)."""


class Store(BaselineTables, EntryLog):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # What the user-collection rows of one share that `insert_new_records` just found count
        # for (live, conflict), so that `save_records` overwriting them can keep `counts` right
        # without reading them again. Valid while nothing else changes those rows: only
        # `save_records` does (and takes them out), or a rollback (which empties it).
        self._counted: dict[RecordKey, tuple[bool, int]] = {}
        self._counted_share = 0
        # User records whose conflict flag this SQLite transaction changed: (share, coll, key)
        # -> (in conflict before it, in conflict now); and those of committed transactions
        # whose state did change, until `take_conflict_flips` (the node publishes them).
        self._flipping: dict[tuple[str, str, str], tuple[bool, bool]] = {}
        self._flipped: list[ConflictFlip] = []
        # commits made while `checkpoints_deferred` held SQLite's automatic checkpoint back, not
        # checkpointed since (`checkpoint`)
        self.deferred_commits = 0
        self._deferring = False
        # what the connection is set to (see `transaction`)
        self._fsyncing = True
        self._checkpointing_automatically = True
        try:
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            # a large transaction (a catch-up, a compaction) grows the WAL; once checkpointed,
            # it is cut back to this instead of keeping its largest size for good
            self._db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: cannot open the database: {exc}") from None
        self._actor_ids: dict[str, int] = dict(self._db.execute("SELECT name, id FROM actors"))
        self._actor_names = {i: name for name, i in self._actor_ids.items()}
        self._share_ids: dict[str, int] = dict(self._db.execute("SELECT name, id FROM shares"))
        self._pack = msgpack.Packer().pack  # reused: msgpack.packb builds a Packer every call

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer p2psync (schema {version}, this one knows "
                f"{SCHEMA_VERSION}); upgrade p2psync"
            )
        for step in range(version + 1, SCHEMA_VERSION + 1):
            with self.transaction():
                for statement in MIGRATIONS[step]:
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={step}")

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def transaction(self, *, fsync: bool = True) -> Iterator[None]:
        """One SQLite transaction. `fsync=False` skips the fsync of this commit: for data a peer
        would send again. The WAL is sequential, so the next fsynced commit makes it durable
        too: nothing written later can survive without it. Every write of the store is made in
        one of these (tests/conftest.py's `store_writes_are_in_transactions` checks it)."""
        # The synchronous level and the automatic checkpoint are switched only when they
        # change: a receiver applies one unsynced transaction after another, and two PRAGMAs
        # per switch were ~20 us of each one-entry apply.
        if fsync != self._fsyncing:
            self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
            self._fsyncing = fsync
        if self._deferring == self._checkpointing_automatically:
            pages = 0 if self._deferring else AUTO_CHECKPOINT_PAGES
            self._db.execute(f"PRAGMA wal_autocheckpoint={pages}")
            self._checkpointing_automatically = not self._deferring
        self._db.execute("BEGIN IMMEDIATE")
        self._counted.clear()
        self._flipping.clear()
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            self.baseline_changes += 1  # what was read of it inside may be gone
            self._reload_ids()
            self.forget_last_position()
            self._counted.clear()
            self._flipping.clear()
            raise
        self._db.execute("COMMIT")
        self.deferred_commits += self._deferring
        self._flipped += [(*k, now) for k, (was, now) in self._flipping.items() if was != now]

    @contextmanager
    def checkpoints_deferred(self) -> Iterator[None]:
        """Commits inside make no automatic checkpoint (which copies the WAL into the database
        and fsyncs both: milliseconds, where the commit itself costs microseconds); they are
        counted in `deferred_commits` for whoever calls `checkpoint` later. For short writes
        made where a stall would hold up others (the daemon's event loop). The next
        transaction made outside turns SQLite's automatic checkpoint back on."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database as far as readers allow (what SQLite does
        by itself after a commit once the WAL passes `AUTO_CHECKPOINT_PAGES`)."""
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        self.deferred_commits = 0

    def _reload_ids(self) -> None:
        self._actor_ids = dict(self._db.execute("SELECT name, id FROM actors"))
        self._actor_names = {i: name for name, i in self._actor_ids.items()}
        self._share_ids = dict(self._db.execute("SELECT name, id FROM shares"))

    def take_conflict_flips(self) -> list[ConflictFlip]:
        """The user records that committed transactions put into conflict or out of it since
        the last call, in commit order."""
        flipped, self._flipped = self._flipped, []
        return flipped

    def _note_flip(self, share_id: int, record_key: RecordKey, was: bool, now: bool) -> None:
        share = next(name for name, found in self._share_ids.items() if found == share_id)
        noted = (share, *record_key)
        before = self._flipping.get(noted, (was, was))[0]
        self._flipping[noted] = (before, now)

    @property
    def in_transaction(self) -> bool:
        return self._db.in_transaction

    def get_meta(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))

    def meta_with_prefix(self, prefix: str) -> dict[str, bytes]:
        """Every meta entry whose key starts with `prefix` (a literal prefix, no wildcards)."""
        rows = self._db.execute(
            "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
        )
        return dict(rows)

    def save_meta(self, key: str, value: bytes) -> None:
        """One meta value, committed (and fsynced) on its own: a setting someone was told is
        kept."""
        with self.transaction():
            self.set_meta(key, value)

    def delete_meta(self, key: str) -> None:
        self._db.execute("DELETE FROM meta WHERE key=?", (key,))

    def share_id(self, name: str) -> int:
        found = self._share_ids.get(name)
        if found is None:
            found = self._db.execute("INSERT INTO shares(name) VALUES(?)", (name,)).lastrowid
            assert found is not None
            self._share_ids[name] = found
        return found

    def has_share(self, name: str) -> bool:
        return name in self._share_ids

    def share_names(self) -> list[str]:
        return sorted(self._share_ids)

    def actor_id(self, name: str) -> int:
        found = self._actor_ids.get(name)
        if found is None:
            found = self._db.execute("INSERT INTO actors(name) VALUES(?)", (name,)).lastrowid
            assert found is not None
            self._actor_ids[name] = found
            self._actor_names[found] = name
        return found

    def actor_names(self) -> set[str]:
        """Every actor this database ever named (a head may be gone: see vectors.compressed)."""
        return set(self._actor_ids)

    def remove_records(self, share: str, keys: Iterable[RecordKey]) -> None:
        share_id, wanted = self.share_id(share), list(keys)
        stored = self._stored_rows(share, [k for k in wanted if k[0][:1] != "_"])
        counted = self._counted_in(share_id)
        for record_key in wanted:
            counted.pop(record_key, None)
        self._db.executemany(
            "DELETE FROM records WHERE share=? AND coll=? AND key=?",
            ((share_id, collection, key) for collection, key in wanted),
        )
        for record_key, (_, _, conflict) in stored.items():
            if conflict:
                self._note_flip(share_id, record_key, True, False)
        self._add_counts(
            share_id,
            -sum(not deleted for _, deleted, _ in stored.values()),
            -sum(conflict for _, _, conflict in stored.values()),
        )

    def load_records(self, share: str, keys: Iterable[RecordKey]) -> dict[RecordKey, list[Sibling]]:
        return {
            record_key: self._unpack_siblings(blob)
            for record_key, (blob, _, _) in self._stored_rows(share, keys).items()
        }

    def _stored_rows(
        self, share: str, keys: Iterable[RecordKey]
    ) -> dict[RecordKey, tuple[bytes, int, int]]:
        """`(siblings, deleted, conflict)` of each of these records that has a row."""
        share_id = self.share_id(share)
        by_collection: dict[str, list[str]] = {}
        for collection, key in keys:
            by_collection.setdefault(collection, []).append(key)
        found: dict[RecordKey, tuple[bytes, int, int]] = {}
        for collection, wanted in by_collection.items():
            for start in range(0, len(wanted), KEY_CHUNK):
                chunk = wanted[start : start + KEY_CHUNK]
                rows = self._db.execute(
                    "SELECT key, siblings, deleted, conflict FROM records WHERE share=? AND coll=?"
                    f" AND key IN ({','.join('?' * len(chunk))})",
                    (share_id, collection, *chunk),
                )
                for key, blob, deleted, conflict in rows:
                    found[(collection, key)] = (blob, deleted, conflict)
        return found

    def insert_new_records(
        self, share: str, writes: Iterable[tuple[RecordKey, SiblingFields]]
    ) -> dict[RecordKey, list[Sibling]]:
        """Store each write as a one-sibling record where its key has no row yet. Return the
        records that were there, from before or from an earlier write of `writes`: their rows are
        left as they were, for the caller to merge into."""
        share_id = self.share_id(share)
        found: dict[RecordKey, list[Sibling]] = {}
        added = 0  # live user records among the rows inserted
        pending = iter(writes)
        pack, known_ids = self._pack, self._actor_ids
        while chunk := list(islice(pending, ROWS_PER_INSERT)):
            params: list[object] = [share_id]
            uncounted = 0  # deletes and system records
            for (collection, key), (actor, seq, hlc, deleted, value, meta) in chunk:
                # _pack_one(sibling), inline: this line runs once per record of a catch-up (ids
                # start at 1, so a known actor's id is never mistaken for a missing one)
                actor_id = known_ids.get(actor) or self.actor_id(actor)
                blob = pack(((actor_id, seq, hlc, deleted, value, meta),))
                params += (collection, key, blob, deleted)
                if deleted or collection[:1] == "_":
                    uncounted += 1
            if uncounted in (0, len(chunk)):
                # every row counts alike, so how many went in says how many count
                inserted = self._db.execute(_insert_new_sql(len(chunk)), params).rowcount
                added += 0 if uncounted else inserted
            else:
                # rows that count and rows that do not: only SQLite knows which of them went in
                counted = self._db.execute(_insert_new_sql(len(chunk), counting=True), params)
                went_in = [is_live for (is_live,) in counted]
                inserted, added = len(went_in), added + sum(went_in)
            if inserted < len(chunk):
                found.update(self._records_kept(share_id, share, chunk))
        self._add_counts(share_id, added, 0)
        return found

    def _records_kept(
        self, share_id: int, share: str, offered: Sequence[tuple[RecordKey, SiblingFields]]
    ) -> dict[RecordKey, list[Sibling]]:
        """The records whose row is not the one-sibling row just offered: they were there before.
        (A row equal to the offered one is ours, or already holds that very write, which merging
        again would leave as it is.) Notes what each user record counts for now, for
        `save_records`."""
        stored = self._stored_rows(share, [record_key for record_key, _ in offered])
        counted = self._counted_in(share_id)
        kept: dict[RecordKey, list[Sibling]] = {}
        for record_key, sibling in offered:
            blob, deleted, conflict = stored[record_key]
            if blob != self._pack_one(sibling):
                kept[record_key] = self._unpack_siblings(blob)
                if record_key[0][:1] != "_":
                    counted[record_key] = (not deleted, conflict)
        return kept

    def save_records(self, share: str, records: Mapping[RecordKey, list[Sibling]]) -> None:
        share_id = self.share_id(share)
        counted = self._counted_in(share_id)
        live = conflicts = 0
        items = list(records.items())
        for start in range(0, len(items), ROWS_PER_INSERT):
            chunk = items[start : start + ROWS_PER_INSERT]
            params: list[object] = [share_id]
            unknown: list[tuple[RecordKey, bool, bool]] = []
            for record_key, siblings in chunk:
                deleted, conflict = _flags(siblings)
                params += (*record_key, self._pack_siblings(siblings), deleted, conflict)
                was = counted.pop(record_key, None)
                if was is not None:
                    live += (not deleted) - was[0]
                    conflicts += conflict - was[1]
                    if conflict != was[1]:
                        self._note_flip(share_id, record_key, bool(was[1]), conflict)
                elif record_key[0][:1] != "_":
                    unknown.append((record_key, deleted, conflict))
            if unknown:  # rows insert_new_records did not find: read them before they change
                stored = self._stored_rows(share, [record_key for record_key, _, _ in unknown])
                for record_key, deleted, conflict in unknown:
                    # no row counts for nothing, as a deleted record does
                    _, was_deleted, was_conflict = stored.get(record_key, (b"", 1, 0))
                    live += (not deleted) - (not was_deleted)
                    conflicts += conflict - was_conflict
                    if conflict != was_conflict:
                        self._note_flip(share_id, record_key, bool(was_conflict), conflict)
            self._db.execute(_save_records_sql(len(chunk)), params)
        self._add_counts(share_id, live, conflicts)

    def _counted_in(self, share_id: int) -> dict[RecordKey, tuple[bool, int]]:
        """The notes of `share_id` (one share at a time: a batch writes to one share)."""
        if share_id != self._counted_share:
            self._counted.clear()
            self._counted_share = share_id
        return self._counted

    def _add_counts(self, share_id: int, live: int, conflicts: int) -> None:
        if live or conflicts:
            self._db.execute(
                "INSERT INTO counts(share, live, conflicts) VALUES(?, ?, ?) ON CONFLICT(share)"
                " DO UPDATE SET live=live+excluded.live, conflicts=conflicts+excluded.conflicts",
                (share_id, live, conflicts),
            )

    def record(self, share: str, collection: str, key: str) -> list[Sibling] | None:
        return self.load_records(share, [(collection, key)]).get((collection, key))

    def scan(
        self,
        share: str,
        collection: str,
        prefix: str,
        after: str | None,
        limit: int,
        deleted: bool = False,
    ) -> list[tuple[str, list[Sibling]]]:
        """Live (not deleted) records of a collection whose key starts with `prefix`, by key;
        with `deleted`, also those whose winner is a delete in conflict with a live sibling (a
        record is in conflict when its siblings differ, so a deleted winner in conflict has
        one)."""
        low = prefix if after is None or after < prefix else after
        shown = "(NOT deleted OR conflict)" if deleted else "NOT deleted"
        rows = self._db.execute(
            "SELECT key, siblings FROM records WHERE share=? AND coll=? AND key>=? AND key<?"
            f" AND (key>? OR ? IS NULL) AND {shown} ORDER BY key LIMIT ?",
            (self.share_id(share), collection, low, prefix + _HIGHEST_CHAR, after, after, limit),
        )
        return [(key, self._unpack_siblings(blob)) for key, blob in rows]

    def collections(self, share: str) -> list[tuple[str, int]]:
        """(collection, live records) of each user collection with live records: one pass over
        the share's records."""
        rows = self._db.execute(COLLECTIONS_SQL, (self.share_id(share),))
        return [(collection, int(live)) for collection, live in rows]

    def conflicts(
        self, share: str, collection: str | None, limit: int
    ) -> list[tuple[str, str, list[Sibling]]]:
        """Records with conflicting siblings: in one collection, or in every user collection (the
        system ones, named '_...', resolve themselves by rule and are not listed)."""
        # INDEXED BY: the planner rates the partial index and the primary key alike and picks the
        # primary key, which walks every record of the share (54 ms instead of 0.13 ms at 1M)
        if collection is None:
            rows = self._db.execute(
                "SELECT coll, key, siblings FROM records INDEXED BY records_conflicts"
                f" WHERE share=? AND conflict AND {_USER_COLLECTION} ORDER BY coll, key LIMIT ?",
                (self.share_id(share), limit),
            )
        else:
            rows = self._db.execute(
                "SELECT coll, key, siblings FROM records INDEXED BY records_conflicts"
                " WHERE share=? AND coll=? AND conflict ORDER BY key LIMIT ?",
                (self.share_id(share), collection, limit),
            )
        return [(coll, key, self._unpack_siblings(blob)) for coll, key, blob in rows]

    def count_records(self, share: str) -> int:
        """Live records outside the system collections (whose names start with '_')."""
        return self._counts(share)[0]

    def share_bytes(self, share: str) -> int:
        """What a share's log and records take: one pass over both (for `share show`, never a
        per-change or status path)."""
        share_id = self.share_id(share)
        log = self._db.execute(
            "SELECT coalesce(sum(length(raw) + coalesce(length(sig), 0)), 0) FROM entries"
            " WHERE share=?",
            (share_id,),
        ).fetchone()[0]
        records = self._db.execute(
            "SELECT coalesce(sum(length(siblings) + length(key)), 0) FROM records WHERE share=?",
            (share_id,),
        ).fetchone()[0]
        baseline = self._db.execute(
            "SELECT coalesce(sum(length(siblings) + length(key)), 0) FROM baseline WHERE share=?",
            (share_id,),
        ).fetchone()[0]
        return int(log) + int(records) + int(baseline)

    def count_conflicts(self, share: str) -> int:
        """Records with conflicting siblings outside the system collections."""
        return self._counts(share)[1]

    def _counts(self, share: str) -> tuple[int, int]:
        row = self._db.execute(
            "SELECT live, conflicts FROM counts WHERE share=?", (self.share_id(share),)
        ).fetchone()
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    def _pack_one(self, sibling: SiblingFields) -> bytes:
        """What `_pack_siblings([sibling])` gives, from a sibling's fields."""
        actor, seq, hlc, deleted, value, meta = sibling
        return self._pack(((self.actor_id(actor), seq, hlc, deleted, value, meta),))

    def _pack_siblings(self, siblings: list[Sibling]) -> bytes:
        return self._pack(
            [(self.actor_id(s.actor), s.seq, s.hlc, s.deleted, s.value, s.meta) for s in siblings]
        )

    def _unpack_siblings(self, blob: bytes) -> list[Sibling]:
        return [
            Sibling(self._actor_names[actor], seq, hlc, deleted, value, meta)
            for actor, seq, hlc, deleted, value, meta in msgpack.unpackb(blob)
        ]


def _flags(siblings: list[Sibling]) -> tuple[bool, bool]:
    """(winner is deleted, values conflict), with the common single-sibling case kept cheap."""
    if len(siblings) == 1:
        return siblings[0].deleted, False
    return winner(siblings).deleted, is_conflict(siblings)


# Multi-row INSERTs. "?1" is the share in every row; each bare "?" numbers on from the highest
# number used so far, so the rows bind (share, then each row's own columns).
_INTO_RECORDS = "INSERT INTO records(share, coll, key, siblings, deleted, conflict) VALUES"


@cache
def _insert_new_sql(rows: int, counting: bool = False) -> str:
    """`counting`: one row back for each row inserted, 1 where it is a live user record."""
    values = ",".join(["(?1,?,?,?,?,0)"] * rows)
    returning = f" RETURNING NOT deleted AND {_USER_COLLECTION}" if counting else ""
    return f"{_INTO_RECORDS} {values} ON CONFLICT DO NOTHING{returning}"


@cache
def _save_records_sql(rows: int) -> str:
    values = ",".join(["(?1,?,?,?,?,?)"] * rows)
    return (
        f"{_INTO_RECORDS} {values} ON CONFLICT(share, coll, key) DO UPDATE SET"
        " siblings=excluded.siblings, deleted=excluded.deleted, conflict=excluded.conflict"
    )
