"""Pairing codes and the SPAKE2 pairing state machine (pure).

Owns the human code ("7-guitar-orbit"), its parsing with typo suggestions, and the four-message
exchange by which an inviter and a joiner who share a code learn each other's certificate and
name (and the joiner the household's member records). It produces and consumes plain dicts that
the daemon frames as msgpack over TCP; it never opens sockets, reads the clock (`now_ms` is passed
in) or touches files. One guess per code: the first failed attempt burns it, and so does success.
A code that ended (used, expired, withdrawn) still names the reason to anyone who tries it.
"""

import difflib
import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, NoReturn

import msgpack
import spake2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from p2psync.pairing_words import WORDS

PROTOCOL_LABEL = b"p2psync-pair-v1"
MAX_NAMEPLATE = 999
DEFAULT_TTL_MS = 5 * 60 * 1000
# Every two words are at least 3 edits apart, so an input within 2 edits of a word is most likely
# that word mistyped; further away, a suggestion would be a guess.
_MAX_SUGGESTION_DISTANCE = 2
# Each box key encrypts exactly one message (one key per direction, fresh per session), so a
# constant nonce never repeats under the same key.
_BOX_NONCE = bytes(12)
_KNOWN_WORDS = frozenset(WORDS)
_NEW_CODE_HINT = "run `p2psync pair` again for a new one"


class PairingError(Exception):
    """A pairing that cannot go on; `str(error)` is a sentence for a person.

    `reply` holds the messages to send to the peer before closing the connection (a "fail"
    message saying why), empty when the peer is the one who stopped.
    """

    kind = "error"
    default_message = "pairing failed"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)
        self.reply: list[dict[str, Any]] = [fail_message(self)]


class InvalidCode(PairingError, ValueError):
    kind = "invalid-code"
    default_message = "that is not a pairing code; it looks like 7-guitar-orbit"


class WrongCode(PairingError):
    kind = "wrong-code"
    default_message = f"the pairing code was wrong; the code is now used up — {_NEW_CODE_HINT}"


class CodeExpired(PairingError):
    kind = "expired"
    default_message = f"the pairing code has expired — {_NEW_CODE_HINT}"


class CodeBurned(PairingError):
    kind = "burned"
    default_message = (
        "the pairing code is used up (it was used already, or someone tried a wrong code) — "
        f"{_NEW_CODE_HINT}"
    )


class CodeWithdrawn(PairingError):
    kind = "withdrawn"
    default_message = (
        f"the pairing code was withdrawn on the other device (its `p2psync pair` was stopped, or "
        f"a newer code replaced it) — {_NEW_CODE_HINT}"
    )


class NotPairing(PairingError):
    kind = "not-pairing"
    default_message = (
        "the other device is not pairing: no pairing code is active there — run `p2psync pair` "
        "on it for a code"
    )


class PairingProtocolError(PairingError):
    kind = "protocol"
    default_message = "the other device broke the pairing protocol"


class PairingAborted(PairingError):
    kind = "aborted"
    default_message = "the other device stopped pairing"


_PEER_ERRORS: dict[str, type[PairingError]] = {
    cls.kind: cls
    for cls in (WrongCode, CodeExpired, CodeBurned, CodeWithdrawn, NotPairing, PairingProtocolError)
}


# --- codes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairingCode:
    nameplate: int
    words: tuple[str, str]

    def __post_init__(self) -> None:
        if not 1 <= self.nameplate <= MAX_NAMEPLATE:
            raise InvalidCode(
                f"the number {self.nameplate} is out of range: codes start with a number "
                f"from 1 to {MAX_NAMEPLATE}"
            )
        unknown = [word for word in self.words if word not in _KNOWN_WORDS]
        if len(self.words) != 2 or unknown:
            raise InvalidCode(f"a code needs two words from the word list, got {self.words!r}")

    def __str__(self) -> str:
        return f"{self.nameplate}-{self.words[0]}-{self.words[1]}"

    @property
    def password(self) -> bytes:
        return str(self).encode("ascii")


