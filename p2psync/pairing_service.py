"""Pairing over the network: carries the pure `pairing` state machines over TCP (trio).

The inviter's side listens on the ordinary sync port: a pairing connection starts with a fixed
preface instead of a TLS ClientHello, and the listener hands it here. Messages are framed with the
wire codec. This module moves messages and enforces time limits; every decision (right code,
expiry, one guess) is the state machine's. It never touches membership itself: the daemon records
the other device when a pairing succeeds.

Every failure is named the same on both sides and logged where it happens: a code that expired,
was withdrawn (its `pair` stream closed, or a newer code replaced it) or was used is remembered
(the last few), so that a late joiner is told which, and a device with no code says it is not
pairing rather than that a code is used up.
"""

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from . import pairing
from .journal import log_extra
from .pairing import (
    ENDED_AS,
    OPEN_STATES,
    Inviter,
    InviterState,
    Joiner,
    NotPairing,
    PairingCode,
    PairingError,
    PairingResult,
)
from .wire import FrameDecoder, WireError, encode_frame

log = logging.getLogger("p2psync.pairing")
PAIRING_FAILED = log_extra("pairing_failed")  # journald MESSAGE_ID
PREFACE = b"P2PSYNC-PAIR/1\n"
MAX_PAIRING_FRAME = 256 * 1024
STEP_TIMEOUT = 15.0
ENDED_CODES_REMEMBERED = 8
EXPIRED_MESSAGE = "the code expired unused; run `p2psync pair` for a new one"
REPLACED_MESSAGE = "a newer code replaced this one (`p2psync pair` was run again)"
# TXT keys of the mDNS announcement: the number of the code on offer, and of the last one that
# ended (so that a joiner typing it finds the device and is told why it no longer works)
PAIRING_TXT = "pair"
ENDED_PAIRING_TXT = "ended"
Address = tuple[str, int]


class PairingFailed(Exception):
    """A pairing attempt ended without success; the message is for people."""


