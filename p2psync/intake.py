"""Verification of received entries before they may touch the store (pure).

Entries arrive from any peer, relayed byte for byte, each optionally carrying its origin's signature
over the chain head it ends. An actor's entries are released only as a contiguous run that extends
the chain we hold and ends at a valid signature from the origin's key; a run cannot be shortened,
reordered or edited without breaking the hash chain.

What waits is kept apart per sending peer and bounded in bytes per peer, so one member's junk can
neither fill memory nor stand in the way of another peer's valid copy: a forged unsigned entry
sent by one peer waits in that peer's own queue while the honest relay's signed run is verified and
released, after which the forgery is dropped and its sender named. Entries from devices we have no
key for wait for the membership record that introduces them. This module never stores anything.
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

from . import identity
from .entry import IntegrityError, LogEntry, check_chain, head_message

ChainHead = tuple[int, bytes]
Peer = str
# An honest sender signs at least every few MiB of its log (see Replica.commit_many), so a run
# waiting for its signature stays well under this.
MAX_PENDING_BYTES_PER_PEER = 32 * 1024 * 1024
KEEP_SIGNATURE_EVERY_BYTES = 1024 * 1024


class Verified(NamedTuple):
    entry: LogEntry
    signature: bytes | None
    peer: Peer


# Built in C (a NamedTuple's own __new__ is Python code): a catch-up releases one per entry.
_new_verified = partial(tuple.__new__, Verified)


@dataclass(frozen=True, slots=True)
class Fork:
    """Two different entries, each validly signed by the origin, claim one (actor, seq).
    `evidence` is the other branch's run from `seq` to its first signature."""

    actor: str
    seq: int
    peer: Peer
    evidence: tuple[tuple[bytes, bytes | None], ...] = ()


@dataclass(slots=True)
class Released:
    verified: list[Verified] = field(default_factory=list)
    offenders: dict[Peer, str] = field(default_factory=dict)  # peer -> what it did wrong
    forks: list[Fork] = field(default_factory=list)


class _PeerQueue:
    __slots__ = ("by_actor", "size")

    def __init__(self) -> None:
        self.by_actor: dict[str, dict[int, tuple[LogEntry, bytes | None]]] = {}
        self.size = 0

    def drop(self, actor: str, seqs: Iterable[int]) -> None:
        by_seq = self.by_actor[actor]
        for seq in seqs:
            self.size -= len(by_seq.pop(seq)[0].raw)
        if not by_seq:
            del self.by_actor[actor]


