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
