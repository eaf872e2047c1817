"""Membership rules and device epochs (pure).

Membership is the replicated `_devices` collection. This module reads and writes its values and
holds the rules every device checks on apply, so that no device depends on another's goodwill:
- A revocation records a *cut*: per share, how far the revoker held each of the revoked device's
  epochs. Entries of those epochs beyond the cut are refused everywhere, and a device that applied
  some before it heard of the revocation takes them back out, so every member ends in one state.
  A pre-signed "un-revoke" lies beyond the cut too, so revocation is sticky.
- Every daemon start writes as a fresh epoch (actor), whose first entry in a share retires the
  device's earlier epochs it holds. Two epochs retiring the same head mean the state dir runs in
  two places; a retirement below what we hold means it was restored from an older copy. Neither
  can reuse an (actor, seq). A device has at most MAX_OPEN_EPOCHS unretired epochs per share.
It never stores anything and never reads the clock.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from . import identity, merge
from .entry import ChainHead, IntegrityError, LogEntry, check_chain, decode, head_message
from .merge import Sibling
from .vectors import device_of

DEVICES = "_devices"
FORKS = "_forks"  # key: a forked actor; value: the two signed runs that prove it (see proves_fork)
# Each running copy or restored backup of one state dir holds one open epoch until a later start
# retires it; an honest household never comes near this.
MAX_OPEN_EPOCHS = 16
Cut = dict[str, dict[str, int]]  # share -> actor -> last seq accepted


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    device_id: str
    name: str
    cert_pem: bytes
    added_by: str
    revoked: bool
    cut: Cut = field(default_factory=dict)
    revoked_by: str = ""
    revoked_at_ms: int = 0


def device_value(
    cert_pem: bytes,
    name: str,
    added_by: str,
    *,
    revoked: bool = False,
    cut: Cut | None = None,
    revoked_by: str = "",
    revoked_at_ms: int = 0,
) -> bytes:
    value: dict[str, Any] = {"cert": cert_pem, "name": name, "added_by": added_by}
    value["revoked"] = revoked
    if cut:
        value["cut"] = cut
    if revoked_by:
        value["revoked_by"], value["revoked_at"] = revoked_by, revoked_at_ms
    return msgpack.packb(value)


def device_record(device_id: str, siblings: list[Sibling]) -> DeviceRecord:
    """A device is revoked when any surviving sibling says so: revocation wins over a concurrent
    edit, so a device cannot be re-admitted by racing its own revocation. Cuts of all siblings
    combine (the lowest per epoch), so a re-admission never lifts an earlier cut."""
    live = [s for s in siblings if not s.deleted and s.value is not None]
    newest = merge.winner(live) if live else merge.winner(siblings)
    fields = record_fields(newest)
    revocations = [f for f in map(record_fields, live) if f.get("revoked") is True]
    revoked = newest.deleted or bool(revocations)
    cut: Cut = {}
    for sibling in live:
        _lower_into(cut, record_fields(sibling).get("cut"))
    first_revocation = min(revocations, key=lambda f: int_field(f.get("revoked_at")), default={})
    return DeviceRecord(
        device_id,
        str(fields.get("name", "")),
        bytes(fields.get("cert", b"")) if isinstance(fields.get("cert"), bytes) else b"",
        str(fields.get("added_by", "")),
        bool(revoked),
        cut,
        str(first_revocation.get("revoked_by", "")),
        int_field(first_revocation.get("revoked_at")),
    )


def record_fields(sibling: Sibling) -> dict[str, Any]:
    if not sibling.value:
        return {}
    try:
        fields = msgpack.unpackb(sibling.value, raw=False, strict_map_key=False)
    except Exception:
        return {}  # a record we cannot read vouches for nothing
    return fields if isinstance(fields, dict) else {}


def int_field(value: object) -> int:
    return value if type(value) is int else 0


def _lower_into(cut: Cut, wire: object) -> None:
    if not isinstance(wire, dict):
        return
    for share, actors in wire.items():
        if not isinstance(share, str) or not isinstance(actors, dict):
            continue
        target = cut.setdefault(share, {})
        for actor, seq in actors.items():
            if isinstance(actor, str) and type(seq) is int and seq >= 0:
                target[actor] = min(seq, target.get(actor, seq))


def revocation_cut(device_id: str, heads_by_share: Mapping[str, Mapping[str, int]]) -> Cut:
    """What the revoker holds of the device's epochs: the device's entries up to here stay."""
    return {
        share: {actor: seq for actor, seq in heads.items() if device_of(actor) == device_id}
        for share, heads in heads_by_share.items()
    }


def frozen_epochs(records: Iterable[DeviceRecord], share: str, own_device: str) -> dict[str, int]:
    """actor -> last seq accepted, for every epoch a revocation cut (our own are never cut
    here: a revoked device keeps its own writes)."""
    frozen: dict[str, int] = {}
    for record in records:
        if record.device_id != own_device:
            frozen.update(record.cut.get(share, {}))
    return frozen


def revoked_without_cut(records: Iterable[DeviceRecord]) -> set[str]:
    """Devices revoked by a release that recorded no cut: all their new epochs are refused."""
    return {r.device_id for r in records if r.revoked and not r.cut}


Run = list[tuple[bytes, bytes | None]]  # entries of one actor, in order, the last one signed


def fork_value(share: str, ours: Run, theirs: Run) -> bytes:
    return msgpack.packb({"share": share, "runs": [ours, theirs]})


def proven_fork(actor: str, public_key: bytes, value: bytes | None) -> str | None:
    """The share in which `value` proves `actor` forked: two runs of it, each a hash chain that
    ends in a valid signature of its origin, that give one seq two different hashes. None when
    it proves nothing (a member cannot freeze an honest actor with a bare claim)."""
    try:
        fields = msgpack.unpackb(value or b"", raw=False)
        share, runs = fields["share"], fields["runs"]
        first, second = (_signed_chain(actor, public_key, run) for run in runs)
    except (IntegrityError, ValueError, TypeError, KeyError, msgpack.UnpackException):
        return None
    if not isinstance(share, str) or first is None or second is None:
        return None
    return share if any(first[s] != second[s] for s in first.keys() & second.keys()) else None


def _signed_chain(actor: str, public_key: bytes, run: Run) -> dict[int, bytes] | None:
    """seq -> hash for every entry of the run and the one before it, if the run is genuine."""
    entries = [decode(bytes(raw)) for raw, _ in run]
    if not entries or any(e.actor != actor for e in entries):
        return None
    check_chain(entries[0].prev_hash, entries)
    last, signature = entries[-1], run[-1][1]
    message = head_message(last.share, last.actor, last.seq, last.hash)
    if not isinstance(signature, bytes) or not identity.verify_signature(
        public_key, signature, message
    ):
        return None
    hashes = {e.seq: e.hash for e in entries}
    if entries[0].seq > 1:
        hashes[entries[0].seq - 1] = entries[0].prev_hash
    return hashes


@dataclass(frozen=True, slots=True)
class Notice:
    """Something about a device's epochs that people should know; said once."""

    device_id: str
    kind: str  # "running_twice" | "restored" | "fork" | "baseline" (history/bootstrap.py)
    text: str


