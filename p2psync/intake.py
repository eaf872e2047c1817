"""Verification of received entries before they may touch the store (pure).

Entries arrive from any peer, relayed byte for byte, each optionally carrying its origin's signature
over the chain head it ends. An actor's entries are released only as a contiguous run that extends
the chain we hold and ends at a valid signature from the origin's key; a run cannot be shortened,
reordered or edited without breaking the hash chain. Entries whose predecessors or signature have
not arrived yet wait here (bounded); entries from devices we have no key for wait for the
membership record that introduces them. This module never stores anything.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from . import identity
from .entry import IntegrityError, LogEntry, check_chain, head_message

ChainHead = tuple[int, bytes]


@dataclass(frozen=True, slots=True)
class Verified:
    entry: LogEntry
    signature: bytes | None


class Intake:
    def __init__(self, max_pending: int = 200_000) -> None:
        self.max_pending = max_pending
        self._pending: dict[str, dict[int, tuple[LogEntry, bytes | None]]] = {}
        self._verified_heads: dict[str, ChainHead] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, entry: LogEntry, signature: bytes | None, stored_head: ChainHead) -> None:
        """Queue a received entry; duplicates of what is held or verified are dropped."""
        head_seq, _ = self._verified_heads.setdefault(entry.actor, stored_head)
        if entry.seq <= head_seq:
            return
        by_seq = self._pending.setdefault(entry.actor, {})
        held = by_seq.get(entry.seq)
        if held is not None:
            if held[0].hash != entry.hash:
                raise IntegrityError(f"two different entries claim {entry.actor} #{entry.seq}")
            if signature is not None and held[1] is None:
                by_seq[entry.seq] = (entry, signature)
            return
        if self._count >= self.max_pending:
            raise IntegrityError("too many entries waiting for their predecessors or signature")
        by_seq[entry.seq] = (entry, signature)
        self._count += 1

    def release(self, public_key_of: Callable[[str], bytes | None]) -> list[Verified]:
        """Every entry that now extends a verified chain up to a valid origin signature."""
        released: list[Verified] = []
        for actor in list(self._pending):
            released.extend(self._release_actor(actor, public_key_of))
        return released

    def _release_actor(
        self, actor: str, public_key_of: Callable[[str], bytes | None]
    ) -> list[Verified]:
        by_seq = self._pending[actor]
        head_seq, head_hash = self._verified_heads[actor]
        run: list[tuple[LogEntry, bytes | None]] = []
        seq = head_seq + 1
        while seq in by_seq:
            run.append(by_seq[seq])
            seq += 1
        signed_end = max((i for i, (_, sig) in enumerate(run) if sig is not None), default=-1)
        if signed_end < 0:
            return []
        public_key = public_key_of(run[0][0].origin)
        if public_key is None:
            return []
        run = run[: signed_end + 1]
        check_chain(head_hash, [entry for entry, _ in run])
        for entry, signature in run:
            if signature is not None:
                check_signature(public_key, signature, entry)
        for entry, _ in run:
            del by_seq[entry.seq]
        self._count -= len(run)
        if not by_seq:
            del self._pending[actor]
        last = run[-1][0]
        self._verified_heads[actor] = (last.seq, last.hash)
        return [Verified(entry, signature) for entry, signature in run]

    def waiting(self) -> Mapping[str, int]:
        """How many entries wait per actor (for status displays)."""
        return {actor: len(by_seq) for actor, by_seq in self._pending.items()}

    def clear(self) -> None:
        self._pending.clear()
        self._verified_heads.clear()
        self._count = 0


def check_signature(public_key: bytes, signature: bytes, entry: LogEntry) -> None:
    message = head_message(entry.share, entry.actor, entry.seq, entry.hash)
    if not identity.verify_signature(public_key, signature, message):
        raise IntegrityError(
            f"entry {entry.actor} #{entry.seq} is not signed by its origin device {entry.origin}"
        )
