"""The daemon as the web UI sees it: the control methods called in-process, the pairing code on
show, and the news pages are told about (trio).

Every question and change goes through the control socket's own method table (`control.server.
Server`): the same parameter checks, the same answers, the same errors as a client of the socket
gets, without opening the socket from inside the daemon. A pairing started from the page runs
here, in the UI's nursery, until it ends or another replaces it; its outcome is published on the
UI's own bus (`events.EventBus`), beside the daemon's. It holds no HTML and no HTTP: `app.py`
turns what it answers into pages.
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from .. import doctor
from ..control.errors import INTERNAL_MESSAGE, RequestError, is_disk_full
from ..control.methods_admin import ControlContext
from ..control.server import Server
from ..events import EventBus
from ..replica import ReplicaError
from ..shares.rules import ShareError

log = logging.getLogger("p2psync.ui")
PAIRING_TTL_SECONDS = 300


class ActionFailed(Exception):
    """A call the daemon refused; the message is its answer, meant for people."""


@dataclass
class Pairing:
    code: str
    expires_at: float  # trio clock
    outcome: dict[str, Any] | None = None  # the `paired` or `pairing_failed` event
    cancel: trio.CancelScope = field(default_factory=trio.CancelScope)


class Facade:
    def __init__(self, context: ControlContext) -> None:
        self.context = context
        self.server = Server(context)
        self.bus = EventBus()  # the UI's own news: how the pairing on show ended
        self.pairing: Pairing | None = None
        self.nursery: trio.Nursery | None = None  # set by the server once it runs

    @property
    def events(self) -> EventBus:
        return self.context.node.events

    async def call(self, method: str, **params: Any) -> Any:
        """A control method as the socket would answer an admin: its result, or ActionFailed
        with the error's message."""
        try:
            return await self.server.calls[method](params)
        except RequestError as exc:
            raise ActionFailed(exc.message) from None
        except (ShareError, ReplicaError) as exc:
            raise ActionFailed(str(exc)) from None
        except Exception as exc:
            if is_disk_full(exc):
                raise ActionFailed("the disk is full: nothing was written") from None
            log.exception("web UI call %r failed", method)
            raise ActionFailed(INTERNAL_MESSAGE) from None

    async def shares(self) -> list[str]:
        """Every share this device holds, `default` first."""
        listed = await self.call("share_list")
        names = [s["share"] for s in listed.get("shares", []) if s.get("member")]
        return ["default", *[name for name in names if name != "default"]]

    async def doctor(self) -> list[doctor.Check]:
        """`p2psync doctor`'s checks as far as the daemon can make them as itself: its answers,
        and whether its control socket and its ports accept connections over loopback (probed
        in a thread: a probe may wait seconds, the event loop must not)."""
        status = await self.call("status")
        peers = await self.call("peers")
        diagnosed = doctor.diagnose(status, peers, await self.call("nearby"))
        socket_path = Path(status["control_socket"])
        reachable = await trio.to_thread.run_sync(doctor.probe_control_socket, socket_path)
        ports = await trio.to_thread.run_sync(doctor.listen_checks, status)
        return doctor.report(reachable, ports, diagnosed)

    async def start_pairing(self) -> Pairing:
        """A new code (one at a time: a code on show before is withdrawn)."""
        self.stop_pairing()
        result, follow = await self.server.admin.start_pairing({"ttl": PAIRING_TTL_SECONDS})
        pairing = Pairing(result["code"], trio.current_time() + result["expires_in"])
        self.pairing = pairing
        assert self.nursery is not None
        self.nursery.start_soon(self._follow_pairing, pairing, follow)
        return pairing

    def stop_pairing(self) -> None:
        if self.pairing is not None:
            self.pairing.cancel.cancel()
        self.pairing = None

    async def _follow_pairing(self, pairing: Pairing, follow: Any) -> None:
        async def told(line: bytes) -> None:
            pairing.outcome = json.loads(line)
            self.bus.publish({"event": "pairing", "code": pairing.code, **pairing.outcome})

        with pairing.cancel:
            await follow(told)
