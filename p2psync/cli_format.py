"""Pure rendering for the `p2psync` CLI: tables, durations, rates, progress bars, status screens,
the devices table.

Everything here takes the daemon's answers (plain dicts, read defensively with .get: fields come
and go between versions) and returns text. It never does I/O, never reads the clock (times and
samples are passed in) and never trusts text from other devices: names are stripped of terminal
control characters before they are shown.
"""

import argparse
import json
import math
import textwrap
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .identity import short_id

ELLIPSIS = "…"
NAME_WIDTH = 24
SHARE_WIDTH = 64  # the longest share name the daemon accepts
ADDRESS_WIDTH = 40
VERSION_WIDTH = 16
BAR_WIDTH = 20
# Bidirectional overrides and isolates can make a name display as something else entirely.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# The share every device of the household is in (shares.DEFAULT_SHARE: the CLI does not import
# the replica and its database code).
DEFAULT_SHARE = "default"

Peer = Mapping[str, Any]


# text and tables ------------------------------------------------------------------------------


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def safe_text(text: object) -> str:
    """`text` without control characters: a device name must not move the cursor or clear
    the operator's screen."""
    return "".join(
        "?" if unicodedata.category(ch) == "Cc" or ch in _BIDI_CONTROLS else ch for ch in str(text)
    )


def _char_width(ch: str) -> int:
    if unicodedata.combining(ch) or ch in "\u200b\u200c\u200d\ufe0f":
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Terminal columns: wide (CJK, most emoji) characters take two, combining marks none."""
    return sum(_char_width(ch) for ch in text)


def fit(text: str, width: int) -> str:
    """`text` cut to at most `width` columns, with an ellipsis when something was cut."""
    if display_width(text) <= width:
        return text
    kept, used = [], 0
    for ch in text:
        if used + _char_width(ch) > width - 1:
            break
        kept.append(ch)
        used += _char_width(ch)
    return "".join(kept) + ELLIPSIS


def table(
    headers: Sequence[str] | None, rows: Iterable[Sequence[str]], right: Iterable[int] = ()
) -> list[str]:
    """Aligned columns two spaces apart; columns listed in `right` (numbers) align right."""
    lines = [list(headers), *map(list, rows)] if headers else [list(row) for row in rows]
    if not lines:
        return []
    right_aligned = set(right)
    widths = [max(display_width(line[i]) for line in lines) for i in range(len(lines[0]))]
    rendered = []
    for line in lines:
        cells = []
        for i, (cell, width) in enumerate(zip(line, widths, strict=True)):
            padding = " " * (width - display_width(cell))
            cells.append(padding + cell if i in right_aligned else cell + padding)
        rendered.append("  ".join(cells).rstrip())
    return rendered


# numbers and times ----------------------------------------------------------------------------


def format_count(number: int) -> str:
    return f"{number:,}"


def count_cell(value: Any) -> str:
    """A count from the daemon, or `-` when it did not give one."""
    return format_count(value) if isinstance(value, int) and not isinstance(value, bool) else "-"


def format_size(size: int) -> str:
    """`0 B`, `812 B`, `51.9 KiB`, `3.4 MiB`, `1.2 GiB`."""
    for scale, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))


def format_duration(seconds: float, parts: int = 2) -> str:
    """`45 s`, `1 min 30 s`, `3 h 12 min`, `2 d`: the `parts` largest units, rounded down."""
    whole = max(0, int(seconds))
    first = next(i for i, (_, size) in enumerate(_UNITS) if whole >= size or size == 1)
    shown: list[str] = []
    for name, size in _UNITS[first : first + parts]:
        amount, whole = divmod(whole, size)
        if amount or not shown:
            shown.append(f"{amount} {name}")
    return " ".join(shown)


def format_ago(seconds: float | None) -> str:
    """`just now`, `12 s ago`, `5 min ago`, `2 h ago`, `3 d ago`; `never` without a time."""
    if seconds is None:
        return "never"
    if seconds < 1:
        return "just now"
    return f"{format_duration(seconds, parts=1)} ago"


def format_rate(per_second: float | None) -> str:
    """Entries per second, short: `-` (unknown), `0/s`, `0.5/s`, `12/s`, `1.2k/s`, `3.4M/s`."""
    if per_second is None or not math.isfinite(per_second) or per_second < 0:
        return "-"
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if per_second >= scale:
            return f"{per_second / scale:.1f}{suffix}/s"
    if per_second >= 10 or per_second == 0:
        return f"{per_second:.0f}/s"
    return f"{per_second:.1f}/s"


def progress_bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """`[##########..........]  50%`; `fraction` is clamped to 0..1."""
    fraction = min(1.0, max(0.0, fraction))
    filled = math.floor(fraction * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {math.floor(fraction * 100):3d}%"


def catch_up_fraction(peer: Peer) -> float | None:
    """How far a catch-up from this peer has come, or None when we lack nothing from it."""
    lacking = peer.get("we_lack") or 0
    if lacking <= 0:
        return None
    received = peer.get("entries_received") or 0
    return received / (received + lacking)


class RateMeter:
    """Receive rates (entries/s) per peer from successive `peers` answers taken at known times;
    `status --watch` uses it because the daemon only gives cumulative counters."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def update(self, at: float, peers: Iterable[Peer]) -> dict[str, float]:
        rates: dict[str, float] = {}
        current: dict[str, tuple[float, int]] = {}
        for peer in peers:
            device, received = peer.get("device"), peer.get("entries_received")
            if not isinstance(device, str) or not isinstance(received, int):
                continue
            current[device] = (at, received)
            before = self._last.get(device)
            # A counter that went down belongs to a new session: no rate until the next sample.
            if before is not None and at > before[0] and received >= before[1]:
                rates[device] = (received - before[1]) / (at - before[0])
        self._last = current
        return rates


