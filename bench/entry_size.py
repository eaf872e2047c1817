"""Bytes of a one-op entry (what an app's single put becomes) as the household's writers grow.

Before release 0.2.0 an entry carried the writer's whole summary vector, so its size grew with
every actor the household ever had; now it carries only the dots its own ops replace. Prints the
size with 2 and with 200 actors known, and ends with a `RESULT {json}` line.

    python bench/entry_size.py
"""

import json

import msgpack

from p2psync import entry, identity
from p2psync.replica import Replica
from p2psync.shares import DEFAULT_SHARE as SHARE


def one_op_entry_bytes(actors_known: int) -> int:
    """The size of a one-put entry written after `actors_known` actors each wrote one record."""
    me = identity.DeviceIdentity.generate()
    replica = Replica.open(":memory:", me)
    others = [identity.DeviceIdentity.generate() for _ in range(max(actors_known // 10, 1))]
    replica.commit(SHARE, [replica.device_op(o.cert_pem, "other") for o in others])
    for n in range(actors_known - 1):
        author = others[n % len(others)]
        actor = f"{author.device_id}/{n:08x}"
        made = entry.encode(
            SHARE, actor, 1, entry.GENESIS_HASH, 1, {}, [entry.put("c", f"k{n}", b"\x01")]
        )
        signature = author.sign(entry.head_message(SHARE, actor, 1, made.hash))
        replica.apply(SHARE, [(made.raw, signature)], "bench")
    replica.commit(SHARE, [entry.put("notes", "shopping", msgpack.packb({"milk": 2}))])
    items, _ = replica.entries_after(SHARE, 0, {}, 1 << 30)
    return len(items[-1][0])


def main() -> None:
    sizes = {actors: one_op_entry_bytes(actors) for actors in (2, 200)}
    for actors, size in sizes.items():
        print(f"one-op entry with {actors:>3} actors known: {size:>6,} bytes")
    print("RESULT " + json.dumps({"one_op_entry_bytes": sizes}))


if __name__ == "__main__":
    main()
