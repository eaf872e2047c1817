"""The daemon's history timer (trio): every `history.interval`, for each share this device is in,
write its stability report when one is due and compact.

Runs only with `history.compaction` on. What is due is decided on the database thread by the
replica (history/stability.py's pure rules), the report goes through the node's group commit like
any local write, so peers' senders wake for it; compaction is one replica call, one SQLite
transaction. This module holds no rule of its own and never touches the store itself.
"""

import logging

import trio

from ..node import Node
from .compaction import Compacted
from .stability import HistoryPolicy

log = logging.getLogger("p2psync")


async def run_history(node: Node, policy: HistoryPolicy) -> None:
    last: dict[str, dict[str, int]] = {}
    while True:
        await history_tick(node, policy, last)
        await trio.sleep(policy.interval_ms / 1000)


async def history_tick(
    node: Node, policy: HistoryPolicy, last: dict[str, dict[str, int]] | None = None
) -> dict[str, Compacted]:
    """One round over the shares: reports that are due, then compaction. `last`: the stable
    frontier of each share at the previous round, kept up to date here (None: fold whatever is
    stable). Returns what each share's compaction did."""
    replica = node.replica
    done: dict[str, Compacted] = {}
    for share in await node.call(replica.shares):
        op = await node.call(replica.due_stability_op, share, policy)
        if op is not None:
            await node.commit(share, [op])
        previous = None if last is None else last.get(share, {})
        compacted = await node.call(replica.compact, share, policy.keep_for_absent_ms, previous)
        if last is not None:
            last[share] = compacted.stable
        if compacted.folded or compacted.purged:
            log.info(
                "share %s: %d log entries folded, %d deleted records purged",
                share,
                compacted.folded,
                compacted.purged,
            )
        against = await node.call(replica.contradicted_baseline, share)
        if against:
            log.warning(
                "share %s: the reports of %s name another baseline digest than this device's"
                " for the same folded writes (a forged snapshot?)",
                share,
                ", ".join(against),
            )
        done[share] = compacted
    return done
