"""The sending side of one sync session, and what the sessions of a daemon tell each other (trio).

`Link` owns, for one session: a sender per share (entries the peer lacks, in causal order,
skipping what the peer's own writers deliver to it), the peer's announced claims and the
rewinds they trigger, and the announcer that sends the peer `have` and `direct` messages.
`Neighbourhood` holds the links of the daemon: our claims (whose writers deliver to us), and
which links to tell when entries reach us by relay. The rules are pure, in `relay.py`; the
messages are in `session.py`. See "Each entry crosses each link once" in docs/architecture.md.
"""

import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial

import trio

from . import relay
from .change_notifier import KeptEntry, Stored, StoredSince
from .history.snapshot import CHUNK_BYTES, Offer, decode_row, hold_seconds, pack_offer
from .node import Node
from .replica import SEND_BATCH_BYTES, Replica, WireItem
from .session import SyncConnection, lacks_snapshots
from .session_events import Direct

log = logging.getLogger("p2psync.peers")

# what we send of our heads for the peer to compare (a fork of equal length shows only there)
EQUAL_HEADS_BYTES = 2 * 1024 * 1024
# rows per snapshot frame; tests make it small so that a transfer takes many frames
SNAPSHOT_CHUNK_BYTES = int(os.environ.get("P2PSYNC_TEST_SNAPSHOT_CHUNK_BYTES") or CHUNK_BYTES)
# the longest a snapshot transfer may hold compaction back; tests make it short
SNAPSHOT_HOLD_SECONDS = float(os.environ.get("P2PSYNC_TEST_SNAPSHOT_HOLD_SECONDS") or 0)


class Neighbourhood:
    """The links of one daemon that know their peer's actor; our claims come from them."""

    def __init__(self) -> None:
        self.links: set[Link] = set()
        self._claims: dict[str, frozenset[str]] | None = None

    def claims(self) -> dict[str, frozenset[str]]:
        if self._claims is None:
            self._claims = relay.claims(
                (link.peer_actor, link.connection.common_shares)
                for link in self.links
                if link.peer_actor is not None
            )
        return self._claims

    def join(self, link: "Link") -> None:
        self.links.add(link)
        self.changed()

    def leave(self, link: "Link") -> None:
        if link in self.links:
            self.links.discard(link)
            self.changed()

    def changed(self) -> None:
        self._claims = None
        for link in self.links:
            link.wake()

    def received(self, source: "Link", share: str, actors: Mapping[str, int]) -> None:
        """Entries arrived over `source`: the other peers hear at once of the relayed ones."""
        relayed = set(actors) - self.claims().get(share, frozenset())
        if not relayed:
            return
        for link in self.links:
            if link is not source and share in link.connection.common_shares:
                link.outbox.note(share, relayed)
                link.wake()