@dataclass
class Invitation:
    code: PairingCode
    inviter: Inviter
    done: trio.Event
    result: PairingResult | None = None
    error: str | None = None

    def expires_in(self) -> float:
        return max(0.0, (self.inviter.expires_at_ms - wall_ms()) / 1000)

    def expire(self) -> None:
        """The code's time is up: its `pair` stream says so, and so does any later attempt."""
        if self.inviter.state in OPEN_STATES:
            self.inviter.expire()
            self.error = EXPIRED_MESSAGE
            self.done.set()


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class _Channel:
    """Framed pairing messages over one TCP stream, each step under a time limit."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder(MAX_PAIRING_FRAME)

    async def send(self, messages: Sequence[dict[str, Any]]) -> None:
        for message in messages:
            await self.stream.send_all(encode_frame(message, max_frame=MAX_PAIRING_FRAME))

    async def receive(self) -> dict[str, Any]:
        with trio.fail_after(STEP_TIMEOUT):
            while True:
                message = self.decoder.next_message()
                if message is not None:
                    return message
                data = await self.stream.receive_some(65536)
                if not data:
                    raise PairingFailed("the other device closed the connection")
                self.decoder.feed(bytes(data))


class PairingService:
    def __init__(
        self,
        cert_pem: bytes,
        name: Callable[[], str],
        members: Callable[[], Awaitable[list[dict[str, Any]]]],
        on_paired: Callable[[PairingResult, str], Awaitable[None]],
    ) -> None:
        self.cert_pem = cert_pem
        self.name = name
        self.members = members
        self.on_paired = on_paired
        self.invitation: Invitation | None = None
        self.ended: deque[Invitation] = deque(maxlen=ENDED_CODES_REMEMBERED)

    async def invite(self, ttl_seconds: float) -> Invitation:
        """Start a new invitation, replacing any earlier one (its code dies with it)."""
        if self.invitation is not None:
            self._withdraw(self.invitation, REPLACED_MESSAGE)
        code = pairing.generate_code(os.urandom)
        inviter = Inviter(
            code,
            self.cert_pem,
            self.name(),
            wall_ms(),
            int(ttl_seconds * 1000),
            members=await self.members(),
        )
        self.invitation = Invitation(code, inviter, trio.Event())
        return self.invitation

    def cancel(self, invitation: Invitation) -> None:
        """The invitation's `pair` stream ended: a code still open is withdrawn; either way it
        is remembered, and an expiry logged."""
        if invitation.inviter.state is InviterState.EXPIRED and invitation not in self.ended:
            log.info("pairing code number %d expired unused", invitation.code.nameplate)
        self._withdraw(invitation, "the pairing was cancelled")

    def _withdraw(self, invitation: Invitation, why: str) -> None:
        if self.invitation is invitation:
            self.invitation = None
        if invitation.inviter.state in OPEN_STATES:
            invitation.inviter.withdraw()
            log.info("pairing code number %d withdrawn: %s", invitation.code.nameplate, why)
        if not invitation.done.is_set():
            invitation.error = invitation.error or why
            invitation.done.set()
        if invitation not in self.ended:
            self.ended.append(invitation)

    async def handle_incoming(self, stream: trio.abc.Stream, address: str) -> None:
        """An incoming pairing connection (its preface already read)."""
        channel = _Channel(stream)
        try:
            first = await channel.receive()
        except (WireError, PairingFailed, trio.TooSlowError, trio.BrokenResourceError) as exc:
            log.warning("pairing attempt from %s broke off: %s", address, _describe(exc))
            return
        invitation = self.invitation  # as it is now: a code may have ended while we waited
        nameplate = pairing.attempted_nameplate(first)
        ended = None
        if invitation is None or nameplate != invitation.code.nameplate:
            ended = pairing.ended_code(first, [i.inviter for i in self.ended])
        # logged before the joiner hears it: whoever reads both logs sees them in that order
        if ended is not None:
            why = f"pairing code number {nameplate} {ENDED_AS[ended.state]}"
            log.warning(
                "pairing attempt from %s refused: %s", address, why, extra=PAIRING_FAILED
            )
            await _send_quietly(channel, ended.refusal().reply)
            return
        if invitation is None:
            log.warning(
                "pairing attempt from %s refused: no pairing code is active",
                address,
                extra=PAIRING_FAILED,
            )
            await _send_quietly(channel, NotPairing().reply)
            return
        try:
            replies = invitation.inviter.receive(first, wall_ms())
            await channel.send(replies)
            while invitation.inviter.result is None:
                replies = invitation.inviter.receive(await channel.receive(), wall_ms())
                await channel.send(replies)
        except PairingError as exc:
            log.warning(
                "pairing attempt from %s failed: %s", address, exc, extra=PAIRING_FAILED
            )
            await _send_quietly(channel, exc.reply)
            if _is_final(invitation):
                self._finish(invitation, error=str(exc))
            return
        except (WireError, PairingFailed, trio.TooSlowError, trio.BrokenResourceError) as exc:
            if _is_final(invitation):
                self._finish(invitation, error=f"pairing with {address} broke off: {exc}")
            log.warning("pairing attempt from %s broke off: %s", address, _describe(exc))
            return
        result = invitation.inviter.result
        await self.on_paired(result, address)
        self._finish(invitation, result=result)

    def _finish(
        self,
        invitation: Invitation,
        *,
        result: PairingResult | None = None,
        error: str | None = None,
    ) -> None:
        invitation.result, invitation.error = result, error
        if self.invitation is invitation:
            self.invitation = None
        invitation.done.set()
        if invitation not in self.ended:
            self.ended.append(invitation)

    async def join(
        self, code: PairingCode, addresses: Sequence[Address]
    ) -> tuple[PairingResult, Address]:
        """Try each candidate address until one answers; the first real attempt decides."""
        try:
            return await self._join(code, addresses)
        except PairingFailed as exc:
            log.warning(
                "joining with pairing code number %d failed: %s",
                code.nameplate,
                exc,
                extra=PAIRING_FAILED,
            )
            raise

    async def _join(
        self, code: PairingCode, addresses: Sequence[Address]
    ) -> tuple[PairingResult, Address]:
        if not addresses:
            raise PairingFailed(
                f"found no device offering pairing code {code.nameplate} on the network; check "
                "that both devices are on the same network, or give the inviter's address with "
                "--address HOST:PORT"
            )
        last_error = "no address answered"
        for host, port in addresses:
            try:
                with trio.fail_after(STEP_TIMEOUT):
                    stream = await trio.open_tcp_stream(host, port)
            except (OSError, trio.TooSlowError) as exc:
                last_error = f"{host}:{port}: {_describe(exc)}"
                continue
            async with stream:
                return await self._run_joiner(code, stream, f"{host}:{port}"), (host, port)
        raise PairingFailed(f"could not reach the inviting device ({last_error})")

    async def _run_joiner(
        self, code: PairingCode, stream: trio.abc.Stream, address: str
    ) -> PairingResult:
        joiner = Joiner(code, self.cert_pem, self.name())
        channel = _Channel(stream)
        try:
            await stream.send_all(PREFACE)
            await channel.send(joiner.start())
            while joiner.result is None:
                await channel.send(joiner.receive(await channel.receive(), wall_ms()))
        except PairingError as exc:
            await _send_quietly(channel, exc.reply)
            raise PairingFailed(str(exc)) from None
        except (WireError, trio.TooSlowError, trio.BrokenResourceError, OSError) as exc:
            raise PairingFailed(f"pairing with {address} broke off: {_describe(exc)}") from None
        await self.on_paired(joiner.result, address)
        return joiner.result


def announcing(
    devices: Iterable[tuple[dict[str, str], Sequence[Address]]], nameplate: int
) -> tuple[list[Address], list[Address]]:
    """The addresses of devices (TXT, addresses) offering code number `nameplate`, and of
    those whose code with that number ended (they say why it no longer works)."""
    offering: list[Address] = []
    ended: list[Address] = []
    for txt, addresses in devices:
        if txt.get(PAIRING_TXT) == str(nameplate):
            offering.extend(addresses)
        elif txt.get(ENDED_PAIRING_TXT) == str(nameplate):
            ended.extend(addresses)
    return offering, ended


def _is_final(invitation: Invitation) -> bool:
    """The state machine burns or expires a code for good; only then is the invitation over."""
    return invitation.inviter.state in (
        InviterState.BURNED,
        InviterState.EXPIRED,
        InviterState.DONE,
    )


async def _send_quietly(channel: _Channel, messages: Sequence[dict[str, Any]]) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await channel.send(messages)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    return str(exc) or type(exc).__name__