def generate_code(random_bytes: Callable[[int], bytes]) -> PairingCode:
    """A fresh code: a uniform nameplate in 1..999 and two uniform words (16 secret bits)."""
    # Rejection sampling keeps the nameplate uniform: 65536 is not a multiple of 999.
    limit = 65536 - 65536 % MAX_NAMEPLATE
    while (drawn := int.from_bytes(random_bytes(2), "big")) >= limit:
        pass
    first, second = random_bytes(2)
    return PairingCode(drawn % MAX_NAMEPLATE + 1, (WORDS[first], WORDS[second]))


def parse_code(text: str) -> PairingCode:
    """Read a code as a person typed it: any case, dashes or spaces, stray whitespace."""
    parts = [part for part in re.split(r"[\s\-_]+", text.strip().lower()) if part]
    if not parts:
        raise InvalidCode("the pairing code is empty; it looks like 7-guitar-orbit")
    number, *words = parts
    if not re.fullmatch(r"[0-9]+", number):
        raise InvalidCode(
            f"a pairing code starts with the number shown by `p2psync pair` (like 7-guitar-orbit), "
            f"not {number!r}"
        )
    if len(words) != 2:
        raise InvalidCode(f"a pairing code has 2 words after the number, this one has {len(words)}")
    problems = [_unknown_word_message(word) for word in words if word not in _KNOWN_WORDS]
    if problems:
        raise InvalidCode("; ".join(problems))
    return PairingCode(int(number), (words[0], words[1]))


def suggest_word(typed: str) -> str | None:
    """The list word `typed` most likely is, or None when nothing is close."""
    typed = typed.lower()
    distances = {
        word: _edit_distance(typed, word)
        for word in WORDS
        if abs(len(word) - len(typed)) <= _MAX_SUGGESTION_DISTANCE
    }
    if not distances:
        return None
    nearest = min(distances.values())
    if nearest > _MAX_SUGGESTION_DISTANCE:
        return None
    tied = [word for word, distance in distances.items() if distance == nearest]
    # A single typo has exactly one nearest word; two typos may tie, and difflib's similarity
    # then prefers the word sharing the longest runs of letters.
    return difflib.get_close_matches(typed, tied, n=1, cutoff=0.0)[0]


def _unknown_word_message(word: str) -> str:
    suggestion = suggest_word(word)
    hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
    return f"unknown word {word!r}{hint}"


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance where swapping two adjacent letters also counts as one edit."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, a_char in enumerate(a, 1):
        current = [i]
        for j, b_char in enumerate(b, 1):
            cost = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a_char != b_char))
            if i > 1 and j > 1 and a_char == b[j - 2] and a[i - 2] == b_char:
                cost = min(cost, previous2[j - 2] + 1)
            current.append(cost)
        previous2, previous = previous, current
    return previous[-1]


# --- the exchange -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PairingResult:
    peer_cert_pem: bytes
    peer_name: str
    # Opaque records the inviter passed along (the household's devices); empty for the inviter.
    members: list[Any]


class InviterState(Enum):
    WAITING = "waiting"
    AWAITING_IDENT = "awaiting-ident"
    DONE = "done"
    BURNED = "burned"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"


OPEN_STATES = (InviterState.WAITING, InviterState.AWAITING_IDENT)
# how an ended code ended, for the inviter's log ("... refused: the code expired")
ENDED_AS = {
    InviterState.DONE: "was used",
    InviterState.BURNED: "is used up",
    InviterState.EXPIRED: "expired",
    InviterState.WITHDRAWN: "was withdrawn",
}


class JoinerState(Enum):
    NEW = "new"
    AWAITING_PAKE = "awaiting-pake"
    AWAITING_IDENT = "awaiting-ident"
    DONE = "done"
    FAILED = "failed"


def fail_message(error: PairingError) -> dict[str, Any]:
    return {"t": "fail", "reason": str(error), "error": error.kind}


