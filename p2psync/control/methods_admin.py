"""What the control socket's methods about the daemon itself mean: identity, status, membership,
configuration and pairing (trio).

It owns `hello`, `id`, `status`, `peers`, `devices`, `rename`, `trust`, `revoke`/`forget`,
`reload`, `nearby`, `join`, `ui_link` and the `pair` stream, and `ControlContext`: what the
control socket needs from the daemon. The daemon does the work (membership, discovery,
pairing); this module checks parameters and turns the daemon's answers and failures into protocol
results and error codes. Who may call these is `access.py`'s.
"""

import logging
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

import trio

from .. import __version__
from ..identity import device_id_from_certificate
from ..pairing_service import Invitation, PairingFailed
from ..shares import DEFAULT_SHARE
from ..shares.commands import ShareContext
from .connection import Follow, Send
from .errors import BAD_REQUEST, NOT_FOUND, PAIRING_FAILED, RequestError
from .lines import MAX_IN_FLIGHT, MAX_LINE_BYTES, MAX_UNCOMMITTED_BYTES, MAX_UNSENT_BYTES, json_line
from .methods_data import CONFLICTS_LIMIT, SCAN_MAX_LIMIT, SCAN_PAGE_VALUE_BYTES, Call
from .schema import CAPABILITIES, PROTOCOL_VERSION
from .watch import EVENT_BUFFER, HEARTBEAT_SECONDS
from .writes import param

log = logging.getLogger("p2psync.control")  # the name these lines have always been logged under

DEFAULT_PAIRING_TTL = 300.0

# What a client must stay within, told by `hello` (the numbers are this daemon's, not the
# protocol's: a later daemon may allow more).
LIMITS = {
    "max_line_bytes": MAX_LINE_BYTES,
    "max_pending_requests": MAX_IN_FLIGHT,
    "max_unread_answer_bytes": MAX_UNSENT_BYTES,
    "max_uncommitted_bytes": MAX_UNCOMMITTED_BYTES,
    # a transaction travels as one request line, so the line is its limit
    "max_transaction_bytes": MAX_LINE_BYTES,
    "scan_max_limit": SCAN_MAX_LIMIT,
    "scan_page_value_bytes": SCAN_PAGE_VALUE_BYTES,
    "conflicts_max_items": CONFLICTS_LIMIT,
    "watch_heartbeat_min_seconds": HEARTBEAT_SECONDS[0],
    "watch_heartbeat_max_seconds": HEARTBEAT_SECONDS[1],
    "watch_event_buffer": EVENT_BUFFER,
}


class ControlContext(ShareContext, Protocol):
    """What the control socket needs from the daemon (the share methods' needs included)."""

    @property
    def device_name(self) -> str: ...
    async def status(self) -> dict[str, Any]: ...
    async def peers_status(self) -> list[dict[str, Any]]: ...
    async def devices(self) -> list[dict[str, Any]]: ...

    # may raise ValueError (-> bad_request), LookupError (-> not_found) or RequestError
    async def trust(
        self, cert_pem: bytes, name: str | None, address: str | None, readmit: bool = False
    ) -> dict[str, Any]: ...
    async def revoke(self, device_id: str) -> dict[str, Any]: ...
    async def rename(self, name: str) -> dict[str, Any]: ...
    async def ui_link(self) -> dict[str, Any]: ...
    async def reload(self) -> dict[str, Any]: ...
    def nearby(self) -> list[dict[str, Any]]: ...
    async def pair(
        self, ttl_seconds: float, readmit: bool = False, shares: Sequence[str] = ()
    ) -> Invitation: ...
    def end_pairing(self, invitation: Invitation) -> None: ...
    async def join(self, code_text: str, address: str | None) -> dict[str, Any]: ...


