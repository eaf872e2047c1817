"""The store's entry log: the signed entries in local apply order (`lseq`), each share's chain
heads, and what each logged delete replaced (sqlite3, through the store's connection).

A mixin of `store.Store`, beside `history/baseline.py`'s tables, kept apart so each file can be
read whole. Like the store it knows rows and bytes: it never decodes an entry, never checks a
signature or a chain, and never decides what is sent to whom (that is `replica.py` and
`relay.py`).
"""

import sqlite3
from collections.abc import Iterable
from functools import cache
from itertools import islice

# Rows per multi-row INSERT: executemany pays its per-statement cost (step, reset, Python
# round trip) on every row; one statement of 150 rows pays it once, and its at most 751
# parameters stay under the 999 that older SQLite builds allow.
ROWS_PER_INSERT = 150

StoredEntry = tuple[int, str, int, bytes, bytes | None]


class EntryLog:
    # set by Store
    _db: sqlite3.Connection
    _actor_ids: dict[str, int]
    _actor_names: dict[int, str]
    # The log's last position, as the last append left it (None: read it). Every apply and
    # commit asks for it, often twice; a query each time was 3 statements of 13 per applied
    # entry. Whatever deletes entries or rolls back forgets it (`forget_last_position`).
    _last_position: int | None = None

    def share_id(self, name: str) -> int:
        raise NotImplementedError

    def actor_id(self, name: str) -> int:
        raise NotImplementedError

    def heads(self, share: str) -> dict[str, tuple[int, bytes]]:
        rows = self._db.execute(
            "SELECT actor, seq, hash FROM heads WHERE share=?", (self.share_id(share),)
        )
        return {self._actor_names[actor]: (seq, hash_) for actor, seq, hash_ in rows}

    def set_head(self, share: str, actor: str, seq: int, entry_hash: bytes) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO heads(share, actor, seq, hash) VALUES(?, ?, ?, ?)",
            (self.share_id(share), self.actor_id(actor), seq, entry_hash),
        )

    def append_entries(
        self, share: str, rows: Iterable[tuple[str, int, bytes, bytes | None]]
    ) -> int:
        """Append `(actor, seq, raw, signature)` rows in the given order; returns the last lseq."""
        share_id = self.share_id(share)
        pending = iter(rows)
        last = None
        # multi-row statements, as in `insert_new_records`: a catch-up appends one row per entry
        while chunk := list(islice(pending, ROWS_PER_INSERT)):
            params: list[object] = []
            for actor, seq, raw, sig in chunk:
                params += (share_id, self.actor_id(actor), seq, raw, sig)
            # an INTEGER PRIMARY KEY left to SQLite is max(lseq) + 1: the last row is the max
            last = self._db.execute(_append_entries_sql(len(chunk)), params).lastrowid
        if last is None:
            return self.last_lseq()
        self._last_position = last
        return last

    def last_lseq(self) -> int:
        if self._last_position is None:
            found = self._db.execute("SELECT coalesce(max(lseq), 0) FROM entries").fetchone()
            self._last_position = int(found[0])
        return self._last_position

    def forget_last_position(self) -> None:
        """After entries were deleted, or a transaction that appended some rolled back."""
        self._last_position = None

    def lseq_of(self, share: str, actor: str, seq: int) -> int | None:
        actor_id = self._actor_ids.get(actor)
        if actor_id is None:
            return None
        row = self._db.execute(
            "SELECT lseq FROM entries WHERE share=? AND actor=? AND seq=?",
            (self.share_id(share), actor_id, seq),
        ).fetchone()
        return None if row is None else int(row[0])

    def entries_after(
        self,
        share: str | None,
        lseq: int,
        limit: int,
        max_bytes: int | None = None,
        skip: Iterable[str] = (),
    ) -> list[StoredEntry]:
        """`(lseq, actor, seq, raw, signature)` in local apply order, which is a causal order; no
        more rows than needed to reach `max_bytes` of raw entries (entries can be megabytes).
        The entries of the actors in `skip` are left out by SQLite (they are never read)."""
        if share is None:
            rows = self._db.execute(
                "SELECT lseq, actor, seq, raw, sig FROM entries WHERE lseq>? ORDER BY lseq LIMIT ?",
                (lseq, limit),
            )
        else:
            skipped = [self._actor_ids[a] for a in skip if a in self._actor_ids]
            rows = self._db.execute(
                "SELECT lseq, actor, seq, raw, sig FROM entries WHERE share=? AND lseq>?"
                f"{_not_in('actor', len(skipped))} ORDER BY lseq LIMIT ?",
                (self.share_id(share), lseq, *skipped, limit),
            )
        found: list[StoredEntry] = []
        size = 0
        for lseq_, actor, seq, raw, sig in rows:
            found.append((lseq_, self._actor_names[actor], seq, raw, sig))
            size += len(raw)
            if max_bytes is not None and size >= max_bytes:
                break
        return found

    def entries_before(
        self, share: str, lseq: int | None, limit: int
    ) -> list[tuple[int, str, int, bytes]]:
        """`(lseq, actor, seq, raw)` of a share's entries before position `lseq` (None: from the
        newest), newest first: the history of a record reads back from the end."""
        rows = self._db.execute(
            "SELECT lseq, actor, seq, raw FROM entries WHERE share=? AND lseq<? ORDER BY lseq DESC"
            " LIMIT ?",
            (self.share_id(share), (1 << 63) - 1 if lseq is None else lseq, limit),
        )
        return [(lseq_, self._actor_names[actor], seq, raw) for lseq_, actor, seq, raw in rows]

    def entry(self, share: str, actor: str, seq: int) -> bytes | None:
        actor_id = self._actor_ids.get(actor)
        row = self._db.execute(
            "SELECT raw FROM entries WHERE share=? AND actor=? AND seq=?",
            (self.share_id(share), actor_id, seq),
        ).fetchone()
        return None if row is None else bytes(row[0])

    def remove_entries_after(self, share: str, actor: str, seq: int) -> list[bytes]:
        """Delete an actor's entries after `seq` (a revocation's cut); returns their bytes."""
        actor_id, share_id = self._actor_ids.get(actor), self.share_id(share)
        rows = self._db.execute(
            "SELECT lseq, raw FROM entries WHERE share=? AND actor=? AND seq>?",
            (share_id, actor_id, seq),
        ).fetchall()
        self._db.execute(
            "DELETE FROM entries WHERE share=? AND actor=? AND seq>?", (share_id, actor_id, seq)
        )
        self.forget_last_position()
        # their positions may be used again by later entries, which must not inherit these
        self._db.executemany(
            "DELETE FROM deleted_values WHERE lseq=?", ((lseq,) for lseq, _ in rows)
        )
        return [bytes(raw) for _, raw in rows]

    def signed_run(
        self, share: str, actor: str, from_seq: int, through_seq: int
    ) -> list[tuple[bytes, bytes | None]]:
        """An actor's entries from `from_seq` up to and including the first one at or after
        `through_seq` stored with a signature (empty if there is none), at most a few MiB."""
        rows = self._db.execute(
            "SELECT seq, raw, sig FROM entries WHERE share=? AND actor=? AND seq>=? ORDER BY seq",
            (self.share_id(share), self._actor_ids.get(actor), from_seq),
        )
        run: list[tuple[bytes, bytes | None]] = []
        size = 0
        for seq, raw, sig in rows:
            run.append((bytes(raw), None if sig is None else bytes(sig)))
            size += len(raw)
            if sig is not None and seq >= through_seq:
                return run
            if size > 2 * 1024 * 1024:
                break
        return []

    def signed_entry(self, share: str, actor: str, seq: int) -> tuple[bytes, bytes] | None:
        """An entry with the signature stored beside it, if it has one."""
        row = self._db.execute(
            "SELECT raw, sig FROM entries WHERE share=? AND actor=? AND seq=? AND sig IS NOT NULL",
            (self.share_id(share), self._actor_ids.get(actor), seq),
        ).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    def remove_head(self, share: str, actor: str) -> None:
        self._db.execute(
            "DELETE FROM heads WHERE share=? AND actor=?",
            (self.share_id(share), self._actor_ids.get(actor)),
        )

    def save_deleted_values(self, rows: Iterable[tuple[int, str, str, bytes]]) -> None:
        """`(lseq, collection, key, value)`: what each delete replaced (see the schema)."""
        self._db.executemany(
            "INSERT OR REPLACE INTO deleted_values(lseq, coll, key, value) VALUES(?, ?, ?, ?)",
            rows,
        )

    def deleted_values(self, low: int, high: int) -> dict[tuple[int, str, str], bytes]:
        """What the deletes at positions `low` to `high` replaced, by (lseq, collection, key)."""
        rows = self._db.execute(
            "SELECT lseq, coll, key, value FROM deleted_values WHERE lseq BETWEEN ? AND ?",
            (low, high),
        )
        return {(lseq, coll, key): bytes(value) for lseq, coll, key, value in rows}


@cache
def _append_entries_sql(rows: int) -> str:
    values = ",".join(["(?,?,?,?,?)"] * rows)
    return f"INSERT INTO entries(share, actor, seq, raw, sig) VALUES{values}"


def _not_in(column: str, count: int) -> str:
    """An `AND column NOT IN (...)` clause for `count` parameters ("" for none)."""
    return f" AND {column} NOT IN ({','.join('?' * count)})" if count else ""
