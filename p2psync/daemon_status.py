"""The daemon's reports, as the control socket's `status`, `peers` and `devices` answers carry
them (pure).

It turns what the daemon hands it (membership records, peer states, summary vectors, notices,
last-seen times and `now`) into the JSON shapes documented in docs/control-protocol.md: one row
per peer, one per device (this one included), and the notices, revocations and clock skews
`status` lists with people's names in them. It holds no
state, never reads the clock, the database or the network, and decides nothing: what to report,
and when, is the daemon's.
"""

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .history.stability import Away
from .identity import short_id
from .membership import Notice
from .replica import DeviceRecord
from .session import SNAPSHOT_RELEASE
from .shares import DEFAULT_SHARE

if TYPE_CHECKING:
    from .peer_state import PeerState


def name_of(members: Mapping[str, DeviceRecord], device_id: str) -> str:
    """A member's name for people; its id when it has none (or is not a member)."""
    member = members.get(device_id)
    return member.name if member is not None and member.name else device_id


def notices_json(
    notices: Iterable[Notice],
    running_twice: Mapping[str, set[str]],
    members: Mapping[str, DeviceRecord],
) -> list[dict[str, Any]]:
    """The replica's notices about epochs, then the devices seen running in two places."""
    return [
        {
            "device": n.device_id,
            "name": name_of(members, n.device_id),
            "kind": n.kind,
            "text": f"{name_of(members, n.device_id)} {n.text}",
        }
        for n in notices
    ] + [
        {
            "device": device_id,
            "name": name_of(members, device_id),
            "kind": "running_in_two_places",
            "text": f"{name_of(members, device_id)} is running in two places: "
            + " and ".join(sorted(places)),
        }
        for device_id, places in running_twice.items()
    ]


def revoked_json(
    revoked_us: Mapping[str, str], members: Mapping[str, DeviceRecord]
) -> list[dict[str, Any]]:
    """The members that told us we were revoked, and what they said."""
    return [
        {"by": name_of(members, member), "text": f"this device was {text}"}
        for member, text in revoked_us.items()
    ]


def clock_skew_json(
    skewed: Mapping[str, int], members: Mapping[str, DeviceRecord]
) -> list[dict[str, Any]]:
    return [
        {"device": device_id, "name": name_of(members, device_id), "offset_ms": offset}
        for device_id, offset in skewed.items()
    ]


