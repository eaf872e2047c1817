"""The versions of one record that the log still holds, newest first (I/O via the store).

The log keeps every write until compaction (issue 11) folds it away; there is no index by
record, so `history_page` reads a share's entries back from the newest, a page at a time, and
decodes only those whose bytes hold the packed collection and key (a substring test in C: a
canonical entry holds them packed exactly so). A page is bounded, so the node's database thread
is never held for the whole log: the `history` method asks page after page. It never writes.
"""

from dataclasses import dataclass

import msgpack

from .. import entry as entries
from ..entry import Op
from ..store import Store

ENTRIES_PER_PAGE = 20_000


@dataclass(frozen=True, slots=True)
class Version:
    """One write of the record: the op, and the entry it came in."""

    position: int  # the entry's local position (lseq)
    actor: str
    seq: int
    hlc: int
    op: Op


def history_page(
    store: Store, share: str, collection: str, key: str, before: int | None
) -> tuple[list[Version], int | None]:
    """The record's writes among a page of the share's entries before position `before` (None:
    the newest), newest first, and where the next page starts (None: the log's start)."""
    rows = store.entries_before(share, before, ENTRIES_PER_PAGE)
    packed_collection, packed_key = msgpack.packb(collection), msgpack.packb(key)
    found: list[Version] = []
    for position, actor, seq, raw in rows:
        if packed_key not in raw or packed_collection not in raw:
            continue
        logged = entries.decode(raw)
        found.extend(
            Version(position, actor, seq, logged.hlc, op)
            for op in logged.ops
            if op.collection == collection and op.key == key
        )
    more = len(rows) == ENTRIES_PER_PAGE
    return found, rows[-1][0] if more else None
