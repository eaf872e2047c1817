"""One sync session's byte pump (trio): the receiver, the keep-alive, the silence watch and the
per-share senders.

It moves bytes between one TLS stream and its pure `SyncConnection`, hands received entries to
the replica on the database thread, and reports what the session showed (hello, trust, clocks,
offenders) back to the `PeerManager` that owns every session. It ends the session when the peer
has been silent too long, and pings when we have been; when is `liveness.py`'s to say. It never
decides whom to trust or dial, and never interprets entries itself.
"""

import logging
import os
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import trio

from . import __version__, hlc
from .change_notifier import Stored
from .entry import IntegrityError
from .history.bootstrap import ALL_HELD
from .history.snapshot import (
    DEFAULT_MAX_SNAPSHOT_BYTES,
    Room,
    SnapshotError,
    SnapshotRefused,
    disk_needed,
    unpack_offer,
)
from .journal import log_extra
from .liveness import Liveness
from .node import read_changes
from .relay import raise_to as _raise_to
from .relay import skipped
from .replica import Replica, WireItem, wall_clock_ms
from .replica_apply import ApplyResult
from .sender import Link
from .session import CLOSED, NEED_DATA, SyncConnection
from .session_events import (
    BYE_REVOKED,
    Bye,
    CaughtUp,
    Direct,
    Entries,
    Have,
    NotMember,
    PeerHello,
    PeerVector,
    Ping,
    SnapshotEnd,
    SnapshotFrom,
    SnapshotRows,
    SnapshotStart,
)
from .shares import DEFAULT_SHARE

if TYPE_CHECKING:
    from .peers import PeerManager, _Session

log = logging.getLogger("p2psync.peers")
RECEIVE_CHUNK = 256 * 1024
# A batch this small is applied on the event loop's thread when it can be (Node.call_here): a
# lone write. Several entries at once mean a burst, where the database thread's work beside the
# loop (SQLite and signature checks run without the GIL) is worth its hops.
HERE_APPLY_ENTRIES = 1
HERE_APPLY_BYTES = 8 * 1024
# how long a peer told to upgrade gets that bye before its hello (an upgrade waits this at most)
OUTDATED_REFUSAL_SECONDS = 300.0
T = TypeVar("T")


class SnapshotBudget:
    """What a daemon spares for the snapshots it receives: one session at a time per share (a
    lock: two senders' chunks would interleave in the one staging table), at most `max_bytes`
    of rows from a member, and disk for all transfers under way (history/snapshot.py's
    check_room)."""

    def __init__(self, state_dir: Path, max_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES) -> None:
        self.state_dir = state_dir
        self.max_bytes = max_bytes
        self.locks: dict[str, trio.Lock] = {}
        self.reserved: dict[str, int] = {}  # share -> disk its transfer may still take

    def room(self, share: str) -> Room:
        disk = os.statvfs(self.state_dir)
        others = sum(need for held, need in self.reserved.items() if held != share)
        return Room(disk.f_bavail * disk.f_frsize, self.max_bytes, others)

    def release(self, share: str) -> None:
        self.reserved.pop(share, None)
        self.locks[share].release()