def history_json(
    compaction: bool,
    away: Iterable[Away],
    unheard: Iterable[str],
    members: Mapping[str, DeviceRecord],
    now_ms: int,
    versions: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """Whether the log is compacted, the members whose absence it waits for (or no longer
    does: their deletes are still kept for them, see docs/architecture.md), and the members it
    waits for because they never reported, with the p2psync version each last said (`versions`;
    none from a release before 0.4.0, which cannot report, or a device not met yet)."""
    rows = []
    for member in away:
        name = name_of(members, member.device_id)
        days = (now_ms - member.since_ms) // 86_400_000
        until = _utc_day(member.kept_until_ms)
        text = f"{name} has been away {days} days; "
        if now_ms < member.kept_until_ms:
            text += f"history since then is kept for it until {until}"
        else:
            text += f"history was kept for it until {until}: only its deletes are kept for it now"
        rows.append(
            {
                "device": member.device_id,
                "name": name,
                "since_ms": member.since_ms,
                "kept_until_ms": member.kept_until_ms,
                "text": text,
            }
        )
    said = versions or {}
    waiting = [
        {
            "device": device_id,
            "name": name_of(members, device_id),
            "version": said.get(device_id),
            "text": _unreported_text(name_of(members, device_id), said.get(device_id)),
        }
        for device_id in unheard
    ]
    return {"compaction": compaction, "away": rows, "unreported": waiting}


def _unreported_text(name: str, version: str | None) -> str:
    """Why history waits for a member that never reported, and what to do about it."""
    text = f"history is kept until {name} reports: "
    if version is None:
        # 0.3.0 and older say no version in their hello, and cannot report at all
        return text + (
            f"it may run p2psync before {SNAPSHOT_RELEASE} (upgrade it) or have"
            " [history] compaction off"
        )
    return text + (
        f"it runs p2psync {version}; if it has run a while, turn [history] compaction on there"
    )


def _utc_day(wall_ms: int) -> str:
    return datetime.fromtimestamp(wall_ms / 1000, UTC).strftime("%Y-%m-%d")


def peer_json(
    device: DeviceRecord,
    state: "PeerState | None",
    connected: bool,
    ours: dict[str, int],
    now: float,
) -> dict[str, Any]:
    """One row of `peers`: a member, and its session's state when we have one."""
    they_lack, we_lack = lag(state, DEFAULT_SHARE, ours) if state else (None, None)
    return {
        "device": device.device_id,
        "name": device.name,
        "revoked": device.revoked,
        "connected": connected,
        # connected, and no ping of the peer's overdue: what `peers` calls online
        "answering": bool(
            connected and state and (state.liveness is None or state.liveness.answering(now))
        ),
        "address": state.address if state else None,
        "direction": state.direction if state else None,
        "last_seen_seconds_ago": (
            round(now - state.last_seen, 1) if state and state.last_seen else None
        ),
        "in_sync": bool(state and DEFAULT_SHARE in state.in_sync),
        "they_lack": they_lack,
        "we_lack": we_lack,
        "receive_rate": round(state.receive_rate(now), 1) if connected and state else 0.0,
        "clock_offset_ms": state.clock_offset_ms if state else None,
        "entries_sent": state.entries_sent if state else 0,
        "entries_received": state.entries_received if state else 0,
        "direct_actors": state.direct_actors if connected and state else 0,
        "bytes_sent": state.bytes_sent if state else 0,
        "bytes_received": state.bytes_received if state else 0,
    }


def lag(state: "PeerState", share: str, ours: dict[str, int]) -> tuple[int, int]:
    """(entries we hold that the peer lacks, entries it holds that we lack), as far as its
    session showed. Actors whose writers deliver to the peer themselves are not counted on its
    side: we do not send them, and are not told its seqs of them (see relay.Outbox)."""
    # a copy: the database thread raises these vectors while we read (dict() is atomic)
    theirs = dict(state.peer_vectors.get(share, {}))
    fed = state.fed_directly.get(share, frozenset())
    ours_to_send = {actor: seq for actor, seq in ours.items() if actor not in fed}
    return count_missing(ours_to_send, theirs), count_missing(theirs, ours)


def count_missing(have: dict[str, int], other: dict[str, int]) -> int:
    """How many entries `have` holds that `other` lacks."""
    return sum(max(0, seq - other.get(actor, 0)) for actor, seq in have.items())


def iso_utc(wall_ms: int | None) -> str | None:
    """ISO 8601 in UTC, to the second: `2026-12-02T09:04:05Z`."""
    if wall_ms is None:
        return None
    moment = datetime.fromtimestamp(wall_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def device_json(
    device: DeviceRecord,
    *,
    this: bool,
    state: "PeerState | None",
    connected: bool,
    last_seen_ms: int | None,
    version: str | None,
    now: float,
) -> dict[str, Any]:
    """One row of `devices`. `last_seen_ms`: wall-clock ms the device was last heard from (for
    this device: now); `now` is the monotonic clock the peer state's times are in."""
    answering = this or bool(
        connected and state and (state.liveness is None or state.liveness.answering(now))
    )
    return {
        "device": device.device_id,
        "name": device.name,
        "short_id": short_id(device.device_id),
        "this": this,
        "connected": this or connected,
        "answering": answering,
        "last_seen": iso_utc(last_seen_ms),
        "address": state.address if state and not this else None,
        "version": version,
        "revoked": device.revoked,
    }