class AdminMethods:
    def __init__(self, context: ControlContext) -> None:
        self.context = context
        self.calls: dict[str, Call] = {
            "status": self.status,
            "peers": self.peers,
            "id": self.id,
            "devices": self.devices,
            "rename": self.rename,
            "trust": self.trust,
            "revoke": self.revoke,
            "forget": self.revoke,
            "reload": self.reload,
            "nearby": self.nearby,
            "join": self.join,
            "ui_link": self.ui_link,
        }

    async def hello(self, request: dict[str, Any], methods: Sequence[str]) -> Any:
        """What this daemon speaks, and which `methods` the caller may use."""
        client: str | None = param(request, "client", str, None)
        if client is not None:
            log.debug("control client says it is %s", client[:200])
        return {
            "protocol": PROTOCOL_VERSION,
            "daemon": __version__,
            "device": self.context.device_id,
            "capabilities": sorted(CAPABILITIES),
            "limits": dict(LIMITS),
            "methods": sorted(methods),
        }

    async def status(self, request: dict[str, Any]) -> Any:
        return await self.context.status()

    async def peers(self, request: dict[str, Any]) -> Any:
        return await self.context.peers_status()

    async def devices(self, request: dict[str, Any]) -> Any:
        return await self.context.devices()

    async def rename(self, request: dict[str, Any]) -> Any:
        name: str = param(request, "name", str)
        return await _membership_call(self.context.rename(name))

    async def id(self, request: dict[str, Any]) -> Any:
        cert_pem: bytes = self.context.node.replica.identity.cert_pem
        return {
            "device": self.context.device_id,
            "name": self.context.device_name,
            "cert": cert_pem.decode("ascii"),
        }

    async def trust(self, request: dict[str, Any]) -> Any:
        cert: str = param(request, "cert", str)
        name: str | None = param(request, "name", str, None)
        address: str | None = param(request, "address", str, None)
        readmit: bool = param(request, "readmit", bool, False)
        return await _membership_call(self.context.trust(cert.encode(), name, address, readmit))

    async def revoke(self, request: dict[str, Any]) -> Any:
        device: str = param(request, "device", str)
        return await _membership_call(self.context.revoke(device))

    async def reload(self, request: dict[str, Any]) -> Any:
        return await _membership_call(self.context.reload())

    async def ui_link(self, request: dict[str, Any]) -> Any:
        return await _membership_call(self.context.ui_link())

    async def nearby(self, request: dict[str, Any]) -> Any:
        return self.context.nearby()

    async def join(self, request: dict[str, Any]) -> Any:
        code: str = param(request, "code", str)
        address: str | None = param(request, "address", str, None)
        try:
            return await self.context.join(code, address)
        except PairingFailed as exc:
            raise RequestError(PAIRING_FAILED, str(exc)) from None
        except ValueError as exc:  # an unreadable code or address
            raise RequestError(BAD_REQUEST, str(exc)) from None

    async def start_pairing(self, request: dict[str, Any]) -> tuple[dict[str, Any], Follow]:
        """`pair` answers with the code, then one event line when the pairing ends."""
        node = self.context.node
        ttl: float = param(request, "ttl", int, DEFAULT_PAIRING_TTL)
        if not 10 <= ttl <= 3600:
            raise RequestError(BAD_REQUEST, "'ttl' must be between 10 and 3600 seconds")
        readmit: bool = param(request, "readmit", bool, False)
        shares: list[Any] = param(request, "shares", list, [])
        if not all(isinstance(share, str) for share in shares):
            raise RequestError(BAD_REQUEST, "'shares' must be a list of share names")
        shares = [share for share in dict.fromkeys(shares) if share != DEFAULT_SHARE]
        for share in shares:
            if not await node.call(
                node.replica.is_share_member, share, self.context.device_id
            ) or not await node.call(node.replica.holds, share):
                raise RequestError(NOT_FOUND, f"this device is in no share {share!r}")
        invitation = await self.context.pair(ttl, readmit, shares)

        async def follow(send: Send) -> None:
            try:
                with trio.move_on_after(invitation.expires_in()):
                    await invitation.done.wait()
                if not invitation.done.is_set():
                    invitation.expire()
            finally:  # also when the client hangs up: the code dies with its connection
                self.context.end_pairing(invitation)
            event: dict[str, Any]
            if invitation.result is not None:
                from_cert = device_id_from_certificate(invitation.result.peer_cert_pem)
                event = {
                    "event": "paired",
                    "device": from_cert,
                    "name": invitation.result.peer_name,
                    "shares": [DEFAULT_SHARE, *shares],
                }
            else:
                message = invitation.error or "the pairing failed"
                event = {
                    "event": "pairing_failed",
                    "error": {"code": PAIRING_FAILED, "message": message},
                }
            await send(json_line(event))

        result = {"code": str(invitation.code), "expires_in": round(invitation.expires_in())}
        return result, follow


async def _membership_call(call: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    try:
        return await call
    except LookupError as exc:
        raise RequestError(NOT_FOUND, str(exc).strip("'\"")) from None
    except ValueError as exc:
        raise RequestError(BAD_REQUEST, str(exc)) from None
