"""The control socket's `watch`: a connection turned into a stream of what happens here (trio).

It owns where a watch starts (`since`), which changes it sends (collection, share, record type
and schema versions, and for an app what its grants cover) and how: read from the store a page
at a time, in apply order, each exactly once, as fast as the client reads and no faster; then the
`caught_up` marker once replay reaches the head, `heartbeat`s on a quiet stream, and the other
events a client asks for (`peer`, `synced`, `conflict`, `membership`), taken from the daemon's
event bus (`events.py`) as they happen; and `outdated` for a client that declared in `hello`
which schema versions it reads, once per newer version of a type the share holds (at the start,
then as changes show one). It never buffers more than a page of changes for a slow reader, drops
a watcher whose other events pile up past the bus's bound, and never changes data (nor rewrites
a record for an old reader).
"""

import logging
import math
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from itertools import groupby
from typing import Any

import trio

from ..events import Subscription
from ..node import Node
from ..replica import Change
from ..schemas.manifest import SCHEMA, decode_type, meta_type
from ..shares.rules import unknown_share
from .api import TypeFilter, change_json, type_filter_param
from .connection import Follow, Reads, Send
from .errors import BAD_REQUEST, NOT_FOUND, RequestError
from .lines import json_line
from .methods_data import Covers
from .writes import collection_param, param, share_param

log = logging.getLogger("p2psync.control")

WATCH_PAGE_ENTRIES = 64
WATCH_SEND_BYTES = 64 * 1024  # events go out together up to this much, not one send each
HEARTBEAT_SECONDS = (1, 3600)
EVENT_BUFFER = 1024  # events other than changes waiting for one watcher before it is dropped

CHANGE = "change"
OUTDATED = "outdated"
EVENT_KINDS = (CHANGE, "conflict", "membership", OUTDATED, "peer", "synced")
ADMIN_EVENTS = frozenset({"membership", "peer"})  # about devices: no app grant covers them


@dataclass
class _Watch:
    since: int
    collection: str | None
    share: str | None
    kinds: frozenset[str]
    heartbeat: float | None
    types: TypeFilter | None = None
    reads: Reads = field(default_factory=dict)
    covers: Covers | None = None  # None: an admin, who may read everything
    told: dict[tuple[str, str], int] = field(default_factory=dict)  # (share, type) -> version

    @property
    def follows_changes(self) -> bool:
        return bool({CHANGE, OUTDATED} & self.kinds)

    def wants(self, change: Change) -> bool:
        wanted = self.types is None or self.types.matches(change.op.meta)
        return wanted and self.follows(change.share, change.op.collection)

    def follows(self, share: str, collection: str | None) -> bool:
        """Whether this watch is about `collection` of `share` (None: the share as a whole, as
        for its manifest), and may read it."""
        if self.share not in (None, share):
            return False
        if collection is not None and self.collection not in (None, collection):
            return False
        return self.covers is None or self.covers(share, collection or self.collection)

    def outdated(self, share: str, name: str | None, version: int | None) -> dict[str, Any] | None:
        """The `outdated` event that a record or manifest of type `name` at `version` in
        `share` makes, once per newer version; None: nothing new for this reader."""
        if OUTDATED not in self.kinds or name is None or version is None:
            return None
        understood = self.reads.get(name)
        if understood is None or version <= max(understood, self.told.get((share, name), 0)):
            return None
        self.told[(share, name)] = version
        return {
            "event": OUTDATED,
            "share": share,
            "type": name,
            "schema_version": version,
            "reads": understood,
        }

    def wants_event(self, event: dict[str, Any]) -> bool:
        """Events that name a share (or a collection) are filtered like changes; `peer` and
        device `membership` events name none, and pass."""
        if event["event"] not in self.kinds:
            return False
        share, collection = event.get("share"), event.get("collection")
        if share is None:
            return self.covers is None  # about devices: for admins only
        if self.share not in (None, share):
            return False
        if collection is not None and self.collection not in (None, collection):
            return False
        return self.covers is None or self.covers(share, collection)


