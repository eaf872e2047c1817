"""The daemon's side of pairing (trio): issuing a code, joining with one, and what both sides
record once paired (a mixin of `Daemon`, kept apart so each file reads whole).

The pairing protocol itself is `pairing.py` and its transport `pairing_service.py`; this module
only decides what the daemon does around them: which shares a new device is placed in, which
devices a joiner learns, where a joiner looks for the inviter. It never writes membership
except through the node, and never pairs a revoked device back in without `readmit`.
"""

import logging
import math
from collections.abc import Sequence
from typing import Any

import trio

from . import config_values, identity, pairing
from .daemon_role import DaemonRole
from .journal import log_extra
from .pairing import PairingResult
from .pairing_service import Invitation, announcing
from .shares import DEFAULT_SHARE
from .shares.rules import ShareError

log = logging.getLogger("p2psync")
JOIN_SEARCH_SECONDS = 10.0
ENDED_CODE_GRACE_SECONDS = 2.0
GIVEN_SHARES = "given_shares"  # the record of the pairing members list that names shares


class PairingRole(DaemonRole):
    async def pair(
        self, ttl_seconds: float, readmit: bool = False, shares: Sequence[str] = ()
    ) -> Invitation:
        self.shares_by_pairing = list(shares)  # before the invite: it names them to the joiner
        invitation = await self.pairing.invite(ttl_seconds)
        self.readmit_by_pairing = readmit
        if self.discovery is not None:
            self.discovery.set_pairing(invitation.code.nameplate)
        nameplate = invitation.code.nameplate
        log.info("pairing code issued (number %s, valid %d s)", nameplate, ttl_seconds)
        return invitation

    def end_pairing(self, invitation: Invitation) -> None:
        self.pairing.cancel(invitation)
        if self.discovery is not None and self.pairing.invitation is None:
            # still findable by its number, to tell a late joiner why it no longer works
            self.discovery.set_pairing(None, ended=invitation.code.nameplate)

    async def join(self, code_text: str, address: str | None) -> dict[str, Any]:
        code = pairing.parse_code(code_text)
        if address:
            candidates = [config_values.parse_address(address)]
        else:
            candidates = await self._find_inviter(code.nameplate)
        result, inviter = await self.pairing.join(code, candidates)
        device_id = identity.device_id_from_certificate(result.peer_cert_pem)
        self.peers.dial(inviter, device_id)
        given = [
            share
            for record in result.members
            if isinstance(record, dict) and isinstance(record.get(GIVEN_SHARES), list)
            for share in record[GIVEN_SHARES]
            if isinstance(share, str)
        ]
        return {
            "device": identity.device_id_from_certificate(result.peer_cert_pem),
            "name": result.peer_name,
            "members": len([r for r in result.members if isinstance(r, dict) and "cert" in r]),
            "shares": [DEFAULT_SHARE, *given],
        }

    async def _find_inviter(self, nameplate: int) -> list[tuple[str, int]]:
        """Addresses of devices announcing this pairing number, waiting a little for them; if
        none offers it, those whose code of that number ended (they tell the joiner why)."""
        started = trio.current_time()
        ended: list[tuple[str, int]] = []
        with trio.move_on_after(JOIN_SEARCH_SECONDS):
            while True:
                nearby = self.discovery.nearby().values() if self.discovery else ()
                found, ended = announcing(((d.txt, d.addresses) for d in nearby), nameplate)
                if found or self.discovery is None:
                    return found
                # a device offering that number may answer a moment after one whose code ended
                ended_from = started + ENDED_CODE_GRACE_SECONDS
                if ended and trio.current_time() >= ended_from:
                    return ended
                with trio.move_on_at(ended_from if ended else math.inf):
                    await self.nearby_changed.wait()
        return ended

    async def _member_certs(self) -> list[dict[str, Any]]:
        """What an inviter passes the joiner: the household's devices, and the shares it is
        given (a record older joiners skip, having no certificate)."""
        records: list[dict[str, Any]] = [
            {"cert": device.cert_pem, "name": device.name}
            for device in self.members.values()
            if not device.revoked
        ]
        if self.shares_by_pairing:
            records.append({GIVEN_SHARES: list(self.shares_by_pairing)})
        return records

    async def _paired(self, result: PairingResult, address: str) -> None:
        """Both sides record the other; the joiner also learns the rest of the household."""
        device_id = identity.device_id_from_certificate(result.peer_cert_pem)
        known = await self._member(device_id)
        if known is not None and known.revoked and not self.readmit_by_pairing:
            log.warning(
                "paired with %s (%s), which was revoked: not re-admitted (pair with --readmit "
                "to let it back in)",
                result.peer_name,
                device_id,
            )
            return
        ops = [self.node.replica.device_op(result.peer_cert_pem, result.peer_name)]
        for member in result.members:
            cert = member.get("cert") if isinstance(member, dict) else None
            if isinstance(cert, bytes) and _is_certificate(cert) and cert != self.identity.cert_pem:
                known = self.members.get(identity.device_id_from_certificate(cert))
                if known is None:
                    ops.append(self.node.replica.device_op(cert, str(member.get("name", ""))))
        await self.node.commit(DEFAULT_SHARE, ops)
        for share in self.shares_by_pairing:
            try:
                added = await self.node.call(self.node.replica.share_add_ops, share, device_id)
                await self.node.commit(share, added)
            except ShareError as exc:  # left or removed since the code was made
                log.warning(
                    "could not add %s to share %s: %s", result.peer_name, share, exc,
                    extra=log_extra(peer=device_id, peer_name=result.peer_name, share=share),
                )  # fmt: skip
        await self.peers.refresh_trust()
        log.info(
            "paired with %s (%s) at %s", result.peer_name, device_id, address,
            extra=log_extra("paired", peer=device_id, peer_name=result.peer_name),
        )  # fmt: skip


def _is_certificate(cert: bytes) -> bool:
    try:
        identity.device_id_from_certificate(cert)
    except identity.InvalidCertificate:
        return False
    return True