class SessionPump:
    """Moves one session's bytes: a receiver, a keep-alive, a watch on the peer's silence, and
    the senders (`sender.Link`)."""

    def __init__(self, manager: "PeerManager", session: "_Session") -> None:
        self.manager = manager
        self.node = manager.node
        self.replica = manager.replica
        self.session = session
        self.state = session.state
        self.connection = SyncConnection(manager.device_id, session.state.device_id)
        self.send_lock = trio.Lock()
        self.peer_known: dict[str, dict[str, int]] = {}
        self.senders: set[str] = set()
        self.vectors_sent: set[str] = set()
        self.receiving_snapshots: set[str] = set()  # shares whose snapshot lock we hold
        self.resumed_snapshots: set[str] = set()  # ... whose transfer went on from kept rows
        timeouts = manager.timeouts
        self.liveness = Liveness.starting(trio.current_time(), timeouts.idle, timeouts.handshake)
        session.state.liveness = self.liveness
        self.link = Link(
            self.node,
            manager.neighbourhood,
            self.connection,
            self._known,
            self.send,
            self._count_sent,
            lambda reason: manager._close(session, reason),
            self._part_outdated,
        )

    async def send(self, data: bytes) -> None:
        async with self.send_lock:
            await self.session.stream.send_all(data)
        self.liveness.sent(trio.current_time())
        self.state.bytes_sent += len(data)

    async def run(self) -> None:
        shares = await self.node.call(_share_heads, self.replica, self.state.device_id)
        self.session.offered = frozenset(shares)
        hello = self.connection.send_hello(shares, self.replica.actor, __version__, snapshots=True)
        await self.send(hello)
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._keep_alive)
                nursery.start_soon(self._watch_silence, nursery.cancel_scope)
                await self._receive()
                nursery.cancel_scope.cancel()
        finally:
            self.link.stop()
            for share in self.receiving_snapshots:
                self.manager.snapshots.release(share)

    def _part_outdated(self, reason: str) -> None:
        """The peer lacks entries we folded away and cannot take a snapshot (a release before
        0.4.0): the session ends with a bye saying what to do. Such a peer dials again at once
        after a session it was greeted in, so for a while (or until news of it: an upgrade
        restarts it, and it announces itself) its connections get the same bye before any
        hello, and it backs off as from a refusal. Logged once per device."""
        peer = self.state.device_id
        if peer not in self.manager.outdated:
            log.warning("%s", reason, extra=log_extra(peer=peer))
        self.manager.outdated[peer] = (reason, trio.current_time() + OUTDATED_REFUSAL_SECONDS)
        self.session.reason = self.session.reason or reason
        self.session.farewell = (reason, "")
        self.session.cancel_scope.cancel()

    def _count_sent(self, entries: int) -> None:
        self.state.entries_sent += entries

    async def _receive(self) -> None:
        while True:
            data = await self.session.stream.receive_some(RECEIVE_CHUNK)
            self.state.last_seen = trio.current_time()
            self.liveness.heard(self.state.last_seen)
            if data and self.session.newer_copy is not None:
                self.manager.confirm_copies(self.session)
            self.state.bytes_received += len(data)
            self.connection.receive_data(bytes(data))
            while True:
                event = self.connection.next_event()
                if event is NEED_DATA:
                    break
                if event is CLOSED:
                    return
                await self._handle(event)

    async def _handle(self, event: object) -> None:
        if isinstance(event, PeerHello):
            self.session.greeted = True
            self.state.software = event.software or None
            if self.manager.revoked_us.pop(self.state.device_id, None) is not None:
                log.warning("%s talks to this device again: re-admitted", self.state.device_id)
            if not self.manager._greeted(self.session, event.actor):
                return
            log.info(
                "peer %s connected (%s, %s)",
                self.state.device_id,
                self.state.direction,
                self.state.address,
                extra=log_extra(peer=self.state.device_id),
            )
            for share in sorted(event.shares):
                if share in event.in_sync:
                    self.link.told[share] = event.in_sync[share]
                    self._start_sender(share, event.in_sync[share])
                elif share in self.session.offered:
                    await self._send_vector(share)
                else:
                    await self._offered(share)
        elif isinstance(event, PeerVector):
            if event.share not in self.vectors_sent and event.share not in self.link.told:
                await self._send_vector(event.share)  # the peer joined a share we offered
            self.link.compare_heads.add(event.share)
            vector = await self._database(self.replica.expand_vector, event.share, event.vector)
            self._start_sender(event.share, vector)
        elif isinstance(event, Entries):
            await self._apply(event)
        elif isinstance(event, SnapshotStart | SnapshotRows | SnapshotEnd):
            await self._snapshot(event)
        elif isinstance(event, SnapshotFrom):
            self.link.on_snapshot_from(event.share, event.after)
        elif isinstance(event, NotMember):
            peer = self.state.device_id
            if await self._database(self.replica.note_removal, event.share, peer, event.reason):
                log.warning("this device is no longer in share %s: %s", event.share, event.reason)
                await self.node.applied(self.node.changes.position, True)  # sessions follow
        elif isinstance(event, Have):
            self.liveness.waiting()
            try:
                await self.link.on_have(event.share, event.vector)
            finally:
                self.liveness.waited(trio.current_time())
        elif isinstance(event, Direct):
            self.link.on_direct(event)
            self.state.direct_actors = len(event.shares.get(DEFAULT_SHARE, ()))
            self.state.fed_directly = {
                share: skipped(event.shares, share, self.replica.actor) for share in event.shares
            }
        elif isinstance(event, CaughtUp):
            vector = await self._database(self.replica.expand_vector, event.share, event.vector)
            _raise_to(self._known(event.share), vector)
            self.state.in_sync.add(event.share)
            log.info("caught up with %s on share %s", self.state.device_id, event.share)
            self.manager.on_change()
            self.manager.on_synced(self.state.device_id, event.share)
        elif isinstance(event, Ping):
            self.liveness.peer_limit_is(event.idle_ms / 1000 if event.idle_ms else None)
            if event.wall_ms is not None:
                offset = event.wall_ms - wall_clock_ms()
                skewed = abs(offset) > hlc.MAX_ADOPTED_DRIFT_MS
                was_skewed = abs(self.state.clock_offset_ms or 0) > hlc.MAX_ADOPTED_DRIFT_MS
                if skewed and not was_skewed:
                    log.warning(
                        "the clock of %s is %+.0f s off ours (more than %d s): check both "
                        "clocks; its time is not adopted here",
                        self.state.device_id,
                        offset / 1000,
                        hlc.MAX_ADOPTED_DRIFT_MS // 1000,
                    )
                self.state.clock_offset_ms = offset
                self.manager.note_clock_offsets()
            if event.idle_ms is None:
                # a peer older than 0.3.0 counts only on pongs to hear from us often enough for
                # its own limit; newer ones say their limit and hear our pings
                await self.send(self.connection.send_pong())
        elif isinstance(event, Bye):
            self.session.reason = f"peer said goodbye: {event.reason}"
            if event.code == BYE_REVOKED:
                self.session.reason = f"this device was {event.reason}"
                self.manager.revoked_us[self.state.device_id] = event.reason
                log.error("this device was %s; it stops syncing with that household", event.reason)

    async def _offered(self, share: str) -> None:
        """The peer offers a share our hello did not name: join it if we hold nothing of it (a
        member added us) or were told we were removed (a member may have added us back), and
        tell the peer if it was removed from it."""
        peer = self.state.device_id
        holds, noticed, removed = await self._database(_offer_facts, self.replica, share, peer)
        if removed:
            log.info("telling %s it is no longer in share %s", peer, share)
            await self.send(self.connection.send_not_member(share, removed))
        elif not holds or noticed:
            log.info("joining share %s offered by %s", share, peer)
            self.vectors_sent.add(share)
            self.link.told[share] = {}
            self.session.offered |= {share}
            await self.send(self.connection.join_share(share))

    async def _send_vector(self, share: str) -> None:
        vector = await self._database(self.replica.wire_vector, share)
        self.vectors_sent.add(share)
        self.link.told[share] = vector
        await self.send(self.connection.send_vector(share, vector))

    def _known(self, share: str) -> dict[str, int]:
        """What the peer is known to hold: its vector, plus what it sent us and we sent it.
        It filters what we send and is what `status` shows as behind/ahead."""
        known = self.peer_known.get(share)
        if known is None:
            known = self.peer_known[share] = self.state.peer_vectors[share] = {}
        return known

    def _start_sender(self, share: str, peer_vector: dict[str, int]) -> None:
        if share in self.senders:
            return
        self.senders.add(share)
        _raise_to(self._known(share), peer_vector)
        self.link.start(self.nursery)
        self.nursery.start_soon(self.link.send_share, share)

    async def _snapshot(self, event: SnapshotStart | SnapshotRows | SnapshotEnd) -> None:
        """A snapshot of a share whose folded entries we lack (history/bootstrap.py): kept as
        it arrives, installed at its end if the members' reports vouch for it."""
        share, peer = event.share, self.state.device_id
        snapshots = self.manager.snapshots
        try:
            if isinstance(event, SnapshotStart):
                offer = unpack_offer(event.offer)
                if share not in self.receiving_snapshots:
                    lock = snapshots.locks.setdefault(share, trio.Lock())
                    self.liveness.waiting()  # another session's transfer first
                    try:
                        await lock.acquire()
                    finally:
                        self.liveness.waited(trio.current_time())
                    self.receiving_snapshots.add(share)
                room = snapshots.room(share)
                try:
                    after = await self._database(self.replica.snapshot_started, share, offer, room)
                except SnapshotRefused as exc:
                    log.warning("refusing a snapshot from %s: %s", peer, exc)
                    self.manager._close(self.session, f"refused its snapshot: {exc}")
                    return
                snapshots.reserved[share] = disk_needed(offer)
                if after is None or after == ALL_HELD:
                    self.resumed_snapshots.discard(share)
                else:
                    self.resumed_snapshots.add(share)
                where = "from the start" if after is None else f"resuming after {after}"
                log.info("receiving a snapshot of share %s from %s, %s", share, peer, where)
                await self.send(self.connection.send_snap_from(share, after))
            elif share not in self.receiving_snapshots:
                # another session may be receiving this share: its staging is not ours to touch
                raise SnapshotError("snapshot rows or end without a snapshot start")
            elif isinstance(event, SnapshotRows):
                try:
                    await self._database(self.replica.snapshot_chunk, share, list(event.rows))
                except SnapshotError:
                    await self._database(self.replica.discard_staged, share)
                    raise
                self.state.count_received(trio.current_time(), len(event.rows))
            else:
                try:
                    verdict = await self._database(
                        self.replica.install_snapshot, share, peer, _no_key
                    )
                except SnapshotError as exc:
                    if share not in self.resumed_snapshots:
                        raise
                    # the rows kept from before may be another sender's: no proof against this one
                    log.warning(
                        "the snapshot of share %s from %s, resumed from rows kept earlier, does"
                        " not verify (%s): dropped, the next session starts over",
                        share,
                        peer,
                        exc,
                    )
                    self.manager._close(self.session, f"its resumed snapshot of {share} failed")
                    return
                finally:
                    if share in self.receiving_snapshots:
                        self.receiving_snapshots.discard(share)
                        snapshots.release(share)
                if verdict is None:
                    return  # another session's snapshot gave us this one's already
                if not verdict.accept:
                    self.manager.end_for_misbehaviour(self.session, verdict.reason)
                    return
                log.info("installed the snapshot of share %s: %s", share, verdict.reason)
                if verdict.sender_only:
                    log.warning(
                        "the snapshot of share %s is on the word of %s alone: it is checked"
                        " again when another member's report names its frontier",
                        share,
                        peer,
                    )
                position = await self._database(self.replica.last_position)
                await self.node.applied(position, True)
        except SnapshotError as exc:
            self.manager.end_for_misbehaviour(self.session, f"snapshot of share {share}: {exc}")

    async def _apply(self, event: Entries) -> None:
        known = self._known(event.share)
        arguments = (
            self.replica,
            event.share,
            event.items,
            known,
            self.state.device_id,
            self.node.watchers > 0,
        )
        try:
            applied = None
            if _small(event.items):
                applied = await self._database(_apply_noting, *arguments, True, here=True)
            if applied is None:
                applied = await self._database(_apply_noting, *arguments)
            assert applied is not None  # only `unless_waiting` gives None
            result, stored = applied
        except IntegrityError as exc:
            # The session ends by cancellation, not by this exception: its traceback holds the
            # frames of the apply with every entry of the batch, and the cycles trio's nurseries
            # put exceptions in would keep them until a full collection (tens of MB per peer).
            reason = str(exc)
            traceback.clear_frames(exc.__traceback__)
            del exc
            self.manager.end_for_misbehaviour(self.session, reason)
            return
        self.state.count_received(trio.current_time(), len(event.items))
        self.manager.after_apply(result)
        if result.applied:
            self.manager.neighbourhood.received(self.link, event.share, result.received)
            await self.node.applied(result.position, result.devices_changed, stored)

    async def _database(self, function: Callable[..., T], *args: object, here: bool = False) -> T:
        """A receiver's call on the database thread (`here`: Node.call_here): the peer's
        silence does not count while we do not read (its bytes wait in the socket), and it gets
        its whole limit after."""
        self.liveness.waiting()
        try:
            if here:
                return await self.node.call_here(function, *args)
            return await self.node.call(function, *args)
        finally:
            self.liveness.waited(trio.current_time())

    async def _keep_alive(self) -> None:
        """A ping whenever we sent nothing else for a while: it tells the peer we are here, and
        carries our clock (for its skew check) and how soon we give up on it."""
        idle_ms = round(self.liveness.limit * 1000)
        while True:
            due = self.liveness.ping_at()
            if trio.current_time() < due:
                await trio.sleep_until(due)
                continue
            await self.send(self.connection.send_ping(wall_clock_ms(), idle_ms))

    async def _watch_silence(self, session: trio.CancelScope) -> None:
        """End the session once the peer has said nothing for its limit. A task of its own, so
        that a receiver stuck sending to a peer that no longer reads is no excuse."""
        liveness = self.liveness
        while not liveness.is_gone(trio.current_time()):
            # gone_at moves on with every word heard, and is "never" while we are busy; it can
            # only come sooner than a `limit` from now when the first words end the opening
            await trio.sleep_until(min(liveness.gone_at(), trio.current_time() + liveness.limit))
        limit = liveness.current_limit()
        self.session.reason = self.session.reason or f"peer went silent (nothing for {limit:g} s)"
        session.cancel()