async def start_watch(
    node: Node, request: dict[str, Any], reads: Reads, covers: Covers | None = None
) -> tuple[dict[str, Any], Follow]:
    """`watch` answers with its start position, then sends what follows as it comes; with
    `covers`, only the changes and events of the (share, collection) it allows. `reads`: what
    the connection said in `hello` it understands."""
    since: int | None = param(request, "since", int, None)
    collection = collection_param(request) if request.get("collection") is not None else None
    share = share_param(request) if request.get("share") is not None else None
    kinds, heartbeat = _kinds(request, reads), _heartbeat(request)
    types = type_filter_param(request)
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
    watch = _Watch(since, collection, share, kinds, heartbeat, types, reads, covers)
    return {"position": since}, lambda send: _follow(node, watch, send)


def _kinds(request: dict[str, Any], reads: Reads) -> frozenset[str]:
    """The event kinds asked for: changes by default, and `outdated` for a reader that declared
    what it reads."""
    listed: list[Any] = param(request, "events", list, [CHANGE, OUTDATED] if reads else [CHANGE])
    unknown = [kind for kind in listed if kind not in EVENT_KINDS]
    if not listed or unknown:
        raise RequestError(
            BAD_REQUEST,
            f"'events' must list some of {', '.join(EVENT_KINDS)}"
            + (f" (not {', '.join(repr(k) for k in unknown)})" if unknown else ""),
        )
    if OUTDATED in listed and not reads:
        raise RequestError(
            BAD_REQUEST,
            "'outdated' events need the connection's hello to declare what it reads: "
            '"reads": {"<type>": {"max_schema_version": n}}',
        )
    return frozenset(listed)


def _heartbeat(request: dict[str, Any]) -> float | None:
    seconds = request.get("heartbeat")
    if seconds is None:
        return None
    low, high = HEARTBEAT_SECONDS
    valid = isinstance(seconds, int | float) and not isinstance(seconds, bool)
    if not valid or not low <= seconds <= high:
        raise RequestError(
            BAD_REQUEST, f"'heartbeat' must be a number of seconds from {low} to {high}"
        )
    return float(seconds)


