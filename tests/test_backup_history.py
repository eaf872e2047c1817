"""The versions of a record the log holds (backup/history.py), read back page by page from a
real replica's store."""

from pathlib import Path

import msgpack
import pytest

from p2psync import entry
from p2psync.backup import history
from p2psync.shares import DEFAULT_SHARE
from tests.control_harness import open_replica


def test_a_records_writes_come_newest_first_across_pages_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "ENTRIES_PER_PAGE", 3)
    replica = open_replica(tmp_path / "replica.db")
    put = lambda collection, key, value: entry.put(collection, key, msgpack.packb(value))  # noqa: E731
    replica.commit(DEFAULT_SHARE, [put("c", "x", 1)])
    replica.commit(DEFAULT_SHARE, [put("c", "y", 2)])
    replica.commit(DEFAULT_SHARE, [put("x", "c", 3)])  # holds both names, swapped: not c/x
    replica.commit(DEFAULT_SHARE, [put("c", "y", 4), put("c", "x", 5)])  # one entry, two ops
    replica.commit(DEFAULT_SHARE, [put("cc", "xx", 6)])
    replica.commit(DEFAULT_SHARE, [entry.delete("c", "x")])
    found: list[history.Version] = []
    before = None
    pages = 0
    while True:
        page, before = history.history_page(replica.store, DEFAULT_SHARE, "c", "x", before)
        found += page
        pages += 1
        if before is None:
            break
    assert pages == 3  # 6 entries, 3 a page: the third finds none left
    shown = [(v.op.kind, v.op.value and msgpack.unpackb(v.op.value)) for v in found]
    assert shown == [(entry.DELETE, None), (entry.PUT, 5), (entry.PUT, 1)]
    assert [v.position for v in found] == sorted((v.position for v in found), reverse=True)
    assert {v.actor for v in found} == {replica.actor}
    assert found[1].seq == found[0].seq - 2
