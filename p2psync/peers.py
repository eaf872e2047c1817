"""Connections to other devices: the listener, and the sessions of each device (trio).

Owns sockets and TLS streams, settles which sessions a device keeps (simultaneous dials, two
running copies), tells revoked devices so, and ends the sessions of peers that sent false data;
each session's bytes are moved by a `pump.SessionPump`, and the addresses we keep dialling are
`dialers.Dialers`'. Whom to trust comes from the membership records. It never interprets entries
itself, and never sends a peer anything before the TLS handshake proved the peer is a current
member and the peer answered with its own hello.
"""

import contextlib
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from . import hlc, identity, keystore, listening, tls
from .connection_errors import CONNECTION_ERRORS, describe, first_reason
from .dialers import Address, Dialers
from .entry import IntegrityError
from .journal import log_extra
from .liveness import DEFAULT_LIMIT_SECONDS
from .membership import DeviceRecord
from .node import Node
from .pairing_service import PREFACE as PAIRING_PREFACE
from .peer_state import PeerState
from .pump import SessionPump, SnapshotBudget
from .replica import Replica, wall_clock_ms
from .replica_apply import ApplyResult
from .sender import Neighbourhood
from .session import ProtocolError
from .session_events import BYE_REVOKED
from .wire import encode_frame

log = logging.getLogger("p2psync.peers")
TLS_HANDSHAKE_RECORD = b"\x16"  # the first byte of every TLS ClientHello


@dataclass(frozen=True)
class Timeouts:
    handshake: float = 10.0
    idle: float = DEFAULT_LIMIT_SECONDS  # silence after which a peer counts as gone
    reconnect_max: float = 60.0


def preferred(dialer: str, listener: str) -> bool:
    """When two devices dial each other at once, both keep the connection dialled by the device
    with the smaller id, so they agree without talking about it."""
    return dialer < listener


class _Session:
    def __init__(self, stream: trio.SSLStream[Any], state: PeerState, dialer: str):
        self.stream = stream
        self.state = state
        self.dialer = dialer
        self.cancel_scope = trio.CancelScope()
        self.closed = trio.Event()
        self.reason = ""
        self.greeted = False
        self.farewell: tuple[str, str] | None = None  # a bye (reason, code) to send at the end
        self.actor = ""  # the epoch the peer said it writes as
        self.newer_copy: _Session | None = None  # a session of another epoch of this device
        self.offered: frozenset[str] = frozenset()  # shares our hello named (and ones we joined)


