"""What the web UI's pages show, from the control methods' answers (pure).

It owns the rows of the pages: each member with its state in words and its catch-up, the versions
of a conflicted record side by side with their writers' names and times, values as readable JSON,
the pairing code's QR image, a record's history (each write with its writer and standing). Text
stays text: escaping is the templates' (autoescaped), so nothing here builds HTML, except the QR
code's SVG, which holds no text from outside. It never calls the daemon or reads the clock.
"""

import json
from collections.abc import Mapping, Sequence
from typing import Any

import segno

from .. import hlc
from ..daemon_status import iso_utc
from ..identity import short_id

VALUE_PREVIEW_CHARS = 2000


def device_rows(devices: Sequence[Mapping[str, Any]], peers: Sequence[Mapping[str, Any]]):
    """`devices` (this device first) with each peer's catch-up from `peers`."""
    by_device = {p["device"]: p for p in peers}
    rows = []
    for device in devices:
        if device.get("revoked"):
            continue
        peer = by_device.get(device["device"], {})
        rows.append(
            {
                "name": device["name"] or f"device {device['short_id']}",
                "device": device["device"],
                "short_id": device["short_id"],
                "this": device["this"],
                "state": _state(device),
                "online": bool(device["connected"]),
                "last_seen": device.get("last_seen"),
                "catch_up": _catch_up(device, peer),
            }
        )
    return rows


def _state(device: Mapping[str, Any]) -> str:
    if device["this"]:
        return "this device"
    if device["connected"]:
        return "online" if device.get("answering", True) else "silent"
    return "offline"


def _catch_up(device: Mapping[str, Any], peer: Mapping[str, Any]) -> str:
    if device["this"] or not peer:
        return ""
    if not device["connected"]:
        return ""
    we_lack, they_lack = peer.get("we_lack") or 0, peer.get("they_lack") or 0
    if peer.get("in_sync") and not we_lack and not they_lack:
        return "in sync"
    parts = []
    if we_lack:
        parts.append(f"receiving {we_lack} change{'s' if we_lack != 1 else ''}")
    if they_lack:
        parts.append(f"sending {they_lack} change{'s' if they_lack != 1 else ''}")
    return ", ".join(parts) or "catching up"


def pairing_view(pairing: Any, now: float) -> dict[str, Any]:
    outcome = pairing.outcome or {}
    if outcome.get("event") == "paired":
        state = f"Paired with {outcome.get('name') or 'a new device'}."
    elif outcome:
        state = f"Pairing failed: {outcome.get('error', {}).get('message', 'no reason given')}"
    else:
        state = "Waiting for the other device…"
    return {
        "code": pairing.code,
        "expires_in": max(0, round(pairing.expires_at - now)),
        "ended": bool(outcome),
        "state": state,
    }


def qr_svg(text: str) -> str:
    """An inline SVG of `text` as a QR code, titled for screen readers."""
    code = segno.make(text, error="m")
    return str(code.svg_inline(scale=6, title=f"QR code of the pairing code {text}", border=2))


def when(hlc_value: int | None) -> str:
    return (iso_utc(hlc.to_millis(hlc_value)) or "") if hlc_value else ""


def shown_value(value: Any) -> str:
    """A JSON value as people read it: indented, cut to a preview when large."""
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    if len(text) > VALUE_PREVIEW_CHARS:
        return text[:VALUE_PREVIEW_CHARS] + "\n… (cut here)"
    return text


def writer(origin: str, names: Mapping[str, str]) -> str:
    """Who wrote a version, as people know the device: its name, else its short id."""
    return names.get(origin) or f"device {short_id(origin)}"


def conflict_view(share: str, record: Mapping[str, Any], names: Mapping[str, str]):
    versions = [
        {
            "version": sibling["version"],
            "writer": writer(sibling["origin"], names),
            "when": when(sibling.get("hlc")),
            "deleted": sibling.get("deleted", False),
            "value": "" if sibling.get("deleted") else shown_value(sibling.get("value")),
            "current": sibling["version"] == record.get("version"),
        }
        for sibling in record.get("siblings", [])
    ]
    return {
        "share": share,
        "collection": record["collection"],
        "key": record["key"],
        "versions": versions,
    }


def record_rows(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "key": item["key"],
            "value": shown_value(item.get("value")),
            "when": when(item.get("hlc")),
            "conflict": item.get("conflict", False),
        }
        for item in items
    ]


def history_rows(versions: Sequence[Mapping[str, Any]], names: Mapping[str, str]):
    """The `history` method's versions (newest first, as it answers), each with its writer's
    name and its standing in words: the one every device shows, another side of a conflict, or
    replaced."""
    return [
        {
            "version": version["version"],
            "writer": writer(version["origin"], names),
            "when": when(version.get("hlc")),
            "deleted": version.get("deleted", False),
            "value": "" if version.get("deleted") else shown_value(version.get("value")),
            "winner": version.get("winner", False),
            "current": version.get("current", False),
            "standing": _standing(version),
        }
        for version in versions
    ]


def _standing(version: Mapping[str, Any]) -> str:
    if version.get("winner"):
        return "current: shown on every device"
    if version.get("current"):
        return "current: the other side of a conflict"
    return "replaced"


def more_history_limit(shown: int, maximum: int) -> int | None:
    """How many versions the "older versions" link asks for: twice as many, up to what the
    method allows (None: as many as it gives are shown already)."""
    return min(shown * 2, maximum) if shown < maximum else None