@dataclass(frozen=True)
class _SessionKeys:
    transcript: bytes
    joiner_box: bytes
    inviter_box: bytes
    joiner_confirm: bytes
    inviter_confirm: bytes


def _spake_ids(nameplate: int) -> dict[str, bytes]:
    # Asymmetric SPAKE2: the roles are fixed (the joiner speaks first), distinct blinding points
    # per role and the side byte reject a reflected message, and the role names enter the key.
    session = PROTOCOL_LABEL + b"/nameplate=" + str(nameplate).encode("ascii")
    return {"idA": session + b"/joiner", "idB": session + b"/inviter"}


def _session_keys(
    spake_key: bytes, nameplate: int, joiner_pake: bytes, inviter_pake: bytes
) -> _SessionKeys:
    transcript = hashlib.sha256(
        msgpack.packb([PROTOCOL_LABEL, nameplate, joiner_pake, inviter_pake])
    ).digest()

    def derive(purpose: bytes) -> bytes:
        hkdf = HKDF(hashes.SHA256(), 32, salt=transcript, info=PROTOCOL_LABEL + b" " + purpose)
        return hkdf.derive(spake_key)

    return _SessionKeys(
        transcript,
        derive(b"joiner box"),
        derive(b"inviter box"),
        derive(b"joiner confirm"),
        derive(b"inviter confirm"),
    )


def _confirmation(key: bytes, transcript: bytes, *certs: bytes) -> bytes:
    bound = transcript + b"".join(hashlib.sha256(cert).digest() for cert in certs)
    return hmac.new(key, bound, hashlib.sha256).digest()


def _seal(key: bytes, transcript: bytes, contents: dict[str, Any]) -> dict[str, Any]:
    plaintext = msgpack.packb(contents, use_bin_type=True)
    return {"t": "ident", "box": ChaCha20Poly1305(key).encrypt(_BOX_NONCE, plaintext, transcript)}


