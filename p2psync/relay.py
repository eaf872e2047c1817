"""Which entries a sender may skip, and what each peer is told about what we hold (pure).

The rules of "each entry crosses each link once" (docs/architecture.md): a device claims the
actors whose writers deliver to it over a live session (`claims`); a sender skips those actors'
entries for that peer (`skipped`, `Skipping`), except its own; when a claim goes, the sender
rewinds (`lost`). A peer is told at once what we now hold of actors that reached us by relay,
and of claimed actors only when the claim goes (`Outbox`). No I/O here: the trio side lives in
`sender.py`.
"""

from collections.abc import Iterable, Iterator, Mapping

Vector = dict[str, int]
Claims = Mapping[str, frozenset[str]]  # share -> actors
HELD = 1 << 62  # what a skipped actor reads as in a peer's vector: "has them all"


def claims(links: Iterable[tuple[str, frozenset[str]]]) -> dict[str, frozenset[str]]:
    """Our claims from our live sessions: (the peer's current actor, the shares both sides
    stream). A writer holds every entry of its current actor, and streams all the peer lacks."""
    found: dict[str, set[str]] = {}
    for actor, shares in links:
        for share in shares:
            found.setdefault(share, set()).add(actor)
    return {share: frozenset(actors) for share, actors in found.items()}


def lost(before: Claims, after: Claims) -> dict[str, frozenset[str]]:
    """The actors, per share, claimed before and not after."""
    gone = {share: actors - after.get(share, frozenset()) for share, actors in before.items()}
    return {share: actors for share, actors in gone.items() if actors}


def skipped(peer_claims: Claims, share: str, our_actor: str) -> frozenset[str]:
    """Whose entries we need not send this peer: its writers send them; ours we always send."""
    return peer_claims.get(share, frozenset()) - {our_actor}


class Skipping(Mapping[str, int]):
    """A peer's known vector in which the skipped actors read as held in full."""

    def __init__(self, known: Mapping[str, int], skip: frozenset[str]) -> None:
        self._known = known
        self._skip = skip

    def __getitem__(self, actor: str) -> int:
        return HELD if actor in self._skip else self._known[actor]

    def get(self, actor: str, default: int | None = None) -> int | None:  # type: ignore[override]
        return HELD if actor in self._skip else self._known.get(actor, default)

    def __iter__(self) -> Iterator[str]:
        return iter(set(self._known) | self._skip)

    def __len__(self) -> int:
        return len(set(self._known) | self._skip)


def raise_to(known: Vector, seen: Mapping[str, int]) -> None:
    for actor, seq in seen.items():
        if seq > known.get(actor, 0):
            known[actor] = seq


def without(vector: Mapping[str, int], skip: frozenset[str]) -> Vector:
    return {actor: seq for actor, seq in vector.items() if actor not in skip}


class Outbox:
    """What one peer has been told about us: seqs we hold (`have`) and our claims (`direct`).

    `note` marks actors that reached us by relay: the peer hears of them at the next flush, so
    its sender stops relaying them too. Actors we claim are not told while claimed: the peer
    skips them anyway (and `status` does not count them), and needs their exact seqs only at the
    moment the claim goes, when they are told at once, before the claims that drop them."""

    def __init__(self) -> None:
        self.told: dict[str, Vector] = {}
        self.announced: dict[str, frozenset[str]] | None = None
        self._urgent: dict[str, set[str]] = {}

    def note(self, share: str, actors: Iterable[str]) -> None:
        self._urgent.setdefault(share, set()).update(actors)

    @property
    def urgent(self) -> bool:
        return bool(self._urgent)

    def wanted(self, ours: Claims, peer_actor: str | None) -> dict[str, set[str]]:
        """Whose seqs to look up for this flush (and forget the noted ones)."""
        found, self._urgent = self._urgent, {}
        for share, gone in lost(self.announced or {}, ours).items():
            found.setdefault(share, set()).update(gone)
        for actors in found.values():
            actors.discard(peer_actor or "")
        return {share: actors for share, actors in found.items() if actors}

    def news(self, held: Mapping[str, Mapping[str, int]]) -> dict[str, Vector]:
        """Of the seqs we hold, those above what the peer was told; they count as told now."""
        found: dict[str, Vector] = {}
        for share, vector in held.items():
            told = self.told.setdefault(share, {})
            fresh = {actor: seq for actor, seq in vector.items() if seq > told.get(actor, 0)}
            if fresh:
                told.update(fresh)
                found[share] = fresh
        return found

    def direct_due(self, ours: Claims) -> bool:
        return self.announced != dict(ours)