def fork_notice(actor: str) -> Notice:
    return Notice(
        device_of(actor),
        "fork",
        f"has two different signed histories of epoch {_epoch(actor)} (state written by p2psync "
        "0.1 on two copies); that epoch is set aside on every device and the values of both "
        "histories are written again, as conflicts where they differ",
    )


class EpochBook:
    """The epochs of every device in one share: which are retired, which retire what."""

    def __init__(self) -> None:
        self._retired: set[str] = set()
        self._retirements: dict[ChainHead, str] = {}  # a retired head -> the epoch retiring it
        # a retired epoch -> the seqs it was retired at; (epoch, seq) -> the epochs retiring it
        self._retired_at: dict[str, set[int]] = {}
        self._retired_by: dict[tuple[str, int], list[str]] = {}
        self._actors: dict[str, set[str]] = {}  # device -> epochs seen
        self._continues: dict[str, dict[str, int]] = {}  # epoch -> epochs it retired, to where
        self.refused: set[str] = set()

    def learn(
        self, entry: LogEntry, held: Mapping[str, tuple[int, bytes]]
    ) -> list[Notice]:
        """Record an applied entry's epoch; notices for copies and restores it reveals."""
        device = device_of(entry.actor)
        self._actors.setdefault(device, set()).add(entry.actor)
        notices = []
        for head in entry.retires:
            actor, seq, _ = head
            # an epoch held only through its retirement (no head of its own any more) ends there
            end = max(held.get(actor, (0, b""))[0], *self._retired_at.get(actor, {0}))
            self._continues.setdefault(entry.actor, {})[actor] = seq
            self._retired.add(actor)
            self._retired_at.setdefault(actor, set()).add(seq)
            self._retired_by.setdefault((actor, seq), []).append(entry.actor)
            other = self._retirements.setdefault(head, entry.actor)
            if other != entry.actor:
                notices.append(
                    Notice(
                        device,
                        "running_twice",
                        f"started twice from the same state ({_epoch(other)} and "
                        f"{_epoch(entry.actor)} both continue {_epoch(actor)} #{seq})",
                    )
                )
            elif end > seq:
                notices.append(
                    Notice(
                        device,
                        "restored",
                        f"started from an older copy of its state ({_epoch(entry.actor)} "
                        f"continues {_epoch(actor)} at #{seq}, but #{end} exists)",
                    )
                )
        return notices

    def admits(self, entry: LogEntry) -> bool:
        """False for a new epoch that would give its device more than MAX_OPEN_EPOCHS open ones
        (and for every later entry of an epoch refused so)."""
        if entry.actor in self.refused:
            return False
        if entry.seq != 1:
            return True
        device = device_of(entry.actor)
        retiring = {actor for actor, _, _ in entry.retires}
        open_epochs = {
            a for a in self._actors.get(device, ()) if a not in self._retired and a not in retiring
        }
        if entry.actor not in open_epochs and len(open_epochs) >= MAX_OPEN_EPOCHS:
            self.refused.add(entry.actor)
            return False
        # counted at once: the rest of a batch is judged with this epoch open
        self._actors.setdefault(device, set()).add(entry.actor)
        self._retired.update(retiring)
        return True

    def continues(self, actor: str) -> dict[str, int] | None:
        """The epochs `actor` took over at its start, and up to which seq (see merge.apply_op)."""
        return self._continues.get(actor)

    def closed(self) -> dict[str, tuple[int, str]]:
        """Retired epochs whose end is known without doubt (retired once, so no other copy went
        on writing them): epoch -> (its last seq, the epoch that retired it). Whoever holds the
        retiring epoch holds the retired one to that end (a retirement is part of the new
        epoch's causal past), so peers leave such epochs out of the vectors they exchange and
        vectors follow the open epochs, not every start there ever was."""
        return {
            actor: (next(iter(seqs)), self._retired_by[(actor, next(iter(seqs)))][0])
            for actor, seqs in self._retired_at.items()
            if len(seqs) == 1
        }

    def continued(self) -> dict[str, dict[str, int]]:
        """Every epoch's retirements (for vectors.implied): each is held by whoever holds the
        retiring epoch's first entry, and this book learns only entries that were applied."""
        return self._continues

    def retired_head(self, actor: str) -> tuple[int, bytes] | None:
        """The highest head at which `actor` was retired: where this device holds it to once it
        no longer keeps a head of its own for it (see vectors.compressed)."""
        heads = [(seq, entry_hash) for a, seq, entry_hash in self._retirements if a == actor]
        return max(heads, default=None)

    def own_leaves(self, device: str, heads: Mapping[str, tuple[int, bytes]]) -> list[ChainHead]:
        """The heads of `device`'s epochs that no epoch retires yet: what a new one continues."""
        return sorted(
            (actor, seq, entry_hash)
            for actor, (seq, entry_hash) in heads.items()
            if device_of(actor) == device and actor not in self._retired
        )


def _epoch(actor: str) -> str:
    return actor.rpartition("/")[2]
