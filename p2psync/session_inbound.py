"""The sync session's inbound messages after hello: each one's fields checked, the event it
gives made (pure).

A mixin of `session.SyncConnection`, kept apart so the state machine reads whole: the session
decodes frames, enforces hello first and negotiates the version, then hands the other messages
here; a malformed field raises `BadField`, which the session turns into a `ProtocolError`. The
share checks lean on what the hellos named (`common_shares`). It never sends anything, never
decides what to do with an event (that is the daemon's job) and never does I/O.
"""

from typing import Any

from .session_events import (
    Bye,
    CaughtUp,
    Direct,
    Entries,
    Have,
    Heads,
    NotMember,
    PeerVector,
    Ping,
    SnapshotEnd,
    SnapshotFrom,
    SnapshotRows,
    SnapshotStart,
    Vector,
)

MAX_VECTOR_ACTORS = 500_000  # what we buffer of one peer's vector before it is complete
MAX_DIRECT_ACTORS = 10_000  # of all shares together in one `direct`: far above any household


class BadField(Exception):
    """A field of a peer's message that breaks the protocol; the message says which and how."""


def require(condition: bool, complaint: str) -> None:
    if not condition:
        raise BadField(complaint)


def is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def on_ping(message: dict[str, Any]) -> Ping:
    wall_ms, idle_ms = message.get("ms"), message.get("idle")
    return Ping(
        wall_ms if type(wall_ms) is int else None,
        idle_ms if type(idle_ms) is int and idle_ms > 0 else None,
    )


class InboundMessages:
    # set by SyncConnection
    _announced: dict[str, Heads] | None
    _peer_shares: frozenset[str] | None
    _partial_vectors: dict[tuple[str, str], Vector]
    _closed: bool

    @property
    def common_shares(self) -> frozenset[str]:
        raise NotImplementedError

    def _on_vector(self, message: dict[str, Any]) -> PeerVector | None:
        share = _share_field(message)
        assert self._announced is not None and self._peer_shares is not None
        require(share in self._announced, f"vector of share {share!r}, which we did not offer")
        complete = self._gather_vector("vector", message)
        if complete is None:
            return None
        self._peer_shares |= {share}  # a share we offered that the peer joins
        return PeerVector(share, complete)

    def _shared_field(self, kind: str, message: dict[str, Any]) -> str:
        share = _share_field(message)
        require(share in self.common_shares, f"{kind} of share {share!r}, which is not shared")
        return share

    def _gather_vector(self, kind: str, message: dict[str, Any]) -> Vector | None:
        """The whole vector once its last frame is in; None while more frames are due."""
        key = (kind, _share_field(message))
        gathered = self._partial_vectors.pop(key, {})
        gathered.update(_vector_field(message))
        require(len(gathered) <= MAX_VECTOR_ACTORS, f"more than {MAX_VECTOR_ACTORS} actors")
        if message.get("more") is True:
            self._partial_vectors[key] = gathered
            return None
        return gathered

    def _on_entries(self, message: dict[str, Any]) -> Entries:
        share = self._shared_field("entries", message)
        items: Any = message.get("i")
        require(isinstance(items, list), "'i' must be a list of [entry, signature]")
        checked = tuple(
            (item[0], item[1])
            for item in items
            # one expression per item, no call: a catch-up frame carries a thousand of them
            if type(item) is list
            and len(item) == 2
            and type(item[0]) is bytes
            and (item[1] is None or type(item[1]) is bytes)
        )
        require(
            len(checked) == len(items), "each item must be [entry bytes, signature bytes or nil]"
        )
        return Entries(share, checked)

    def _on_caught_up(self, message: dict[str, Any]) -> CaughtUp | None:
        share = self._shared_field("caught_up", message)
        complete = self._gather_vector("caught_up", message)
        return None if complete is None else CaughtUp(share, complete)

    def _on_have(self, message: dict[str, Any]) -> Have:
        return Have(self._shared_field("have", message), _vector_field(message))

    def _on_direct(self, message: dict[str, Any]) -> Direct:
        actor: Any = message.get("a")
        require(isinstance(actor, str) and actor != "", "'a' must be an actor")
        listed: Any = message.get("d")
        require(
            isinstance(listed, dict)
            and all(
                isinstance(share, str)
                and isinstance(actors, list)
                and all(isinstance(a, str) for a in actors)
                for share, actors in listed.items()
            ),
            "'d' must map share names to lists of actors",
        )
        require(set(listed) <= self.common_shares, "'d' names shares this session does not sync")
        total = sum(len(actors) for actors in listed.values())
        require(total <= MAX_DIRECT_ACTORS, f"more than {MAX_DIRECT_ACTORS} direct actors")
        return Direct(actor, {share: frozenset(actors) for share, actors in listed.items()})

    def _on_snap_start(self, message: dict[str, Any]) -> SnapshotStart:
        share = self._shared_field("snap_start", message)
        offer: Any = message.get("o")
        require(isinstance(offer, bytes), "'o' must be a packed snapshot offer")
        return SnapshotStart(share, offer)

    def _on_snap_from(self, message: dict[str, Any]) -> SnapshotFrom:
        share, after = self._shared_field("snap_from", message), message.get("k")
        require(
            after is None
            or (
                isinstance(after, list)
                and len(after) == 2
                and all(isinstance(k, str) for k in after)
            ),
            "'k' must be [collection, key] or nil",
        )
        return SnapshotFrom(share, None if after is None else (after[0], after[1]))

    def _on_snap_rows(self, message: dict[str, Any]) -> SnapshotRows:
        share = self._shared_field("snap_rows", message)
        rows: Any = message.get("r")
        require(
            isinstance(rows, list) and all(isinstance(r, bytes) for r in rows),
            "'r' must be a list of rows",
        )
        return SnapshotRows(share, tuple(rows))

    def _on_snap_end(self, message: dict[str, Any]) -> SnapshotEnd:
        return SnapshotEnd(self._shared_field("snap_end", message))

    def _on_not_member(self, message: dict[str, Any]) -> NotMember:
        share, reason = _share_field(message), message.get("r", "")
        assert self._announced is not None
        require(share in self._announced, f"not_member of share {share!r}, which we did not offer")
        require(isinstance(reason, str) and len(reason) <= 1000, "'r' must be a short string")
        return NotMember(share, reason)

    def _on_bye(self, message: dict[str, Any]) -> Bye:
        reason, code = message.get("r", ""), message.get("c", "")
        require(isinstance(reason, str) and isinstance(code, str), "'r' and 'c' must be strings")
        self._closed = True
        return Bye(reason, code)


def _share_field(message: dict[str, Any]) -> str:
    share = message.get("s")
    require(isinstance(share, str) and share != "", "'s' must be a share name")
    return str(share)


def _vector_field(message: dict[str, Any]) -> Vector:
    vector: Any = message.get("vv")
    require(
        isinstance(vector, dict)
        and all(isinstance(actor, str) and is_count(seq) for actor, seq in vector.items()),
        "'vv' must map actors to sequence numbers",
    )
    return dict(vector)
