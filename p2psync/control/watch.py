"""The control socket's `watch`: a connection turned into a stream of the changes applied here
(trio).

It owns where a watch starts (`since`), which changes it sends (collection, share, and for an
app what its grants cover) and how: read from the store a page at a time, in apply order, each
exactly once, as fast as the client reads and no faster. It never buffers more than a page for a
slow reader and never changes data.
"""

from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from ..node import Node
from ..replica import Change
from ..shares.rules import unknown_share
from .api import change_json, collection_param, param, share_param
from .connection import Follow, Send, json_line
from .errors import BAD_REQUEST, NOT_FOUND, RequestError

WATCH_PAGE_ENTRIES = 64
WATCH_SEND_BYTES = 64 * 1024  # events go out together up to this much, not one send each

# whether an app's grants let it read (share, collection); None: an admin, who reads everything
Covers = Callable[[str, str], bool]


@dataclass
class _Watch:
    since: int
    collection: str | None
    share: str | None
    covers: Covers | None = None

    def wants(self, change: Change) -> bool:
        collection_wanted = self.collection in (None, change.op.collection)
        wanted = collection_wanted and self.share in (None, change.share)
        return wanted and (self.covers is None or self.covers(change.share, change.op.collection))


async def start_watch(
    node: Node, request: dict[str, Any], covers: Covers | None = None
) -> tuple[dict[str, Any], Follow]:
    """`watch` answers with its start position, then sends change events as they come;
    with `covers`, only the changes of the (share, collection) it allows."""
    since: int | None = param(request, "since", int, None)
    collection = collection_param(request) if request.get("collection") is not None else None
    share = share_param(request) if request.get("share") is not None else None
    if share is not None and not await node.call(node.replica.holds, share):
        raise RequestError(NOT_FOUND, str(unknown_share(share)))
    last = await node.call(node.replica.last_position)
    if since is None:
        since = last
    elif not 0 <= since <= last:
        raise RequestError(
            BAD_REQUEST,
            f"'since' must be between 0 and this daemon's last position {last}; a position "
            "from another database is meaningless here: start again with since null",
        )
    watch = _Watch(since, collection, share, covers)
    return {"position": since}, lambda send: _send_changes(node, watch, send)


async def _send_changes(node: Node, watch: _Watch, send: Send) -> None:
    position = watch.since
    while True:
        changes = await node.call(node.replica.changes, position, WATCH_PAGE_ENTRIES)
        unsent = bytearray()
        entries = 0
        for lseq, ops in groupby(changes, key=lambda change: change.lseq):
            entries += 1
            position = lseq
            wanted = [c for c in ops if watch.wants(c)]
            if wanted:
                event = {
                    "event": "change",
                    "position": lseq,
                    "share": wanted[0].share,
                    "hlc": wanted[0].hlc,
                    "changes": [change_json(c) for c in wanted],
                }
                unsent += json_line(event)
                if len(unsent) >= WATCH_SEND_BYTES:
                    await send(bytes(unsent))
                    unsent.clear()
        if unsent:
            await send(bytes(unsent))
        if entries < WATCH_PAGE_ENTRIES:
            # A short page ended at the last entry there was; positions are announced only
            # once their entries are stored, so nothing is missed by waiting now.
            await node.changes.wait_beyond(position)
