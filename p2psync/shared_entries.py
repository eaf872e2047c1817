"""Which transactions of a group commit share one log entry (pure: no store, no clock, no I/O).

Sixteen apps each putting one record at the same moment would otherwise cost sixteen entries:
sixteen hashes, log rows, head updates and WAL pages here, and sixteen entries for every peer to
decode and verify. Consecutive transactions on different records are written as one entry
instead. An entry is applied whole or not at all, so each transaction keeps its atomicity; they
share the entry's position, seq and dot, and since no two of them touch the same record, the
version each one answers is still the version of exactly the value it wrote.

It never merges a transaction that writes a reserved collection (`_members`, `_devices`,
`_schema`, `_forks`): the daemon's own writes there keep an entry each, as before.
"""

from collections.abc import Sequence

from .entry import Op

SHARED_ENTRY_OPS = 64
SHARED_ENTRY_BYTES = 64 * 1024  # far below entry.MAX_ENTRY_BYTES, whatever the ops' overhead


def op_bytes(op: Op) -> int:
    return len(op.collection) + len(op.key) + len(op.value or b"") + len(op.meta or b"")


def shared_entries(transactions: Sequence[Sequence[Op]]) -> tuple[list[list[Op]], list[int]]:
    """The entries to write for `transactions` (their ops, in order) and, for each transaction,
    the index of the entry it is in. A transaction joins the entry before it while that entry
    stays within SHARED_ENTRY_OPS ops and SHARED_ENTRY_BYTES, and neither writes a record the
    other writes or a reserved collection; one beyond those limits alone keeps an entry of its
    own, as every transaction did before."""
    entries: list[list[Op]] = []
    owners: list[int] = []
    keys: set[tuple[str, str]] = set()
    size = 0
    joinable = False  # whether the last entry may take more transactions
    for ops in transactions:
        # an empty one is refused by the commit: on its own, it takes no other one with it; a
        # large one (a batch of a thousand puts) is left as it is without looking at its ops
        alone = (
            not ops
            or len(ops) > SHARED_ENTRY_OPS
            or any(op.collection.startswith("_") for op in ops)
        )
        if alone:
            entries.append(list(ops))
            joinable = False
            owners.append(len(entries) - 1)
            continue
        touched = {(op.collection, op.key) for op in ops}
        ops_size = sum(map(op_bytes, ops))
        if (
            joinable
            and len(entries[-1]) + len(ops) <= SHARED_ENTRY_OPS
            and size + ops_size <= SHARED_ENTRY_BYTES
            and keys.isdisjoint(touched)
        ):
            entries[-1].extend(ops)
            keys |= touched
            size += ops_size
        else:
            entries.append(list(ops))
            keys, size, joinable = touched, ops_size, True
        owners.append(len(entries) - 1)
    return entries, owners
