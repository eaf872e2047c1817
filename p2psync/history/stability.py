"""Stability reports and the frontiers computed from them (pure).

Each member of a share writes, now and then, an ordinary replicated record `_stable/<its device
id>` holding its summary vector of the share, the wall-clock time of the report, the report it
replaces (that report's dot and vector) and a few reports before that one. So every member learns
every member's vector through the log itself. From them:

- the *stable frontier* S: the pointwise minimum of the vectors of the members that are not away
  (a member whose newest report is older than `keep_for_absent` is left out, so one device in a
  drawer does not hold history back forever). Every entry within S is held by every such member;
  each vector is causally closed, so S is too, and the log within S can be folded.
- the *purge frontier* P: per member, the vector of its newest report that is itself within S
  (its newest, or one of the EARLIER_REPORTS it names); P is the minimum of those over *every*
  member, away or not. A tombstone within P can never meet a concurrent write again: each member
  had it when writing a report that everyone now holds, and everything a member wrote before that
  report is within S. Away members count here, so tombstones are kept for them until they report
  again or leave the share (see docs/architecture.md, "History and compaction").

It never stores anything, never reads the clock and never talks to the network.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..merge import Sibling
from ..vectors import Vector, device_of

STABLE = "_stable"  # key: device id; value: report_value(...)
Dot = tuple[str, int]
DAY_MS = 86_400_000
# A report names this many of its device's earlier reports (key "p": the one it replaces, read by
# 0.4.0; key "o": the ones before that), so that while replication lags several intervals behind
# a write storm, one of them is still within S and the purge and settled frontiers move.
EARLIER_REPORTS = 4


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    """The `[history]` settings, in milliseconds."""

    interval_ms: int  # between reports while data is unsettled
    keep_for_absent_ms: int

    @property
    def refresh_ms(self) -> int:
        """A quiet member reports this often, so that it is never taken for away: daily, or
        more often when the bound is short."""
        return min(DAY_MS, self.keep_for_absent_ms // 4)

    @classmethod
    def of(cls, interval_s: float, keep_for_absent_days: float) -> "HistoryPolicy":
        return cls(int(interval_s * 1000), int(keep_for_absent_days * DAY_MS))


@dataclass(frozen=True, slots=True)
class Away:
    """A member missing from reports for longer than a quiet one would be."""

    device_id: str
    since_ms: int  # its newest report
    kept_until_ms: int  # when it stops holding compaction back


@dataclass(frozen=True, slots=True)
class Report:
    """What one member held of a share at the entry `dot` (which wrote the report)."""

    device_id: str
    dot: Dot
    vector: dict[str, int]
    at_ms: int
    previous: "Report | None" = None
    # the baseline its device had folded to: (frontier B, digest of the rows at B), see
    # history/snapshot.py; None from a device that had folded nothing (or a 0.4.0 one)
    baseline: tuple[dict[str, int], bytes] | None = None
    older: "tuple[Report, ...]" = ()  # the reports before `previous`, newest first
    # its device reads vectors less the retired epochs they imply (key "i", 0.5.0 and later);
    # False from 0.4.0, which takes a vector as written (see `report_value`)
    reads_implied: bool = False

    @property
    def earlier(self) -> "tuple[Report, ...]":
        """The earlier reports this one names, newest first."""
        return () if self.previous is None else (self.previous, *self.older)


@dataclass(frozen=True, slots=True)
class Frontiers:
    stable: dict[str, int]  # S
    purge: dict[str, int]  # P
    settled: dict[str, int]  # P over the members present only: what their reports can still move
    away: dict[str, int] = field(default_factory=dict)  # member -> its newest report's time


def report_value(
    vector: Mapping[str, int],
    at_ms: int,
    previous: Report | None,
    baseline: tuple[Mapping[str, int], bytes] | None = None,
) -> bytes:
    # "i": this device puts back the retired epochs a vector implies (vectors.implied), so others
    # may leave them out of their reports; 0.4.0 ignores the key, and is sent them in full
    value: dict[str, Any] = {"v": dict(vector), "t": at_ms, "i": 1}
    if previous is not None:
        value["p"] = _wire_report(previous)
        older = previous.earlier[: EARLIER_REPORTS - 1]
        if older:
            value["o"] = [_wire_report(report) for report in older]  # 0.4.0 ignores it
    if baseline is not None and baseline[0]:
        # an extra key: readers of 0.4.0 ignore it
        value["b"] = [dict(baseline[0]), baseline[1]]
    return msgpack.packb(value, use_bin_type=True)


def _wire_report(report: Report) -> list[Any]:
    return [report.dot[0], report.dot[1], report.vector]


def _named_report(device_id: str, wire: object) -> Report | None:
    if not (isinstance(wire, list) and len(wire) == 3 and isinstance(wire[0], str)):
        return None
    vector = _vector(wire[2])
    if type(wire[1]) is not int or vector is None:
        return None
    return Report(device_id, (wire[0], wire[1]), vector, 0)


def _baseline(wire: object) -> tuple[dict[str, int], bytes] | None:
    if not (isinstance(wire, list) and len(wire) == 2 and isinstance(wire[1], bytes)):
        return None
    frontier = _vector(wire[0])
    return None if not frontier else (frontier, wire[1])


def _vector(wire: object) -> dict[str, int] | None:
    if not isinstance(wire, dict):
        return None
    if not all(isinstance(a, str) and type(s) is int and s >= 0 for a, s in wire.items()):
        return None
    return dict(wire)


def read_report(device_id: str, siblings: Iterable[Sibling]) -> Report | None:
    """The newest well-formed report a member wrote itself (a sibling written by another device
    or not decodable is ignored: it says nothing about what that member held)."""
    found: Report | None = None
    for sibling in siblings:
        if sibling.deleted or sibling.value is None or device_of(sibling.actor) != device_id:
            continue
        try:
            wire = msgpack.unpackb(sibling.value, raw=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            continue
        if not isinstance(wire, dict):
            continue
        vector, at_ms = _vector(wire.get("v")), wire.get("t")
        if vector is None or type(at_ms) is not int:
            continue
        previous = _named_report(device_id, wire.get("p"))
        older_wire = wire.get("o") if previous is not None else None
        older = [_named_report(device_id, w) for w in older_wire or ()] if isinstance(
            older_wire, list
        ) else []
        report = Report(
            device_id,
            sibling.dot,
            vector,
            at_ms,
            previous,
            _baseline(wire.get("b")),
            tuple(r for r in older[: EARLIER_REPORTS - 1] if r is not None),
            wire.get("i") == 1,
        )
        if found is None or at_ms > found.at_ms:
            found = report
    return found


def pointwise_min(vectors: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """What every one of `vectors` holds (none at all: nothing)."""
    listed = list(vectors)
    if not listed:
        return {}
    low = dict(listed[0])
    for vector in listed[1:]:
        low = {a: min(s, vector.get(a, 0)) for a, s in low.items() if vector.get(a, 0) > 0}
    return {a: s for a, s in low.items() if s > 0}


def within(vector: Vector, dot: Dot) -> bool:
    return vector.get(dot[0], 0) >= dot[1]


def frontiers(
    members: Iterable[str],
    reports: Mapping[str, Report | None],
    now_ms: int,
    keep_for_absent_ms: int,
) -> Frontiers:
    """S and P of a share (see the module docstring). A member without a report holds nothing
    as far as anyone knows, so nothing is stable until every member has reported once."""
    listed = sorted(set(members))
    if not listed or any(reports.get(m) is None for m in listed):
        return Frontiers({}, {}, {})
    newest = {m: r for m in listed if (r := reports.get(m)) is not None}
    away = {m: r.at_ms for m, r in newest.items() if now_ms - r.at_ms > keep_for_absent_ms}
    stable = pointwise_min(r.vector for m, r in newest.items() if m not in away)
    settled = {
        member: next((r.vector for r in (report, *report.earlier) if within(stable, r.dot)), None)
        for member, report in newest.items()
    }
    return Frontiers(
        stable,
        _settled_min(stable, settled.values()),
        _settled_min(stable, (v for m, v in settled.items() if m not in away)),
        away,
    )


def _settled_min(
    stable: dict[str, int], vectors: Iterable[dict[str, int] | None]
) -> dict[str, int]:
    listed = list(vectors)
    if any(vector is None for vector in listed):
        return {}
    return pointwise_min([stable, *(vector for vector in listed if vector is not None)])


def away_members(
    heard: Mapping[str, int], members: Iterable[str], policy: HistoryPolicy, now_ms: int
) -> list[Away]:
    """Members whose newest report (`heard`: device -> its time) is older than two refreshes:
    not heard from, longest first (for `status`; compaction waits for them until
    `kept_until_ms`). A member that never reported is new, not away."""
    found = [
        Away(member, heard[member], heard[member] + policy.keep_for_absent_ms)
        for member in set(members)
        if member in heard and now_ms - heard[member] > 2 * policy.refresh_ms
    ]
    return sorted(found, key=lambda away: (away.since_ms, away.device_id))


# Folding has a cost per run (a pass over what is left of the log, a transaction): while writes
# stream in, it waits for this many entries, and otherwise for the frontier to stop moving.
FOLD_AT_LEAST = 8192


def worth_folding(
    base: Mapping[str, int], target: Mapping[str, int], last: Mapping[str, int]
) -> bool:
    """Whether to fold from `base` up to `target` now, `last` being the stable frontier seen at
    the previous look."""
    count = sum(max(0, seq - base.get(actor, 0)) for actor, seq in target.items())
    return count >= FOLD_AT_LEAST or (count > 0 and dict(target) == dict(last))


def should_report(
    last: Report | None,
    vector: Mapping[str, int],
    unsettled: bool,
    now_ms: int,
    interval_ms: int,
    refresh_ms: int,
) -> bool:
    """Whether a member writes a new report now. `unsettled`: it holds an entry that is more than
    a report beyond the frontier the present members' reports settle. Reports go on (at most
    every `interval_ms`) while there is such data, and stop once there is none, since each
    report is itself an entry for the others to report; a quiet member still reports every
    `refresh_ms`, so that it is not taken for away."""
    if last is None:
        return bool(vector)
    since = now_ms - last.at_ms
    if since >= refresh_ms:
        return True
    return since >= interval_ms and unsettled and dict(vector) != last.vector