class Intake:
    def __init__(self, max_pending_bytes: int = MAX_PENDING_BYTES_PER_PEER) -> None:
        self.max_pending_bytes = max_pending_bytes
        self._queues: dict[Peer, _PeerQueue] = {}
        self._verified_heads: dict[str, ChainHead] = {}
        self._differing_heads: list[tuple[Peer, LogEntry, bytes]] = []

    def __len__(self) -> int:
        return sum(len(s) for q in self._queues.values() for s in q.by_actor.values())

    def pending_bytes(self, peer: Peer) -> int:
        queue = self._queues.get(peer)
        return 0 if queue is None else queue.size

    def add(
        self, peer: Peer, entry: LogEntry, signature: bytes | None, stored_head: ChainHead
    ) -> None:
        """Queue an entry `peer` sent; duplicates of what is verified are dropped. Raises
        IntegrityError when `peer` contradicts itself or sends more than its byte allowance."""
        head_seq, head_hash = self._verified_heads.setdefault(entry.actor, stored_head)
        if entry.seq <= head_seq:
            if entry.seq == head_seq and entry.hash != head_hash and signature is not None:
                self._differing_heads.append((peer, entry, signature))  # judged on release
            return
        # get before setdefault: this runs once per received entry, and setdefault would build
        # a queue and a dict each time to throw them away
        queue = self._queues.get(peer) or self._queues.setdefault(peer, _PeerQueue())
        by_seq = queue.by_actor.get(entry.actor)
        if by_seq is None:
            by_seq = queue.by_actor[entry.actor] = {}
        held = by_seq.get(entry.seq)
        if held is not None:
            if held[0].hash != entry.hash:
                raise IntegrityError(f"sent two different entries for {entry.actor} #{entry.seq}")
            if signature is not None and held[1] is None:
                by_seq[entry.seq] = (entry, signature)
            return
        if queue.size + len(entry.raw) > self.max_pending_bytes:
            raise IntegrityError(
                f"sent more than {self.max_pending_bytes:,} bytes of entries that do not "
                "extend a chain up to a signature"
            )
        by_seq[entry.seq] = (entry, signature)
        queue.size += len(entry.raw)

    def release(self, public_key_of: Callable[[str], bytes | None]) -> Released:
        """Every entry that now extends a verified chain up to a valid origin signature, the peers
        whose queued entries proved false, and the forks seen."""
        released = Released()
        for peer, entry, signature in self._differing_heads:
            public_key = public_key_of(entry.origin)
            if public_key is None:
                continue
            if _signed(public_key, signature, entry):
                released.forks.append(
                    Fork(entry.actor, entry.seq, peer, ((entry.raw, signature),))
                )
            else:
                released.offenders[peer] = f"sent {entry.actor} #{entry.seq} with a false signature"
        self._differing_heads.clear()
        progress = True
        while progress:
            progress = False
            for peer, queue in list(self._queues.items()):
                for actor in list(queue.by_actor):
                    if peer in released.offenders:
                        break
                    run = self._release_run(peer, queue, actor, public_key_of, released)
                    if run:
                        released.verified += run
                        progress = True
        for peer in released.offenders:
            self.forget_peer(peer)
        return released

    def _release_run(
        self,
        peer: Peer,
        queue: _PeerQueue,
        actor: str,
        public_key_of: Callable[[str], bytes | None],
        released: Released,
    ) -> list[Verified]:
        by_seq = queue.by_actor[actor]
        head_seq, head_hash = self._verified_heads[actor]
        run: list[tuple[LogEntry, bytes | None]] = []
        seq = head_seq + 1
        while (queued := by_seq.get(seq)) is not None:
            run.append(queued)
            seq += 1
        signed_end = len(run) - 1
        while signed_end >= 0 and run[signed_end][1] is None:
            signed_end -= 1
        if signed_end < 0:
            return []
        public_key = public_key_of(run[0][0].origin)
        if public_key is None:
            return []
        run = _thin_signatures(run[: signed_end + 1])
        verdict = _judge(public_key, head_hash, run)
        queue.drop(actor, range(head_seq + 1, head_seq + 1 + len(run)))
        if verdict is not None:
            if verdict == _FORK:
                first_signed = next(i for i, (_, sig) in enumerate(run) if sig is not None)
                evidence = tuple((e.raw, sig) for e, sig in run[: first_signed + 1])
                released.forks.append(Fork(actor, run[0][0].seq, peer, evidence))
            else:
                released.offenders[peer] = verdict
            return []
        last = run[-1][0]
        self._verified_heads[actor] = (last.seq, last.hash)
        self._drop_settled(actor, run, released)
        return [_new_verified((entry, signature, peer)) for entry, signature in run]

    def _drop_settled(
        self, actor: str, run: list[tuple[LogEntry, bytes | None]], released: Released
    ) -> None:
        """Other peers' copies of the entries just verified go; a different unsigned copy is a
        lie. (What runs verified before this one settled was dropped when they were.)"""
        head_seq, _ = self._verified_heads[actor]
        for peer, queue in self._queues.items():
            by_seq = queue.by_actor.get(actor)
            if not by_seq:
                continue
            settled = [seq for seq in by_seq if seq <= head_seq]
            for seq in settled:
                offered = run[seq - run[0][0].seq][0] if seq >= run[0][0].seq else None
                if offered is not None and by_seq[seq][0].hash != offered.hash:
                    released.offenders.setdefault(
                        peer, f"sent a forged copy of {actor} #{seq} (not what its origin signed)"
                    )
            queue.drop(actor, settled)

    def forget_peer(self, peer: Peer) -> None:
        """Free everything a peer sent that is still waiting (it left, or it lied)."""
        self._queues.pop(peer, None)

    def waiting(self) -> Mapping[str, int]:
        """How many entries wait per actor (for status displays)."""
        counts: dict[str, int] = {}
        for queue in self._queues.values():
            for actor, by_seq in queue.by_actor.items():
                counts[actor] = counts.get(actor, 0) + len(by_seq)
        return counts

    def rewind(self, actor: str, head: ChainHead) -> None:
        """Our stored chain of `actor` was cut back (a revocation): verify from there again."""
        self._verified_heads[actor] = head

    def clear(self) -> None:
        self._queues.clear()
        self._verified_heads.clear()
        self._differing_heads.clear()


_FORK = "fork"


def _judge(
    public_key: bytes, head_hash: bytes, run: list[tuple[LogEntry, bytes | None]]
) -> str | None:
    """None when `run` extends `head_hash` and every signature in it is valid; _FORK when it is
    a validly signed chain that branches off ours; otherwise what is wrong with it."""
    for entry, signature in run:
        if signature is not None and not _signed(public_key, signature, entry):
            return f"sent {entry.actor} #{entry.seq} with a signature that is not its origin's"
    try:
        check_chain(run[0][0].prev_hash, [entry for entry, _ in run])
    except IntegrityError:
        return f"sent entries of {run[0][0].actor} that do not form a hash chain"
    if run[0][0].prev_hash != head_hash:
        return _FORK
    return None


def _thin_signatures(
    run: list[tuple[LogEntry, bytes | None]],
) -> list[tuple[LogEntry, bytes | None]]:
    """The run with only the signatures worth keeping: the last one, which vouches for every
    entry before it through the hash chain, and one every KEEP_SIGNATURE_EVERY_BYTES, so what we
    relay later reaches a signature often enough for the receiver's allowance. The others are
    neither checked (an Ed25519 verify costs more than the rest of an entry) nor stored."""
    thinned = list(run)
    since_kept = 0
    last = len(run) - 1
    for index, (entry, signature) in enumerate(run):
        since_kept += len(entry.raw)
        if signature is None:
            continue
        if index == last or since_kept >= KEEP_SIGNATURE_EVERY_BYTES:
            since_kept = 0
        else:
            thinned[index] = (entry, None)
    return thinned


def _signed(public_key: bytes, signature: bytes, entry: LogEntry) -> bool:
    message = head_message(entry.share, entry.actor, entry.seq, entry.hash)
    return identity.verify_signature(public_key, signature, message)
