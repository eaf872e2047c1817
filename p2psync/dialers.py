"""Keeping connections to the addresses we were asked to dial (trio): one dialer task per
address, trying again on `redial`'s schedule, and at once when there is news of its device.

Owns the dial requests (address -> the device expected there; None: whichever member answers),
each address's task and its TCP connect, which news cuts short. From the TLS handshake on, a
connection is `PeerManager`'s. It never dials an address nobody asked for, never dials a device
while a session with it runs, and stops dialling a household that revoked this device.
"""

import enum
import logging
from typing import TYPE_CHECKING

import trio

from .config_values import format_address, ip_of
from .connection_errors import describe
from .redial import Redial

if TYPE_CHECKING:
    from .peers import PeerManager

log = logging.getLogger("p2psync.peers")  # the name these lines have always been logged under
Address = tuple[str, int]


class _Outcome(enum.Enum):
    UNREACHABLE = enum.auto()  # nobody answered the connect (or news cut it short)
    TURNED_AWAY = enum.auto()  # the host answered, but no session came of it
    SESSION = enum.auto()


class _Dialer:
    """One address's dialer task: its schedule, and what wakes it when there is news."""

    def __init__(self, cap: float) -> None:
        self.scope = trio.CancelScope()
        self.schedule = Redial(cap)
        self.news = trio.Event()
        self.connecting: trio.CancelScope | None = None  # a TCP connect still unanswered

    def wake(self) -> None:
        self.schedule.woken(trio.current_time())
        self.news.set()
        if self.connecting is not None:
            # a connect whose SYN went out before the news may wait seconds for its retransmit
            self.connecting.cancel()


class Dialers:
    """The dial requests of one `PeerManager` and their tasks, which run in the nursery given to
    `start` (requests made before it wait for it)."""

    def __init__(self, manager: "PeerManager") -> None:
        self.manager = manager
        self.requests: dict[Address, str | None] = {}
        self.running: dict[Address, _Dialer] = {}  # the dialer of each address whose task runs
        self._nursery: trio.Nursery | None = None

    def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        for address in self.requests:
            nursery.start_soon(self._dial_loop, address)

    def dial(self, address: Address, device_id: str | None = None) -> None:
        """Keep a connection to `address` (for a known device, or any member answering there)."""
        if address in self.requests or device_id in self.manager.revoked_us:
            return
        self.requests[address] = device_id
        if self._nursery is not None:
            self._nursery.start_soon(self._dial_loop, address)

    def undial(self, address: Address) -> None:
        """Stop trying `address` (a discovered device went away); a live session stays."""
        self.requests.pop(address, None)
        dialer = self.running.pop(address, None)
        if dialer is not None:
            dialer.scope.cancel()

    def wake(self, device_id: str | None = None) -> None:
        """The dialers of `device_id` (None: of every device) try again at once, and their
        back-off starts over."""
        for address, expected in self.requests.items():
            dialer = self.running.get(address)
            if dialer is not None and (device_id is None or expected == device_id):
                dialer.wake()

    async def _dial_loop(self, address: Address) -> None:
        dialer = self.running[address] = _Dialer(self.manager.timeouts.reconnect_max)
        schedule = dialer.schedule
        try:
            with dialer.scope:
                while address in self.requests:
                    expected = self.requests.get(address)
                    if expected is not None and expected in self.manager.sessions:
                        session = self.manager.sessions[expected]
                        await session.closed.wait()
                        if session.greeted:
                            schedule.worked(trio.current_time())
                        continue
                    delay = schedule.delay(trio.current_time())
                    if delay > 0:
                        dialer.news = trio.Event()
                        with trio.move_on_after(delay):
                            await dialer.news.wait()
                        continue
                    schedule.started(trio.current_time())
                    outcome = await self._dial_once(address, dialer)
                    if self.requests.get(address) in self.manager.revoked_us:
                        self.requests.pop(address, None)
                        return  # that household revoked this device: asking again changes nothing
                    if outcome is _Outcome.SESSION:
                        schedule.connected(trio.current_time())
                    else:
                        reached = outcome is _Outcome.TURNED_AWAY
                        schedule.failed(trio.current_time(), reached)
        finally:
            if self.running.get(address) is dialer:
                del self.running[address]

    async def _dial_once(self, address: Address, dialer: _Dialer) -> _Outcome:
        host, port = address
        text = format_address(*address)
        patience = self.manager.timeouts.handshake
        if ip_of(host) is not None:  # a name's lookup (a static peer's) gets its usual time
            patience = dialer.schedule.connect_patience(trio.current_time(), patience)
        try:
            with (
                trio.fail_after(patience),
                trio.CancelScope() as connecting,
            ):
                dialer.connecting = connecting
                # an unreachable address fails as fast as the OS says so (refused, no route)
                tcp = await trio.open_tcp_stream(host, port)
        except (OSError, trio.TooSlowError) as exc:
            log.debug("cannot reach %s: %s", text, describe(exc))
            return _Outcome.UNREACHABLE
        finally:
            dialer.connecting = None
        if connecting.cancelled_caught:
            log.debug("connecting to %s again at once: there is news of it", text)
            return _Outcome.UNREACHABLE
        secured = await self.manager.secure_outgoing(tcp, text)
        if secured is None:
            return _Outcome.TURNED_AWAY
        stream, peer_id = secured
        if self.requests.get(address) is None:
            self.requests[address] = peer_id
        # A TLS 1.3 handshake completes on the client's side before the server has checked the
        # client's certificate: only the peer's hello shows that it accepted us.
        greeted = await self.manager.run_session(
            stream, peer_id, text, dialer=self.manager.device_id
        )
        return _Outcome.SESSION if greeted else _Outcome.TURNED_AWAY