# status and peers -----------------------------------------------------------------------------


def peer_state(peer: Peer) -> str:
    if peer.get("revoked"):
        return "revoked"
    if not peer.get("connected"):
        return "offline"
    # a daemon before 0.3.0 does not say; one that does says when pings are overdue
    return "silent" if peer.get("answering") is False else "online"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _lack(peer: Peer, field: str) -> str:
    value = peer.get(field)
    return format_count(value) if isinstance(value, int) else "-"


def _rate(peer: Peer, rates: Mapping[str, float] | None) -> float | None:
    if not peer.get("connected"):
        return None
    if rates is not None:
        return rates.get(str(peer.get("device")))
    return _number(peer.get("receive_rate"))


def peers_table(peers: Sequence[Peer], rates: Mapping[str, float] | None = None) -> list[str]:
    """The members table. BEHIND: entries they have and we lack; AHEAD: the other way round.
    `rates` (from a RateMeter) replaces the daemon's own `receive_rate` when given."""
    rows = [
        [
            fit(safe_text(peer.get("name") or "?"), NAME_WIDTH),
            short_id(str(peer.get("device") or "?")),
            peer_state(peer),
            fit(safe_text(peer.get("address") or "-"), ADDRESS_WIDTH),
            format_ago(peer.get("last_seen_seconds_ago")),
            _lack(peer, "we_lack"),
            _lack(peer, "they_lack"),
            format_rate(_rate(peer, rates)),
        ]
        for peer in peers
    ]
    headers = ["NAME", "DEVICE", "STATE", "ADDRESS", "LAST SEEN", "BEHIND", "AHEAD", "RATE"]
    return table(headers, rows, right=(5, 6, 7))


def device_state(device: Peer) -> str:
    """A `devices` row's state: `this device`, `revoked`, `online`, `silent` or `offline`."""
    return "this device" if device.get("this") else peer_state(device)