class Link:
    """One session's senders and announcer. `known(share)` is the peer's known vector, which
    the session's receiver raises too; it is read and raised on the database thread only."""

    def __init__(
        self,
        node: Node,
        neighbourhood: Neighbourhood,
        connection: SyncConnection,
        known: Callable[[str], dict[str, int]],
        send: Callable[[bytes], Awaitable[None]],
        on_sent: Callable[[int], None],
        end_session: Callable[[str], None],
        part: Callable[[str], None],
    ) -> None:
        self.node = node
        self.replica: Replica = node.replica
        self.our_actor = node.replica.actor
        self.neighbourhood = neighbourhood
        self.connection = connection
        self.known = known
        self.send = send
        self.on_sent = on_sent
        self.end_session = end_session  # ends the session, no bye
        self.part = part  # ends the session, telling the peer why in a bye
        self.peer_actor: str | None = None
        self.peer_claims: dict[str, frozenset[str]] = {}
        self.outbox = relay.Outbox()
        self._rewind: set[str] = set()
        self._wake = trio.Event()
        self._started = False
        # share -> the vector the peer has from us (hello digests that matched, or our vector
        # message): a caught_up then carries only what differs, so a reconnect with nothing new
        # stays a small hello and an empty caught_up each way
        self.told: dict[str, dict[str, int]] = {}
        self.compare_heads: set[str] = set()  # shares whose hello digests differed
        # share -> the peer's answer to our snapshot start: where to resume (None: the start)
        self._snapshot_from: dict[str, tuple[trio.Event, list[tuple[str, str] | None]]] = {}

    @property
    def peer_device(self) -> str:
        """The peer's device id (senders start after its hello, which proved it)."""
        peer = self.connection.peer_device_id
        assert peer is not None
        return peer

    def start(self, nursery: trio.Nursery) -> None:
        """Once the peer said hello: join the neighbourhood and start announcing."""
        if not self._started:
            self._started = True
            self.neighbourhood.join(self)
            nursery.start_soon(self._announce)

    def stop(self) -> None:
        self.neighbourhood.leave(self)

    def wake(self) -> None:
        self._wake.set()

    # from the peer --------------------------------------------------------------------------

    def on_direct(self, event: Direct) -> None:
        """The peer's claims changed: senders skip the new ones and rewind for the lost ones."""
        gone = relay.lost(self.peer_claims, event.shares)
        self.peer_claims = event.shares
        if gone:
            self._rewind.update(gone)
            self.node.changes.wake_all()
        if event.actor != self.peer_actor:
            self.peer_actor = event.actor
            self.neighbourhood.changed()

    def on_snapshot_from(self, share: str, after: tuple[str, str] | None) -> None:
        waiting = self._snapshot_from.get(share)
        if waiting is not None and not waiting[0].is_set():
            waiting[1].append(after)
            waiting[0].set()

    async def on_have(self, share: str, vector: Mapping[str, int]) -> None:
        await self.node.call(relay.raise_to, self.known(share), vector)

    # to the peer ----------------------------------------------------------------------------

    async def send_share(self, share: str) -> None:
        known = self.known(share)
        if share in self.compare_heads:
            await self._send_equal_heads(share, known)
        if await self.node.call(self.replica.folded_beyond, share, known):
            if self.connection.peer_takes_snapshots:
                await self._send_snapshot(share, known)
            else:
                # what it would get next chains on entries it can never have: a bye telling
                # its user what to do, not a session that stays stuck without a word
                self.part(lacks_snapshots(self.replica.device_id, self.peer_device, share))
                return
        changes = self.node.changes
        cursor = await self.node.call(self.replica.cursor_for, share, known)
        caught_up_sent = False
        idle = False  # the last read found nothing to send (and raised known to all we hold)
        while True:
            if share in self._rewind:
                self._rewind.discard(share)
                cursor = await self.node.call(self.replica.cursor_for, share, known)
                idle = False
                continue  # the claims may have changed again meanwhile
            # no await between the rewind check and this: a claim that went is never skipped
            skip = relay.skipped(self.peer_claims, share, self.our_actor)
            if idle:
                if cursor >= changes.position:
                    # woken only for what may be for the peer, or when a claim went (on_direct)
                    wants = partial(_may_lack, share=share, known=known, skip=skip)
                    cursor = await changes.follow(cursor, wants)
                    continue
                unsent = _unsent(changes.stored_after(cursor), share, known, skip)
                if unsent is not None:
                    # what was stored since is the peer's writers' to send, the peer's already
                    # (in a full mesh, every entry that reaches us) or our commits, kept whole:
                    # no read, no wake-up of the database thread
                    cursor = changes.position
                    if unsent:
                        # Raised here, not on the database thread: these are our own actor's,
                        # which that thread raises only in this task's reads (never under way
                        # now) or when the peer sends them back (a restored device; a race
                        # then can only leave `known` lower, which costs a resend)
                        relay.raise_to(known, {e.actor: e.seq for e in unsent})
                        await self.send(
                            self.connection.send_entries(
                                share, [(e.raw, e.signature) for e in unsent]
                            )
                        )
                        self.on_sent(len(unsent))
                    continue
            items, cursor, vector = await self.node.call(
                _next_batch, self.replica, share, cursor, known, skip, self.peer_device
            )
            if vector is None:
                return  # removed from the share: its session restarts without it
            idle = not items
            if items:
                await self.send(self.connection.send_entries(share, items))
                self.on_sent(len(items))
                continue
            if not caught_up_sent:
                told = self.told.get(share, {})
                news = {actor: seq for actor, seq in vector.items() if told.get(actor) != seq}
                await self.send(self.connection.send_caught_up(share, news))
                caught_up_sent = True

    async def _send_snapshot(self, share: str, known: dict[str, int]) -> None:
        """The baseline the peer lacks, in chunks from where its staged copy ends; then the
        peer holds B, and the log after B follows as usual. Compaction leaves the share alone
        from before the offer is read until the end (`baseline_holds`), for at most
        `hold_seconds`: a transfer that takes longer ends the session (the peer resumes in the
        next one, from the rows it kept, if the baseline is still the same)."""
        holds = self.replica.baseline_holds
        holds.take(share)  # before the offer: a fold under way ends before it is read
        try:
            offer = await self.node.call(self.replica.snapshot_offer, share, dict(known))
            if offer is None:
                log.warning(
                    "%s lacks folded entries of share %s, and this device's reports do not name"
                    " its baseline yet: a snapshot waits for its next report",
                    self.peer_device,
                    share,
                )
                return
            limit = SNAPSHOT_HOLD_SECONDS or hold_seconds(offer)
            with trio.move_on_after(limit) as deadline:
                await self._stream_snapshot(share, offer)
        finally:
            holds.release(share)
        if deadline.cancelled_caught:
            reason = f"its snapshot of share {share} took over {limit:g} s"
            log.warning("ending the session with %s: %s", self.peer_device, reason)
            self.end_session(reason)
            await trio.sleep_forever()  # the session's end cancels this sender
        await self.node.call(relay.raise_to, known, offer.frontier)

    async def _stream_snapshot(self, share: str, offer: Offer) -> None:
        answered = self._snapshot_from[share] = (trio.Event(), [])
        await self.send(self.connection.send_snap_start(share, pack_offer(offer)))
        await answered[0].wait()
        after = answered[1][0]
        log.info("sending %s a snapshot of share %s (%d rows)", self.peer_device, share, offer.rows)
        while rows := await self.node.call(
            self.replica.snapshot_rows, share, after, SNAPSHOT_CHUNK_BYTES
        ):
            await self.send(self.connection.send_snap_rows(share, rows))
            self.on_sent(len(rows))
            after = decode_row(rows[-1])[0]
        await self.send(self.connection.send_snap_end(share))

    async def _send_equal_heads(self, share: str, known: dict[str, int]) -> None:
        """Once per session whose hello digests differed: our signed heads where the peer holds
        the same seq, so two histories of equal length are seen (bounded, in small frames)."""
        heads = await self.node.call(self.replica.equal_heads, share, dict(known))
        batch: list[tuple[bytes, bytes | None]] = []
        size = 0
        for raw, signature in heads:
            if size + len(raw) > EQUAL_HEADS_BYTES:
                break
            batch.append((raw, signature))
            size += len(raw)
            if len(batch) == 256:
                await self.send(self.connection.send_entries(share, batch))
                batch = []
        if batch:
            await self.send(self.connection.send_entries(share, batch))

    async def _announce(self) -> None:
        """Tell the peer what we hold of relayed actors, and of claimed ones when the claim
        goes, then our claims when they change; everything waiting goes in one write."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            shared = self.connection.common_shares  # claims of other shares are not its business
            ours = {s: a for s, a in self.neighbourhood.claims().items() if s in shared}
            wanted = self.outbox.wanted(ours, self.peer_actor)
            frames = []
            if wanted:
                held = await self.node.call(_seqs_of, self.replica, wanted)
                for share, vector in sorted(self.outbox.news(held).items()):
                    frames.append(self.connection.send_have(share, vector))
            if self.outbox.direct_due(ours):
                # after the haves of the actors it drops, so the peer rewinds no further back
                frames.append(self.connection.send_direct(self.our_actor, ours))
                self.outbox.announced = dict(ours)
            if frames:
                await self.send(b"".join(frames))


def _unsent(
    since: StoredSince | None,
    share: str,
    known: Mapping[str, int],
    skip: frozenset[str],
) -> list[KeptEntry] | None:
    """What the peer lacks of what was stored since a sender's cursor (see
    ChangeNotifier.stored_after), when that is known without a read: the kept entries of `share`
    it lacks, if every other entry stored since is of an actor in `skip` or held by the peer.
    None: read the log. `known` is raised on the database thread, and only ever raised: a seq
    read here that covers an entry is true (a stale one only costs a read)."""
    if since is None:
        return None
    return _lacking(since.seqs, since.entries, share, known, skip)


def _may_lack(stored: Stored, share: str, known: Mapping[str, int], skip: frozenset[str]) -> bool:
    """Whether the peer may lack an entry of `share` that one apply or commit stored."""
    return _lacking(stored.seqs, stored.entries, share, known, skip) != []


def _lacking(
    seqs: Mapping[str, Mapping[str, int]],
    entries: Sequence[KeptEntry],
    share: str,
    known: Mapping[str, int],
    skip: frozenset[str],
) -> list[KeptEntry] | None:
    """`_unsent` of stored entries named by `seqs` (per share, actor -> highest seq) and kept
    `entries`."""
    if not all(
        actor in skip or known.get(actor, 0) >= seq for actor, seq in seqs.get(share, {}).items()
    ):
        return None
    unsent = [
        e
        for e in entries
        if e.share == share and e.actor not in skip and e.seq > known.get(e.actor, 0)
    ]
    if sum(len(e.raw) for e in unsent) > SEND_BATCH_BYTES:
        return None  # several commits' worth: the log is read in batches that fit a message
    return unsent


# on the database thread -------------------------------------------------------------------------


def _next_batch(
    replica: Replica,
    share: str,
    cursor: int,
    known: dict[str, int],
    skip: frozenset[str],
    peer: str,
) -> tuple[list[WireItem], int, dict[str, int] | None]:
    """The next entries the peer lacks, less the skipped actors'; when there are none, the peer
    is about to hold all we have of the others, so `known` rises to our vector for them
    (returned whole for the caught_up message). None instead of a vector: the peer was removed
    from the share. Checked here, on the database thread, with the read: an entry committed
    after the removal is never sent, even before the session restarts without the share."""
    if replica.was_removed_from(share, peer):
        return [], cursor, None
    items, cursor = replica.entries_after(share, cursor, relay.Skipping(known, skip), skip=skip)
    vector: dict[str, int] = {}
    if not items:
        relay.raise_to(known, relay.without(replica.summary_vector(share), skip))
        vector = replica.wire_vector(share)  # closed epochs held to their end are implied
    return items, cursor, vector


def _seqs_of(
    replica: Replica, wanted: Mapping[str, Sequence[str] | set[str]]
) -> dict[str, dict[str, int]]:
    found = {}
    for share, actors in wanted.items():
        vector = replica.summary_vector(share)
        found[share] = {actor: vector.get(actor, 0) for actor in actors}
    return found