# `known` is read and raised only inside these calls, with the replica's turn (on the database
# thread, or on trio's by Node.call_here), so that what the
# sender skips always matches what was applied or sent at that same moment (no stale copies:
# a stale one re-sends a peer its own entries, a too-new one skips entries never sent).


def _apply_noting(
    replica: Replica,
    share: str,
    items: Sequence[WireItem],
    known: dict[str, int],
    peer: str,
    watched: bool,
    unless_waiting: bool = False,
) -> tuple[ApplyResult, Stored] | None:
    """The apply, and what it stored (whose entries, up to which seqs: senders whose peers hold
    them or get them from their writers need not read them); `watched`: and what it changed,
    for the watchers. `unless_waiting` (a lone entry on the event loop's thread): None, having
    done nothing, when entries of the share wait in the replica, since releasing them may be
    long work the database thread should do. Rare applies do more than their batch even so: a
    revocation that cuts the revoked device's later entries, a fork whose proof is committed
    (with an fsync); the event loop waits for those few."""
    if unless_waiting and replica.waits(share):
        return None
    after = replica.last_position()
    replica.take_stored()  # what was stored before is not this apply's
    result = replica.apply(share, items, peer)
    _raise_to(known, result.received)
    changes = read_changes(replica, after, result.position) if watched else None
    return result, Stored(after, result.position, replica.take_stored(), changes=changes)


def _small(items: Sequence[WireItem]) -> bool:
    if len(items) > HERE_APPLY_ENTRIES:
        return False
    return sum(len(raw) for raw, _ in items) <= HERE_APPLY_BYTES


def _no_key(device_id: str) -> None:
    """A peer's key, beyond the device records: a peer we sync with is in them already."""
    return None


def _offer_facts(replica: Replica, share: str, peer: str) -> tuple[bool, bool, str]:
    """Whether we hold `share`, were told we were removed from it, and why `peer` was."""
    holds = replica.holds(share)
    noticed = holds and bool(replica.removal_notice(share))
    return holds, noticed, replica.removal_reason(share, peer) if holds else ""


def _share_heads(replica: Replica, peer: str) -> dict[str, dict[str, tuple[int, bytes]]]:
    """The heads of the shares `peer` is a member of: no other share's name reaches it."""
    return {share: replica.chain_heads(share) for share in replica.shares_for(peer)}