def seconds_since(iso_utc: object, now: float) -> float | None:
    """Seconds from an ISO 8601 UTC time (`2026-12-02T09:04:05Z`) to `now` (Unix time)."""
    if not isinstance(iso_utc, str):
        return None
    try:
        then = datetime.strptime(iso_utc, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return max(0.0, now - then.timestamp())


def devices_table(devices: Sequence[Peer], now: float) -> list[str]:
    """Every member, this device included; `now` (Unix time) is what LAST SEEN counts from."""
    rows = [
        [
            fit(safe_text(device.get("name") or "?"), NAME_WIDTH),
            short_id(str(device.get("device") or "?")),
            device_state(device),
            (
                "now"
                if device.get("this") or device.get("connected")
                else format_ago(seconds_since(device.get("last_seen"), now))
            ),
            fit(safe_text(device.get("address") or "-"), ADDRESS_WIDTH),
            # a peer's says what its hello said: text from another device
            fit(safe_text(device.get("version") or "-"), VERSION_WIDTH),
        ]
        for device in devices
    ]
    return table(["NAME", "ID", "STATE", "LAST SEEN", "ADDRESS", "VERSION"], rows)


def progress_lines(peers: Sequence[Peer], rates: Mapping[str, float] | None = None) -> list[str]:
    """One bar per connected peer we are catching up from."""
    lines = []
    for peer in peers:
        fraction = catch_up_fraction(peer)
        if fraction is None or not peer.get("connected"):
            continue
        lacking = peer.get("we_lack") or 0
        rate = _rate(peer, rates)
        left = f", about {format_duration(lacking / rate)} left" if rate else ""
        name = fit(safe_text(peer.get("name") or "?"), NAME_WIDTH)
        lines.append(
            f"{name}  {progress_bar(fraction)}  {format_count(lacking)} entries to go, "
            f"{format_rate(rate)}{left}"
        )
    return lines


def conflicts_line(count: int) -> str:
    if count == 0:
        return "none"
    noun = "conflict" if count == 1 else "conflicts"
    return f"{format_count(count)} {noun}: run `p2psync conflicts`"


def _discovery_line(discovery: Mapping[str, Any]) -> str:
    if not discovery.get("enabled"):
        return "off (static peers and saved addresses only)"
    interfaces = discovery.get("interfaces") or []
    where = f" ({', '.join(map(safe_text, interfaces))})" if interfaces else ""
    nearby = discovery.get("nearby")
    count = len(nearby) if isinstance(nearby, list) else nearby
    seen = f", {count} device{'' if count == 1 else 's'} nearby" if isinstance(count, int) else ""
    return f"on{where}{seen}"


def status_lines(
    status: Mapping[str, Any],
    peers: Sequence[Peer],
    rates: Mapping[str, float] | None = None,
) -> list[str]:
    """The `p2psync status` screen: this device, then its peers, then catch-up progress."""
    device = str(status.get("device") or "?")
    facts: list[tuple[str, str]] = []
    version = status.get("version")
    uptime = _number(status.get("uptime"))
    if version or uptime is not None:
        running = f"up {format_duration(uptime)}" if uptime is not None else ""
        facts.append(("p2psync", ", ".join(str(part) for part in (version, running) if part)))
    if status.get("listen"):
        facts.append(("listening", ", ".join(map(safe_text, status["listen"]))))
    if isinstance(status.get("records"), int):
        position = status.get("position")
        at = f" (local position {format_count(position)})" if isinstance(position, int) else ""
        facts.append(("records", format_count(status["records"]) + at))
    if isinstance(status.get("conflicts"), int):
        facts.append(("conflicts", conflicts_line(status["conflicts"])))
    if isinstance(status.get("discovery"), Mapping):
        facts.append(("discovery", _discovery_line(status["discovery"])))
    pairing = status.get("pairing")
    if isinstance(pairing, Mapping) and pairing.get("active"):
        expires = _number(pairing.get("expires_in"))
        left = f" (expires in {format_duration(expires)})" if expires is not None else ""
        facts.append(("pairing", f"a pairing code is waiting for its device{left}"))
    members = [p for p in peers if not p.get("revoked")]
    online = sum(1 for p in members if p.get("connected"))
    facts.append(("peers", f"{online} of {len(members)} online"))
    facts += _trust_facts(status)
    lines = [f"{safe_text(status.get('name') or 'this device')} ({device})"]
    lines += [f"  {label}" for label in table(None, facts)]
    lines += _shares_section(status)
    lines.append("")
    lines += peers_table(peers, rates) if peers else [NO_PEERS]
    progress = progress_lines(peers, rates)
    if progress:
        lines += ["", "catching up:", *(f"  {line}" for line in progress)]
    return lines


LEFT_SHARE_NOTE = "left: keeps its copy, gets no updates"


def _shares_section(status: Mapping[str, Any]) -> list[str]:
    """The shares this device holds, when the daemon says (daemons before shares do not)."""
    shares = [share for share in status.get("shares") or [] if isinstance(share, Mapping)]
    if not shares:
        return []
    rows = [
        [
            fit(safe_text(share.get("share") or "?"), SHARE_WIDTH),
            counted(share.get("members"), "member"),
            counted(share.get("records"), "record"),
            "" if share.get("member", True) else LEFT_SHARE_NOTE,
        ]
        for share in shares
    ]
    return ["", "shares:", *(f"  {line}" for line in table(None, rows, right=(1, 2)))]


def counted(count: Any, noun: str) -> str:
    """`1 member`, `3 members`, `? members` when the daemon did not give a number."""
    if not isinstance(count, int) or isinstance(count, bool):
        return f"? {noun}s"
    return f"{format_count(count)} {noun}{'' if count == 1 else 's'}"


def _trust_facts(status: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What people must know about trust: this device revoked, copies of a device, clocks."""
    facts = [
        ("revoked", safe_text(str(told.get("text", ""))))
        for told in status.get("revoked") or []
        if isinstance(told, Mapping)
    ]
    facts += [
        ("warning", safe_text(str(notice.get("text", ""))))
        for notice in status.get("notices") or []
        if isinstance(notice, Mapping)
    ]
    history = status.get("history")
    for kind, label in (("away", "away"), ("unreported", "history")):
        for row in history.get(kind) or [] if isinstance(history, Mapping) else []:
            if isinstance(row, Mapping):
                facts.append((label, safe_text(str(row.get("text", "")))))
    for skew in status.get("clock_skew") or []:
        offset = _number(skew.get("offset_ms")) if isinstance(skew, Mapping) else None
        if offset is not None:
            name = safe_text(str(skew.get("name") or skew.get("device") or "?"))
            facts.append(
                (
                    "clock",
                    f"{name}'s clock is {abs(offset) / 1000:.0f} s "
                    f"{'ahead of' if offset > 0 else 'behind'} ours: check both clocks",
                )
            )
    return facts


NO_PEERS = (
    "no other devices yet: run `p2psync pair` here and `p2psync join CODE` on the other device"
)
NOT_PAIRED_ADVICE = "not paired: run `p2psync pair` here and `p2psync join CODE` there"


def nearby_lines(nearby: Sequence[Mapping[str, Any]], discovery_on: bool = True) -> list[str]:
    """Devices announcing themselves on the LAN, members or not."""
    if not discovery_on:
        return ["discovery is off (discovery.enabled in the configuration): no devices are seen"]
    if not nearby:
        return [
            "no devices seen on the LAN: multicast may be blocked; add static peers "
            "(network.peers) or use `p2psync join CODE --address HOST:PORT`"
        ]
    rows = []
    for device in nearby:
        if device.get("member"):
            state = "member"
        elif device.get("pairing") is not None:
            state = f"offering code {safe_text(device['pairing'])}-..."
        else:
            state = "NOT PAIRED"
        addresses = ", ".join(map(safe_text, device.get("addresses") or [])) or "-"
        rows.append(
            [
                fit(safe_text(device.get("name") or "?"), NAME_WIDTH),
                short_id(str(device.get("device") or "?")),
                state,
                fit(addresses, ADDRESS_WIDTH * 2),
            ]
        )
    lines = table(["NAME", "DEVICE", "STATE", "ADDRESSES"], rows)
    if any(not device.get("member") for device in nearby):
        lines += ["", NOT_PAIRED_ADVICE]
    return lines


# membership messages --------------------------------------------------------------------------


def pairing_instructions(started: Mapping[str, Any]) -> str:
    """What `p2psync pair` shows while it waits: the code, big, and what to do with it."""
    code = safe_text(started.get("code") or "?")
    expires_in = _number(started.get("expires_in"))
    valid = f"valid {format_duration(expires_in)}, " if expires_in is not None else ""
    return (
        f"Pairing code:\n\n    {code}\n\n"
        f"On the other device run:  p2psync join {code}\n"
        f"({valid}one attempt; Ctrl-C cancels)\n"
    )


def _device(found: Mapping[str, Any]) -> str:
    return f"{safe_text(found.get('name') or '?')} ({found.get('device') or '?'})"


def paired_message(event: Mapping[str, Any]) -> str:
    others = _shares_besides_default(event.get("shares"))
    if others is None:  # a daemon from before shares
        shares = ""
    elif others:
        shares = f" It is in shares {', '.join(others)} as well as {DEFAULT_SHARE}."
    else:
        shares = f" It is in the {DEFAULT_SHARE} share only."
    return (
        f"Paired with {_device(event)}. It joins this household and syncs with every device "
        f"in it; follow the catch-up with `p2psync status --watch`.{shares}"
    )


def _shares_besides_default(shares: Any) -> list[str] | None:
    """The shares named, but `default` (every device is in it); None when none were named."""
    if not isinstance(shares, list):
        return None
    return [safe_text(s) for s in shares if isinstance(s, str) and s != DEFAULT_SHARE]


def joined_message(result: Mapping[str, Any]) -> str:
    members = result.get("members")  # the household as the inviter knew it, inviter included
    count = len(members) if isinstance(members, list) else members
    plural = "" if count == 1 else "s"
    household = (
        f"; this device now syncs with {count} device{plural}" if isinstance(count, int) else ""
    )
    others = _shares_besides_default(result.get("shares"))
    if others is None:  # a daemon from before shares
        shares = ""
    elif others:
        shares = f"\nYou were given shares: {', '.join(others)}."
    else:
        shares = (
            f"\nYou were given the {DEFAULT_SHARE} share only (every device is in it); a member of "
            "another share can add this device to it."
        )
    return (
        f"Joined the household of {_device(result)}{household}. Records sync in the background; "
        f"follow with `p2psync status --watch`.{shares}"
    )


def revoked_message(done: Mapping[str, Any]) -> str:
    return (
        f"Revoked {_device(done)} for the whole household: every device stops syncing with it "
        "as the revocation reaches them. It keeps its copy of the records it already has, but "
        "gets no new changes and its new writes are not accepted. To remove the data from it, "
        "delete its state directory on that device."
    )


# grants -----------------------------------------------------------------------------------------

NO_GRANTS = (
    "no grants: only admins (root, the daemon's user, the control group) use this daemon; "
    "see `p2psync grant --help`"
)


def grant_app(grant: Mapping[str, Any]) -> str:
    """`alice (uid 1001)`, or `uid 4242` for a uid no user has."""
    user = grant.get("user")
    return f"{safe_text(user)} (uid {grant.get('uid')})" if user else f"uid {grant.get('uid')}"


def grant_scope(grant: Mapping[str, Any]) -> str:
    share = safe_text(grant.get("share"))
    collection = grant.get("collection")
    if collection is None:
        return f"every collection of share {share}"
    return f"collection {safe_text(collection)} of share {share}"


def granted_message(grant: Mapping[str, Any]) -> str:
    may = "read and watch" if grant.get("read_only") else "read, watch and write"
    return f"The apps of {grant_app(grant)} may now {may} {grant_scope(grant)}."


def grants_table(grants: Sequence[Mapping[str, Any]]) -> list[str]:
    if not grants:
        return [NO_GRANTS]
    rows = [
        [
            safe_text(g.get("user") or "-"),
            str(g.get("uid")),
            safe_text(g.get("share")),
            "*" if g.get("collection") is None else safe_text(g.get("collection")),
            "read" if g.get("read_only") else "read-write",
        ]
        for g in grants
    ]
    return table(["USER", "UID", "SHARE", "COLLECTION", "ACCESS"], rows, right=[1])


def app_status_lines(status: Mapping[str, Any]) -> list[str]:
    """`p2psync status` for an app (not an admin): this device and what the app may do."""
    access = status.get("access") or {}
    device = str(status.get("device") or "?")
    lines = [f"{safe_text(status.get('name') or 'this device')} ({device})"]
    lines.append(f"  p2psync {safe_text(status.get('version') or '?')}")
    who = grant_app(access)
    lines.append(f"  you are an app here ({who}): you may use only what your grants allow")
    grants = access.get("grants") or []
    lines += ["", *(grants_table(grants) if grants else ["no grants: ask an admin of this device"])]
    return lines


HELP_WIDTH = 78

def command_parser(
    common: argparse.ArgumentParser,
    epilog: str,
    within: "argparse._SubParsersAction[argparse.ArgumentParser]",
    name: str,
    summary: str,
    details: str,
    examples: str,
) -> argparse.ArgumentParser:
    """A (sub)command's parser laid out like every other: the summary as its help and first
    sentence, the details filled to the help's width, its examples before the common epilog."""
    description = f"{summary[0].upper()}{summary[1:]}. {details}"
    return within.add_parser(
        name,
        parents=[common],
        help=summary,
        description=textwrap.fill(description, HELP_WIDTH),
        epilog=f"examples:\n{examples}\n{epilog}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
