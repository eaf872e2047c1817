"""The store's schema: its version and the SQL steps that take a database from each version to the
next (pure data).

`store.py` runs the steps; this module only holds them, so the store's queries read whole without
the history of its tables. A released step is never edited: a change to the schema is a new step,
with a fixture of the previous release's state dir and an upgrade test (tests/test_upgrade.py).
"""

SCHEMA_VERSION = 5
# Each step takes a database at version N-1 to version N; never edit a released step, add one.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE meta(key TEXT PRIMARY KEY, value BLOB)",
        "CREATE TABLE shares(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
        "CREATE TABLE actors(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
        "CREATE TABLE heads(share INTEGER NOT NULL, actor INTEGER NOT NULL, seq INTEGER NOT NULL,"
        " hash BLOB NOT NULL, PRIMARY KEY(share, actor)) WITHOUT ROWID",
        "CREATE TABLE entries(lseq INTEGER PRIMARY KEY, share INTEGER NOT NULL,"
        " actor INTEGER NOT NULL, seq INTEGER NOT NULL, raw BLOB NOT NULL, sig BLOB)",
        "CREATE UNIQUE INDEX entries_by_actor ON entries(share, actor, seq)",
        # a share's entries in apply order: catch-up reads them from a point on, never the whole log
        "CREATE INDEX entries_by_share ON entries(share, lseq)",
        # WITHOUT ROWID: the primary key is the only b-tree, so a record costs one insert, not two
        "CREATE TABLE records(share INTEGER NOT NULL, coll TEXT NOT NULL, key TEXT NOT NULL,"
        " siblings BLOB NOT NULL, deleted INTEGER NOT NULL, conflict INTEGER NOT NULL,"
        " PRIMARY KEY(share, coll, key)) WITHOUT ROWID",
        "CREATE INDEX records_conflicts ON records(share, coll, key) WHERE conflict",
    ),
    2: (
        # what `status` shows, kept up to date by every record write so reading it costs one row
        # whatever the size of the store: live records and conflicting records, both outside the
        # system collections (named '_...')
        "CREATE TABLE counts(share INTEGER PRIMARY KEY, live INTEGER NOT NULL,"
        " conflicts INTEGER NOT NULL)",
        "INSERT INTO counts(share, live, conflicts) SELECT share, sum(NOT deleted), sum(conflict)"
        " FROM records WHERE coll NOT LIKE '\\_%' ESCAPE '\\' GROUP BY share",
    ),
    3: (
        # the value each delete replaced here (its record's winner just before), by the local
        # position of the delete's entry: `watch` shows it, and the log cannot say it (entries
        # hold ops, not the state they were applied to). Deletes of nothing live have no row.
        "CREATE TABLE deleted_values(lseq INTEGER NOT NULL, coll TEXT NOT NULL,"
        " key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY(lseq, coll, key)) WITHOUT ROWID",
    ),
    4: (
        # Compaction (issue 11, history/compaction.py): each share's state at its frontier B (the
        # siblings of every record as of B, tombstones included until purged) and B itself. The
        # entries within B are folded into it and gone from `entries` (but each epoch's first
        # entry, which says what the epoch retires); `records` stays the live state.
        "CREATE TABLE baseline(share INTEGER NOT NULL, coll TEXT NOT NULL, key TEXT NOT NULL,"
        " siblings BLOB NOT NULL, tombstone INTEGER NOT NULL, PRIMARY KEY(share, coll, key))"
        " WITHOUT ROWID",
        "CREATE INDEX baseline_tombstones ON baseline(share, coll, key) WHERE tombstone",
        # written: per actor, the newest folded entry that is more than a stability report
        "CREATE TABLE baselines(share INTEGER PRIMARY KEY, frontier BLOB NOT NULL,"
        " written BLOB NOT NULL)",
    ),
    5: (
        # Snapshot bootstrap (history/snapshot.py, history/bootstrap.py): the snapshot a device
        # is receiving for a share (its start, packed, with the progress so far) and the rows
        # received, kept across restarts so an interrupted transfer resumes after the last key.
        "CREATE TABLE snapshot_offers(share INTEGER PRIMARY KEY, offer BLOB NOT NULL,"
        " progress BLOB NOT NULL)",
        "CREATE TABLE snapshot_rows(share INTEGER NOT NULL, coll TEXT NOT NULL, key TEXT NOT NULL,"
        " row BLOB NOT NULL, PRIMARY KEY(share, coll, key)) WITHOUT ROWID",
    ),
}