class PeerManager:
    def __init__(
        self,
        node: Node,
        state_dir: Path,
        timeouts: Timeouts,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.node = node
        self.replica: Replica = node.replica
        self.device_id = node.replica.device_id
        self.state_dir = state_dir
        self.timeouts = timeouts
        self.on_change = on_change
        self.sessions: dict[str, _Session] = {}
        self.offline: dict[str, PeerState] = {}
        self._trusted: dict[str, bytes] = {}
        self._server_context: ssl.SSLContext | None = None
        self._client_context: ssl.SSLContext | None = None
        self.dialers = Dialers(self)
        self.pairing_handler: Callable[[trio.abc.Stream, str], Awaitable[None]] | None = None
        self._revoked: dict[str, str] = {}
        self.revoked_us: dict[str, str] = {}  # member -> what it said when it revoked us
        self.snapshots = SnapshotBudget(state_dir)  # what snapshots being received may take
        # device -> (the bye telling it to upgrade, until when its connections get it at once)
        self.outdated: dict[str, tuple[str, float]] = {}
        self.clock_offsets_ms: list[int] = []
        self.twins: dict[str, dict[str, _Session]] = {}  # second copies' sessions, by epoch
        self.running_twice: dict[str, set[str]] = {}  # device -> hosts seen running it at once
        self.neighbourhood = Neighbourhood()
        # told when a device's first session is greeted and when its last one ends (device,
        # connected), and when a peer tells us we have all it has of a share (device, share)
        self.on_peer: Callable[[str, bool], None] = lambda device_id, connected: None
        self.on_synced: Callable[[str, str], None] = lambda device_id, share: None
        self._connected: set[str] = set()  # devices on_peer was last told are connected

    @property
    def connected(self) -> AbstractSet[str]:
        """The devices with a session that got past its hello: what users call connected (a
        session still being set up is in `sessions` already)."""
        return self._connected

    # trust --------------------------------------------------------------------------------

    async def refresh_trust(self) -> None:
        """Rebuild TLS contexts from membership and drop sessions of devices no longer trusted."""
        devices = await self.node.call(self.replica.devices)
        usable = [
            d
            for d in devices
            if d.device_id != self.device_id
            and identity.certificate_matches(d.cert_pem, d.device_id)
        ]
        self._trusted = {d.device_id: d.cert_pem for d in usable if not d.revoked}
        names = {d.device_id: d.name or d.device_id for d in devices}
        # Revoked devices still get through TLS, only to be told so and closed: otherwise they
        # would see a bare certificate error and keep dialling.
        self._revoked = {
            d.device_id: _revocation_text(d, names.get(d.revoked_by, d.revoked_by))
            for d in usable
            if d.revoked
        }
        cert, key = keystore.cert_path(self.state_dir), keystore.key_path(self.state_dir)
        certs = [d.cert_pem for d in usable]
        self._server_context = tls.make_ssl_context(cert, key, certs, server_side=True)
        self._client_context = tls.make_ssl_context(cert, key, certs, server_side=False)
        every_session = [*self.sessions.items()] + [
            (device_id, twin) for device_id, twins in self.twins.items() for twin in twins.values()
        ]
        for device_id, session in every_session:
            if device_id not in self._trusted:
                log.warning(
                    "disconnecting %s: no longer a trusted member",
                    device_id,
                    extra=log_extra(peer=device_id),
                )
                if device_id in self._revoked:
                    session.farewell = (self._revoked[device_id], BYE_REVOKED)
                self._close(session, "device is no longer trusted")
        for address, expected in list(self.dialers.requests.items()):
            if expected is not None and expected not in self._trusted:
                self.undial(address)  # every attempt would be refused by both sides
        await self._follow_share_members(every_session)

    async def _follow_share_members(self, sessions: list[tuple[str, "_Session"]]) -> None:
        """A session whose peer was added to or removed from a share starts again, so that its
        hellos name the shares it is in now: a removed device gets no further update, an added
        one the whole share."""
        live = [(d, s) for d, s in sessions if not s.closed.is_set() and s.offered]
        if not live:
            return
        wanted = await self.node.call(
            lambda: {d: frozenset(self.replica.shares_for(d)) for d, _ in live}
        )
        for device_id, session in live:
            if wanted[device_id] != session.offered and not session.closed.is_set():
                log.info(
                    "reconnecting %s: the shares it is in changed",
                    device_id,
                    extra=log_extra(peer=device_id),
                )
                session.farewell = session.farewell or ("the shares it is in changed", "")
                self._close(session, "the shares it is in changed")

    # incoming -----------------------------------------------------------------------------

    async def serve(self, listeners: list[trio.SocketListener]) -> None:
        gate = listening.Gate.for_this_process(log)
        await listening.serve(self._handle_incoming, listeners, gate)

    async def _handle_incoming(self, tcp: trio.SocketStream, arrival: listening.Arrival) -> None:
        """A stranger until its TLS handshake proves it a member: until then it counts against
        the unauthenticated caps, has one handshake timeout for everything, and its failures are
        logged through the throttle (a flood makes a line a minute, not one per connection)."""
        address = arrival.address
        deadline = trio.current_time() + self.timeouts.handshake
        try:
            with trio.fail_at(deadline):
                opening = await _read_opening(tcp)
        except (trio.TooSlowError, trio.BrokenResourceError, OSError) as exc:
            arrival.failed("dropped connection", describe(exc))
            return
        if opening == PAIRING_PREFACE:
            # A pairing attempt proves nothing before its PAKE does, so it keeps its place under
            # the caps for its whole life (the pairing service has timeouts of its own).
            async with tcp:
                if self.pairing_handler is not None:
                    await self.pairing_handler(tcp, address)
            return
        if not opening.startswith(TLS_HANDSHAKE_RECORD):
            arrival.failed("dropped connection", "neither TLS nor pairing")
            return
        assert self._server_context is not None
        stream = trio.SSLStream(_Replay(opening, tcp), self._server_context, server_side=True)
        try:
            with trio.fail_at(deadline):
                await stream.do_handshake()  # `_handshake` finds it done and checks membership
        except (trio.TooSlowError, trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
            arrival.failed("refused connection", describe(exc))
            await trio.aclose_forcefully(stream)
            return
        arrival.release()
        peer_id = await self._handshake(stream, address)
        if peer_id is not None:
            self._arrived(peer_id)
            await self.run_session(stream, peer_id, address, dialer=peer_id)

    async def _handshake(
        self, stream: trio.SSLStream[Any], address: str, outgoing: bool = False
    ) -> str | None:
        try:
            with trio.fail_after(self.timeouts.handshake):
                await stream.do_handshake()
            peer_id = tls.peer_device_id(stream)
        except (
            trio.TooSlowError,
            trio.BrokenResourceError,
            ssl.SSLError,
            OSError,
            ValueError,
        ) as exc:
            if outgoing:
                log.info("could not connect to %s: %s", address, describe(exc))
            else:
                log.info("refused connection from %s: %s", address, describe(exc))
            await trio.aclose_forcefully(stream)
            return None
        if peer_id in self._revoked:
            log.info("refused connection from %s: %s was revoked (told so)", address, peer_id)
            await self._say_bye(stream, self._revoked[peer_id], BYE_REVOKED)
            await trio.aclose_forcefully(stream)
            return None
        if peer_id not in self._trusted:
            log.info("refused connection from %s: device %s is not a member", address, peer_id)
            await trio.aclose_forcefully(stream)
            return None
        outdated = self.outdated.get(peer_id)
        if outdated is not None and trio.current_time() < outdated[1]:
            log.debug("refused connection with %s: %s", address, outdated[0])
            await self._say_bye(stream, outdated[0], "")
            await trio.aclose_forcefully(stream)
            return None
        return peer_id

    # outgoing -----------------------------------------------------------------------------

    def dial(self, address: Address, device_id: str | None = None) -> None:
        self.dialers.dial(address, device_id)

    def undial(self, address: Address) -> None:
        self.dialers.undial(address)

    def wake(self, device_id: str | None = None) -> None:
        """News that `device_id` (None: any device, e.g. a link came up) may be reachable now:
        its dialers try again at once, and their back-off starts over."""
        if device_id in self.outdated:  # upgraded and restarted, maybe: its next hello says
            self.outdated[device_id] = (self.outdated[device_id][0], -math.inf)
        self.dialers.wake(device_id)

    def _arrived(self, peer_id: str) -> None:
        """An incoming session from `peer_id`: the device is there, whatever our dialers think."""
        self.wake(peer_id)

    def trusts(self, device_id: str) -> bool:
        return device_id in self._trusted

    async def run(
        self, listeners: list[trio.SocketListener], task_status=trio.TASK_STATUS_IGNORED
    ) -> None:
        await self.refresh_trust()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.serve, listeners)
            self.dialers.start(nursery)
            task_status.started()

    async def secure_outgoing(
        self, tcp: trio.SocketStream, address: str
    ) -> tuple[trio.SSLStream[Any], str] | None:
        """TLS over a connection we opened: the stream, and the member that answered (None:
        the handshake failed, or the device is not one we talk to now)."""
        assert self._client_context is not None
        stream = trio.SSLStream(tcp, self._client_context, server_side=False)
        peer_id = await self._handshake(stream, address, outgoing=True)
        return None if peer_id is None else (stream, peer_id)

    # sessions -----------------------------------------------------------------------------

    def _register(self, session: _Session) -> None:
        """A device's first session is its session; another one waits for its hello to tell
        whether it is the same instance dialling at the same time, or a second running copy."""
        peer_id = session.state.device_id
        if peer_id not in self.sessions:
            self.sessions[peer_id] = session
            self.offline.pop(peer_id, None)

    def _greeted(self, session: _Session, actor: str) -> bool:
        """Settle which session a device keeps once it said hello; False: close this one."""
        session.actor = actor
        peer_id = session.state.device_id
        if peer_id not in self._trusted:  # revoked while this session was being set up
            if peer_id in self._revoked:
                session.farewell = (self._revoked[peer_id], BYE_REVOKED)
            self._close(session, "device is no longer trusted")
            return False
        current = self.sessions.setdefault(peer_id, session)
        if current is session:
            self._tell_connected(peer_id)
            return True
        twins = self.twins.get(peer_id, {})
        if actor and current.actor and actor != current.actor and current.greeted:
            same_epoch = twins.get(actor)
            if same_epoch is None:
                # Another epoch of the same device: a second running copy, or a restart whose
                # old session has not ended yet. Both are kept; the old one proves to be alive
                # by sending anything more, and then the device is reported as running twice.
                self.twins.setdefault(peer_id, {})[actor] = session
                current.newer_copy = session
                return True
        else:
            same_epoch = current
        # two sessions with the same running copy (both dialled at once): both sides keep the
        # same one, whether it is the device's session or the session with its other copy
        listener = self.device_id if session.dialer != self.device_id else peer_id
        if not preferred(session.dialer, listener):
            self._close(session, "replaced by a simultaneous connection")
            return False
        self._close(same_epoch, "replaced by a simultaneous connection")
        if same_epoch is current:
            # what the replaced session knew of the device's other running copy stays true,
            # and is only named once this one speaks
            session.newer_copy = current.newer_copy
            self.sessions[peer_id] = session
            self._tell_connected(peer_id)
        else:
            twins[actor] = session
            if current.newer_copy is same_epoch:
                current.newer_copy = session
        return True

    def _tell_connected(self, device_id: str) -> None:
        if device_id not in self._connected:
            self._connected.add(device_id)
            self.on_peer(device_id, True)

    def _tell_if_disconnected(self, device_id: str) -> None:
        """Once no greeted session of the device is left (a replaced or second session ending
        is no news)."""
        current = self.sessions.get(device_id)
        if device_id in self._connected and (current is None or not current.greeted):
            self._connected.discard(device_id)
            self.on_peer(device_id, False)

    def confirm_copies(self, older: _Session) -> None:
        """`older` spoke after a session of another epoch of its device began: both run."""
        newer, older.newer_copy = older.newer_copy, None
        if newer is None or newer.closed.is_set():
            return
        addresses = {older.state.address, newer.state.address}
        hosts = {_host(address) for address in addresses}
        places = self.running_twice.setdefault(older.state.device_id, set())
        before = set(places)
        places.update(hosts if len(hosts) == len(addresses) else addresses)
        if places != before:
            log.warning(
                "device %s is running in two places: %s", older.state.device_id, _and(places)
            )
            self.on_change()

    def end_for_misbehaviour(self, session: _Session, reason: str) -> None:
        """Close a session whose peer sent something false, naming it, and tell it why."""
        if session.farewell is None:
            peer = session.state.device_id
            log.warning("peer %s broke the protocol: %s", peer, reason, extra=log_extra(peer=peer))
        session.reason = session.reason or reason
        session.farewell = session.farewell or (reason, "")
        session.cancel_scope.cancel()

    def _unregister(self, session: _Session) -> bool:
        """Forget an ended session; True when the device has no session left."""
        peer_id = session.state.device_id
        twins = self.twins.get(peer_id, {})
        if twins.get(session.actor) is session:
            del twins[session.actor]
        elif self.sessions.get(peer_id) is session:
            del self.sessions[peer_id]
            if twins:  # the other copy's session carries on as the device's session
                self.sessions[peer_id] = twins.pop(next(iter(twins)))
        if not twins:
            self.twins.pop(peer_id, None)
        return peer_id not in self.sessions

    def _close(self, session: _Session, reason: str) -> None:
        session.reason = session.reason or reason
        session.cancel_scope.cancel()

    async def run_session(
        self, stream: trio.SSLStream[Any], peer_id: str, address: str, dialer: str
    ) -> bool:
        """Run one session to its end; whether the peer greeted us (or another session did)."""
        state = PeerState(peer_id, address, "out" if dialer == self.device_id else "in")
        session = _Session(stream, state, dialer)
        self._register(session)
        state.connected_at = state.last_seen = trio.current_time()
        self.on_change()
        try:
            with session.cancel_scope:
                await SessionPump(self, session).run()
        except* (ProtocolError, IntegrityError) as group:
            self.end_for_misbehaviour(session, first_reason(group))
        except* CONNECTION_ERRORS as group:
            session.reason = session.reason or first_reason(group)
        except* Exception as group:
            # a bug in one session must not take the daemon down for every other peer
            log.error("session with %s failed", peer_id, exc_info=group)
            session.reason = "internal error (see the log)"
        finally:
            if self._unregister(session):
                self.offline[peer_id] = state
                self.note_clock_offsets()
                # at shutdown the database thread may be gone already: nothing to free then
                with trio.CancelScope(shield=True), contextlib.suppress(RuntimeError):
                    await self.node.call(self.replica.forget_peer, peer_id)
            session.closed.set()
            self._tell_if_disconnected(peer_id)
            if session.farewell is not None:
                await self._say_bye(stream, *session.farewell)
            await trio.aclose_forcefully(stream)
            if session.greeted:
                reason = session.reason or "connection closed"
                log.info("peer %s disconnected: %s", peer_id, reason, extra=log_extra(peer=peer_id))
            else:
                log.info(
                    "peer %s did not accept us at %s: %s", peer_id, address, session.reason,
                    extra=log_extra(peer=peer_id),
                )  # fmt: skip
            self.on_change()
        return session.greeted

    def note_clock_offsets(self) -> None:
        # a new list each time: the database thread reads it (through now_ms) unlocked
        self.clock_offsets_ms = [
            s.state.clock_offset_ms
            for s in self.sessions.values()
            if s.state.clock_offset_ms is not None
        ]

    def now_ms(self) -> int:
        """The time local writes are stamped with (see hlc.corrected_now)."""
        return hlc.corrected_now(wall_clock_ms(), self.clock_offsets_ms)

    def skewed_clocks(self) -> dict[str, int]:
        """Connected peers whose wall clock is further from ours than any clock is adopted."""
        return {
            device_id: session.state.clock_offset_ms
            for device_id, session in self.sessions.items()
            if session.state.clock_offset_ms is not None
            and abs(session.state.clock_offset_ms) > hlc.MAX_ADOPTED_DRIFT_MS
        }

    def after_apply(self, result: ApplyResult) -> None:
        """Peers that this apply showed to have sent false entries go, named; what the entries
        revealed about devices (copies running, restores, forks) is said once."""
        for peer, reason in result.offenders.items():
            session = self.sessions.get(peer)
            if session is not None:
                self.end_for_misbehaviour(session, f"it {reason}")
        for notice in result.notices:
            log.warning(
                "device %s %s", notice.device_id, notice.text,
                extra=log_extra(peer=notice.device_id),
            )  # fmt: skip
        if result.refused:
            log.info("refused %d entries that no member may accept", result.refused)

    async def _say_bye(self, stream: trio.SSLStream[Any], reason: str, code: str) -> None:
        """Best effort: tell the peer why we close, in a bye it can show its user."""
        bye = encode_frame({"t": "bye", "r": reason, **({"c": code} if code else {})})
        with trio.move_on_after(1.0) as scope, contextlib.suppress(*CONNECTION_ERRORS):
            scope.shield = True
            await stream.send_all(bye)

    def drop(self, device_id: str, reason: str) -> None:
        session = self.sessions.get(device_id)
        if session is not None:
            self._close(session, reason)


class _Replay(trio.abc.Stream):
    """A stream that first gives back bytes already read from it (to sniff the protocol)."""

    def __init__(self, already_read: bytes, stream: trio.SocketStream) -> None:
        self._pending = already_read
        self._stream = stream

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        return bytes(await self._stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


async def _read_opening(tcp: trio.SocketStream) -> bytes:
    """Enough of the first bytes to tell a TLS ClientHello from our pairing preface."""
    opening = b""
    while len(opening) < len(PAIRING_PREFACE):
        data = await tcp.receive_some(len(PAIRING_PREFACE) - len(opening))
        if not data:
            break
        opening += data
        if not PAIRING_PREFACE.startswith(opening):
            break  # not pairing: what we have is the start of something else
    return opening


def _host(address: str) -> str:
    return address.rpartition(":")[0].strip("[]")


def _and(places: set[str]) -> str:
    ordered = sorted(places)
    return ", ".join(ordered[:-1]) + f" and {ordered[-1]}" if len(ordered) > 1 else ordered[0]


def _revocation_text(device: DeviceRecord, revoker: str) -> str:
    if not device.revoked_by:
        return "revoked by a member of this household"
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(device.revoked_at_ms / 1000))
    return f"revoked by {revoker} at {when}"
