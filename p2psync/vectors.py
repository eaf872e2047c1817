"""Version vectors and dots (pure).

A version vector maps an actor (`"<device id>/<epoch>"`) to the highest contiguous sequence number
seen from it; a dot `(actor, seq)` names one write. Vectors are plain dicts so they travel over
msgpack and JSON unchanged; absent actors count as 0. Nothing here mutates its arguments.
"""

from collections.abc import Mapping
from enum import Enum

Vector = Mapping[str, int]


class Order(Enum):
    EQUAL = "equal"
    BEFORE = "before"
    AFTER = "after"
    CONCURRENT = "concurrent"


def merge(a: Vector, b: Vector) -> dict[str, int]:
    """The least upper bound: everything either side has seen."""
    merged = dict(a)
    for actor, seq in b.items():
        if seq > merged.get(actor, 0):
            merged[actor] = seq
    return merged


def dominates(a: Vector, b: Vector) -> bool:
    """True when `a` has seen everything `b` has."""
    return all(a.get(actor, 0) >= seq for actor, seq in b.items())


def compare(a: Vector, b: Vector) -> Order:
    a_covers_b = dominates(a, b)
    b_covers_a = dominates(b, a)
    if a_covers_b and b_covers_a:
        return Order.EQUAL
    if a_covers_b:
        return Order.AFTER
    if b_covers_a:
        return Order.BEFORE
    return Order.CONCURRENT


def covers(vector: Vector, actor: str, seq: int) -> bool:
    """True when the write `(actor, seq)` is included in `vector`."""
    return vector.get(actor, 0) >= seq


def device_of(actor: str) -> str:
    return actor.rpartition("/")[0]


def make_actor(device_id: str, epoch: str) -> str:
    return f"{device_id}/{epoch}"


# retiring epoch -> {epoch it retired: the seq it was retired at} (membership.EpochBook.continued)
Retirements = Mapping[str, Mapping[str, int]]


def implied(vector: Vector, retirements: Retirements) -> dict[str, int]:
    """`vector` with the epochs it holds without naming them. An epoch's first entry depends on
    the heads it retires, so a causally closed vector holding any entry of the retiring epoch
    holds each retired one to its retirement (and so on, down each chain of restarts). Every
    vector a replica keeps or receives is causally closed."""
    expanded = dict(vector)
    pending = [actor for actor, seq in expanded.items() if seq > 0 and actor in retirements]
    while pending:
        for actor, seq in retirements[pending.pop()].items():
            if expanded.get(actor, 0) < seq:
                if expanded.get(actor, 0) == 0 and actor in retirements:
                    pending.append(actor)
                expanded[actor] = seq
    return expanded


def compressed(vector: Vector, retirements: Retirements) -> dict[str, int]:
    """`vector` less the epochs `implied` puts back exactly: retired epochs held to where their
    retirement says. Kept and exchanged vectors then follow the epochs still writing, not every
    restart there ever was."""
    dropped = {
        actor
        for retirer, seq in vector.items()
        if seq > 0
        for actor, end in retirements.get(retirer, {}).items()
        if vector.get(actor) == end
    }
    kept = {actor: seq for actor, seq in vector.items() if actor not in dropped}
    back = implied(kept, retirements)
    if any(back.get(actor, 0) != seq for actor, seq in vector.items()):
        return dict(vector)  # not a chain of retirements (never from applied entries): keep all
    return kept