def _open(key: bytes, transcript: bytes, message: dict[str, Any]) -> dict[str, Any]:
    box = _field(message, "box", bytes)
    try:
        plaintext = ChaCha20Poly1305(key).decrypt(_BOX_NONCE, box, transcript)
    except InvalidTag:
        raise WrongCode() from None
    try:
        contents = msgpack.unpackb(plaintext, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as error:
        raise PairingProtocolError(f"unreadable identity box ({error})") from None
    if not isinstance(contents, dict):
        raise PairingProtocolError("the identity box does not hold a map")
    _field(contents, "cert_pem", bytes)
    _field(contents, "name", str)
    _field(contents, "confirm", bytes)
    return contents


def _field(message: dict[str, Any], name: str, kind: type) -> Any:
    value = message.get(name)
    # bool is an int subclass; a nameplate of True is malformed, not 1.
    if type(value) is not kind:
        raise PairingProtocolError(f"field {name!r} should be {kind.__name__}, got {value!r:.60}")
    return value


def _message_type(message: object) -> str:
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise PairingProtocolError(f"not a pairing message: {message!r:.60}")
    return message["t"]


def _finish_spake(side: Any, peer_message: dict[str, Any]) -> bytes:
    inbound = _field(peer_message, "msg", bytes)
    try:
        return side.finish(inbound)
    # The spake2 library signals a bad element with several unrelated exception types.
    except Exception as error:
        raise PairingProtocolError(f"bad SPAKE2 message ({error})") from None


def _peer_failure(message: dict[str, Any]) -> PairingError:
    """The error matching a peer's "fail" message; its free text is shown quoted, never trusted."""
    kind = message.get("error")
    if isinstance(kind, str) and kind in _PEER_ERRORS:
        error = _PEER_ERRORS[kind]()
    else:
        error = PairingAborted(f"the other device stopped pairing: {message.get('reason')!r:.200}")
    error.reply = []
    return error


class Inviter:
    """The side that showed the code: answers exactly one attempt, before `ttl_ms` runs out.

    After an error the inviter is burned or expired for good, except for messages that come
    before any exchange started (garbage, a different nameplate): those leave it waiting, since
    nobody learned anything or spent the guess.
    """

    def __init__(
        self,
        code: PairingCode,
        cert_pem: bytes,
        name: str,
        now_ms: int,
        ttl_ms: int = DEFAULT_TTL_MS,
        members: Sequence[Any] = (),
    ) -> None:
        self.code = code
        self.expires_at_ms = now_ms + ttl_ms
        self.state = InviterState.WAITING
        self.result: PairingResult | None = None
        self._cert_pem = cert_pem
        self._name = name
        self._members = list(members)
        # Fail at creation rather than midway through a pairing if a record cannot travel.
        msgpack.packb(self._members, use_bin_type=True)
        self._keys: _SessionKeys | None = None

    def receive(self, message: dict[str, Any], now_ms: int) -> list[dict[str, Any]]:
        if self.state not in OPEN_STATES:
            self._fail(self.refusal(), self.state)
        if now_ms >= self.expires_at_ms:
            self._fail(CodeExpired(), InviterState.EXPIRED)
        if self.state is InviterState.WAITING:
            return self._receive_pake(message)
        try:
            return self._receive_ident(message)
        except PairingError as error:
            self._fail(error, InviterState.BURNED)

    def _receive_pake(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            kind = _message_type(message)
            if kind == "fail":
                raise _peer_failure(message)
            if kind != "pake":
                raise PairingProtocolError(f"expected a 'pake' message first, got {kind!r}")
            nameplate = _field(message, "nameplate", int)
            if nameplate != self.code.nameplate:
                raise PairingProtocolError(
                    f"this device is pairing with code number {self.code.nameplate}, "
                    f"not {nameplate}; check the code"
                )
            side = spake2.SPAKE2_B(self.code.password, **_spake_ids(nameplate))
            outbound = side.start()
            spake_key = _finish_spake(side, message)
        except PairingError as error:
            self._fail(error, InviterState.WAITING)
        self._keys = _session_keys(spake_key, nameplate, message["msg"], outbound)
        self.state = InviterState.AWAITING_IDENT
        return [{"t": "pake", "msg": outbound}]

    def _receive_ident(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        assert self._keys is not None
        kind = _message_type(message)
        if kind == "fail":
            raise _peer_failure(message)
        if kind == "pake":
            raise CodeBurned(
                f"another device tried this pairing code while a pairing was under way, so it is "
                f"used up — {_NEW_CODE_HINT}"
            )
        if kind != "ident":
            raise PairingProtocolError(f"expected an 'ident' message, got {kind!r}")
        contents = _open(self._keys.joiner_box, self._keys.transcript, message)
        expected = _confirmation(
            self._keys.joiner_confirm, self._keys.transcript, contents["cert_pem"]
        )
        if not hmac.compare_digest(contents["confirm"], expected):
            raise PairingProtocolError("the joiner's key confirmation does not match")
        self.result = PairingResult(contents["cert_pem"], contents["name"], [])
        self.state = InviterState.DONE
        confirm = _confirmation(
            self._keys.inviter_confirm, self._keys.transcript, contents["cert_pem"], self._cert_pem
        )
        reply = {
            "cert_pem": self._cert_pem,
            "name": self._name,
            "confirm": confirm,
            "members": self._members,
        }
        return [_seal(self._keys.inviter_box, self._keys.transcript, reply)]

    def _fail(self, error: PairingError, state: InviterState) -> NoReturn:
        self.state = state
        raise error

    def expire(self) -> None:
        """Its time is up (the caller keeps the clock): every later attempt hears so."""
        if self.state in OPEN_STATES:
            self.state = InviterState.EXPIRED

    def withdraw(self) -> None:
        """Whoever showed the code gave up on it: every later attempt hears so."""
        if self.state in OPEN_STATES:
            self.state = InviterState.WITHDRAWN

    def refusal(self) -> PairingError:
        """What an attempt on this code is told once the code has ended."""
        if self.state is InviterState.EXPIRED:
            return CodeExpired()
        if self.state is InviterState.WITHDRAWN:
            return CodeWithdrawn()
        return CodeBurned()


def attempted_nameplate(message: object) -> int | None:
    """The code number a joiner's first message names (public: it is announced on the LAN)."""
    nameplate = message.get("nameplate") if isinstance(message, dict) else None
    return nameplate if type(nameplate) is int else None


def ended_code(message: object, ended: Sequence[Inviter]) -> Inviter | None:
    """The code of ours, among those that ended, that an attempt names by its number (the
    latest such): its `refusal` says why the attempt gets nothing. None when there is none."""
    nameplate = attempted_nameplate(message)
    for inviter in reversed(ended):
        if inviter.code.nameplate == nameplate and inviter.state not in OPEN_STATES:
            return inviter
    return None


class Joiner:
    """The side that typed the code: speaks first, and reveals its certificate only inside a box
    that opens for someone who knows the code.

    `now_ms` is taken for the same interface as the inviter; the joiner keeps no deadline of its
    own (the inviter's expiry and the connection's timeout bound it).
    """

    def __init__(self, code: PairingCode, cert_pem: bytes, name: str) -> None:
        self.code = code
        self.state = JoinerState.NEW
        self.result: PairingResult | None = None
        self._cert_pem = cert_pem
        self._name = name
        self._side = spake2.SPAKE2_A(code.password, **_spake_ids(code.nameplate))
        self._outbound = b""
        self._keys: _SessionKeys | None = None

    def start(self) -> list[dict[str, Any]]:
        if self.state is not JoinerState.NEW:
            raise RuntimeError("Joiner.start() may be called only once")
        self._outbound = self._side.start()
        self.state = JoinerState.AWAITING_PAKE
        return [{"t": "pake", "nameplate": self.code.nameplate, "msg": self._outbound}]

    def receive(self, message: dict[str, Any], now_ms: int) -> list[dict[str, Any]]:
        if self.state is JoinerState.NEW:
            raise RuntimeError("call Joiner.start() before Joiner.receive()")
        if self.state in (JoinerState.DONE, JoinerState.FAILED):
            raise PairingProtocolError(f"a message after the pairing ended: {message!r:.60}")
        try:
            kind = _message_type(message)
            if kind == "fail":
                raise _peer_failure(message)
            if self.state is JoinerState.AWAITING_PAKE:
                return self._receive_pake(kind, message)
            return self._receive_ident(kind, message)
        except PairingError:
            self.state = JoinerState.FAILED
            raise

    def _receive_pake(self, kind: str, message: dict[str, Any]) -> list[dict[str, Any]]:
        if kind != "pake":
            raise PairingProtocolError(f"expected a 'pake' message, got {kind!r}")
        spake_key = _finish_spake(self._side, message)
        keys = _session_keys(spake_key, self.code.nameplate, self._outbound, message["msg"])
        self._keys = keys
        self.state = JoinerState.AWAITING_IDENT
        confirm = _confirmation(keys.joiner_confirm, keys.transcript, self._cert_pem)
        contents = {"cert_pem": self._cert_pem, "name": self._name, "confirm": confirm}
        return [_seal(keys.joiner_box, keys.transcript, contents)]

    def _receive_ident(self, kind: str, message: dict[str, Any]) -> list[dict[str, Any]]:
        assert self._keys is not None
        if kind != "ident":
            raise PairingProtocolError(f"expected an 'ident' message, got {kind!r}")
        contents = _open(self._keys.inviter_box, self._keys.transcript, message)
        expected = _confirmation(
            self._keys.inviter_confirm, self._keys.transcript, self._cert_pem, contents["cert_pem"]
        )
        if not hmac.compare_digest(contents["confirm"], expected):
            raise PairingProtocolError("the inviter's key confirmation does not match")
        members = contents.get("members", [])
        if not isinstance(members, list):
            raise PairingProtocolError(f"'members' should be a list, got {members!r:.60}")
        self.result = PairingResult(contents["cert_pem"], contents["name"], members)
        self.state = JoinerState.DONE
        return []