class _Sender:
    """The stream's writes, and when it last wrote (a heartbeat fills a silence)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.last_sent = trio.current_time()

    async def send(self, lines: bytes) -> None:
        await self._send(lines)
        self.last_sent = trio.current_time()


async def _follow(node: Node, watch: _Watch, send: Send) -> None:
    others = watch.kinds - {CHANGE, OUTDATED}  # outdated comes from the changes
    subscribing = node.events.subscribe(EVENT_BUFFER) if others else nullcontext(None)
    node.watchers += watch.follows_changes  # writes keep their changes for us meanwhile
    try:
        with subscribing as events:  # live only: what happens from the first answer on
            await _stream(node, watch, _Sender(send), events)
    finally:
        node.watchers -= watch.follows_changes


async def _stream(node: Node, watch: _Watch, sender: _Sender, events: Subscription | None) -> None:
    position = watch.since
    caught_up = False
    follows_changes = watch.follows_changes
    if OUTDATED in watch.kinds:
        await _send_outdated_at_start(node, watch, sender)
    while True:
        if events is not None and not await _forward_events(watch, events, sender):
            return
        if follows_changes:
            position, more = await _send_page(node, watch, position, sender)
            if more:
                continue
        else:
            position = node.changes.position
        if not caught_up:
            await sender.send(json_line({"event": "caught_up", "position": position}))
            caught_up = True
        deadline = sender.last_sent + watch.heartbeat if watch.heartbeat else math.inf
        with trio.move_on_at(deadline) as quiet:
            # Positions are announced only once their entries are stored, so nothing is missed
            # by waiting now.
            if events is None:
                await node.changes.wait_beyond(position)
            elif not follows_changes:
                await events.wait()
            else:
                await _first_of(partial(node.changes.wait_beyond, position), events.wait)
        if quiet.cancelled_caught:
            head = position if follows_changes else node.changes.position
            await sender.send(json_line({"event": "heartbeat", "position": head}))


async def _send_page(node: Node, watch: _Watch, position: int, sender: _Sender) -> tuple[int, bool]:
    """Send the wanted changes of the next page; (the position reached, whether the page was
    full, so that more may follow at once). Live, the page is what the latest writes kept for
    watchers; a watcher further behind reads the log."""
    kept = node.changes.changes_after(position, WATCH_PAGE_ENTRIES)
    if kept is None:
        changes = await node.call(node.replica.changes, position, WATCH_PAGE_ENTRIES)
        reach, more = (changes[-1].lseq if changes else position), None
    else:
        changes, reach, more = kept
    unsent = bytearray()
    entries = 0
    for lseq, ops in groupby(changes, key=lambda change: change.lseq):
        entries += 1
        listed = list(ops)
        if OUTDATED in watch.kinds:
            unsent += b"".join(json_line(event) for event in _outdated_by(watch, listed))
        wanted = [c for c in listed if watch.wants(c)] if CHANGE in watch.kinds else []
        if wanted:
            event = {
                "event": CHANGE,
                "position": lseq,
                "share": wanted[0].share,
                "hlc": wanted[0].hlc,
                "changes": [change_json(c) for c in wanted],
            }
            unsent += json_line(event)
            if len(unsent) >= WATCH_SEND_BYTES:
                await sender.send(bytes(unsent))
                unsent.clear()
    if unsent:
        await sender.send(bytes(unsent))
    return reach, entries == WATCH_PAGE_ENTRIES if more is None else more


def _outdated_by(watch: _Watch, changes: list[Change]) -> list[dict[str, Any]]:
    """The `outdated` events that changes make: records of a newer version, or a manifest whose
    `current` went past what the reader understands."""
    found = []
    for change in changes:
        op = change.op
        named: str | None = op.key
        if op.collection == SCHEMA and watch.follows(change.share, None):
            manifest = decode_type(op.key, op.value)
            version = manifest.current if manifest is not None else None
        elif op.value is not None and watch.follows(change.share, op.collection):
            named, version = meta_type(op.meta)
        else:
            continue
        event = watch.outdated(change.share, named, version)
        if event is not None:
            found.append(event)
    return found


async def _send_outdated_at_start(node: Node, watch: _Watch, sender: _Sender) -> None:
    """What the shares already hold that is newer than the reader understands: in the
    collections it watches and may read, and in the manifests."""
    names = sorted(watch.reads)
    shares = [watch.share] if watch.share else await node.call(node.replica.shares)
    found = []
    for share in (s for s in shares if watch.follows(s, None)):
        collections = [watch.collection] if watch.collection else None
        if collections is None and watch.covers is not None:  # an app: what its grants cover
            counted = await node.call(node.replica.collections, share)
            collections = [c for c, _ in counted if watch.covers(share, c)]
        newest = await node.call(node.replica.newest_versions, share, names, collections)
        found += [watch.outdated(share, name, version) for name, version in sorted(newest.items())]
    lines = b"".join(json_line(event) for event in found if event is not None)
    if lines:
        await sender.send(lines)


async def _forward_events(watch: _Watch, events: Subscription, sender: _Sender) -> bool:
    """Send the bus's waiting events this watch wants; False when it fell too far behind."""
    if events.overflowed:
        log.info(
            "ending a watch that fell more than %d events behind; it may resume from its last "
            "position",
            EVENT_BUFFER,
        )
        return False
    lines = b"".join(json_line(e) for e in events.take() if watch.wants_event(e))
    if lines:
        await sender.send(lines)
    return True


async def _first_of(*waits: Callable[[], Awaitable[object]]) -> None:
    """Wait until the first of `waits` returns."""
    async with trio.open_nursery() as nursery:

        async def run(wait: Callable[[], Awaitable[object]]) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        for wait in waits:
            nursery.start_soon(run, wait)
