"""Rendering for the CLI: durations, rates, bars, widths of unicode text, status screens."""

import math
import re
from typing import Any

import pytest

from p2psync.cli_format import (
    NO_PEERS,
    NOT_PAIRED_ADVICE,
    RateMeter,
    catch_up_fraction,
    conflicts_line,
    counted,
    devices_table,
    display_width,
    fit,
    format_ago,
    format_duration,
    format_rate,
    format_size,
    joined_message,
    nearby_lines,
    paired_message,
    pairing_instructions,
    peers_table,
    progress_bar,
    revoked_message,
    safe_text,
    seconds_since,
    status_lines,
    table,
)

ATTIC = "TPSDW-QVCLZ-3WFQ7-ENPPE-JYSJU-YEKOD-6PFNI"
GARAGE = "QWERT-QVCLZ-3WFQ7-ENPPE-JYSJU-YEKOD-6PFNI"
KITCHEN = "V4TH3-AXRC4-7VFHX-COVCC-WBIP3-642MQ-AWHR7"


def peer(**fields: Any) -> dict[str, Any]:
    return {
        "device": ATTIC,
        "name": "attic",
        "revoked": False,
        "connected": True,
        "address": "10.0.0.2:47100",
        "last_seen_seconds_ago": 12.4,
        "in_sync": False,
        "we_lack": 0,
        "they_lack": 0,
        "entries_received": 0,
        **fields,
    }


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0 s"),
        (-3, "0 s"),
        (45.9, "45 s"),
        (90, "1 min 30 s"),
        (120, "2 min"),
        (3 * 3600 + 12 * 60 + 5, "3 h 12 min"),
        (3600, "1 h"),
        (2 * 86400 + 4 * 3600 + 59, "2 d 4 h"),
    ],
)
def test_durations(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "never"),
        (0.4, "just now"),
        (3, "3 s ago"),
        (59.9, "59 s ago"),
        (60, "1 min ago"),
        (2 * 3600 + 1800, "2 h ago"),
        (3 * 86400 + 7200, "3 d ago"),
    ],
)
def test_ago(seconds: float | None, shown: str) -> None:
    assert format_ago(seconds) == shown


@pytest.mark.parametrize(
    ("rate", "shown"),
    [
        (None, "-"),
        (math.nan, "-"),
        (-1.0, "-"),
        (0, "0/s"),
        (0.5, "0.5/s"),
        (12.4, "12/s"),
        (1234, "1.2k/s"),
        (3_400_000, "3.4M/s"),
    ],
)
def test_rates(rate: float | None, shown: str) -> None:
    assert format_rate(rate) == shown


def test_progress_bar_at_0_50_100_percent_and_clamped() -> None:
    assert progress_bar(0.0, width=10) == "[..........]   0%"
    assert progress_bar(0.5, width=10) == "[#####.....]  50%"
    assert progress_bar(1.0, width=10) == "[##########] 100%"
    assert progress_bar(-0.2, width=10) == progress_bar(0.0, width=10)
    assert progress_bar(1.7, width=10) == progress_bar(1.0, width=10)
    assert progress_bar(0.999).endswith(" 99%")  # never claims done before it is


def test_catch_up_fraction_is_received_over_received_plus_lacking() -> None:
    assert catch_up_fraction(peer(we_lack=0, entries_received=10)) is None
    assert catch_up_fraction(peer(we_lack=None)) is None
    assert catch_up_fraction(peer(we_lack=100, entries_received=0)) == 0.0
    assert catch_up_fraction(peer(we_lack=50, entries_received=50)) == 0.5


def test_widths_of_unicode_text() -> None:
    assert display_width("attic") == 5
    assert display_width("日本") == 4  # wide characters take two columns
    assert display_width("e\u0301te\u0301") == 3  # combining accents take none
    assert fit("attic", 5) == "attic"
    assert fit("日本語テキスト", 5) == "日本…"
    assert display_width(fit("日本語テキスト", 6)) <= 6
    assert fit("kitchen-table", 8) == "kitchen…"


def test_names_cannot_drive_the_terminal() -> None:
    assert safe_text("\x1b[2Jevil") == "?[2Jevil"
    assert safe_text("a\u202eb\x9bc\nd") == "a?b?c?d"
    assert safe_text("Küche 台所 🙂") == "Küche 台所 🙂"


def test_table_aligns_by_display_width_and_numbers_right() -> None:
    lines = table(["NAME", "N"], [["日本", "5"], ["attic", "1234"]], right=[1])
    assert lines == ["NAME      N", "日本      5", "attic  1234"]
    # the number column ends in the same terminal column on every line
    assert {display_width(line) for line in lines} == {11}
    assert table(None, []) == []


def test_rate_meter_derives_rates_from_successive_samples() -> None:
    meter = RateMeter()
    assert meter.update(10.0, [peer(entries_received=100)]) == {}
    assert meter.update(12.0, [peer(entries_received=300)]) == {ATTIC: 100.0}
    assert meter.update(13.0, [peer(entries_received=300)]) == {ATTIC: 0.0}
    # a new session restarts the counter: no rate rather than a negative one
    assert meter.update(14.0, [peer(entries_received=5)]) == {}
    assert meter.update(15.0, [peer(entries_received=15), {"device": GARAGE}]) == {ATTIC: 10.0}


def test_peers_table() -> None:
    peers = [
        peer(we_lack=1200, they_lack=3, receive_rate=1234.0),
        peer(
            device=GARAGE,
            name="garage",
            connected=False,
            address=None,
            last_seen_seconds_ago=7300,
            we_lack=None,
            they_lack=None,
            receive_rate=0.0,
        ),
        peer(device=KITCHEN, name="old phone", revoked=True, connected=False),
    ]
    lines = peers_table(peers)
    assert lines[0].split() == [
        "NAME",
        "DEVICE",
        "STATE",
        "ADDRESS",
        "LAST",
        "SEEN",
        "BEHIND",
        "AHEAD",
        "RATE",
    ]
    assert lines[1].split() == [
        "attic",
        "TPSDW",
        "online",
        "10.0.0.2:47100",
        "12",
        "s",
        "ago",
        "1,200",
        "3",
        "1.2k/s",
    ]
    assert lines[2].split() == ["garage", "QWERT", "offline", "-", "2", "h", "ago", "-", "-", "-"]
    assert lines[3].split()[:3] == ["old", "phone", "V4TH3"] and "revoked" in lines[3]
    # rates measured by `status --watch` replace the daemon's
    assert peers_table(peers, {ATTIC: 20.0})[1].endswith("20/s")
    assert peers_table([peer()])[1].endswith("-")  # no receive_rate from this daemon


def test_a_connected_peer_that_missed_a_keep_alive_is_silent_not_online() -> None:
    [_, answering] = peers_table([peer(answering=True)])
    [_, silent] = peers_table([peer(answering=False, last_seen_seconds_ago=5)])
    [_, older_daemon] = peers_table([peer()])  # before 0.3.0 daemons did not say
    assert answering.split()[2] == "online"
    assert silent.split()[2] == "silent"
    assert older_daemon.split()[2] == "online"


def test_peers_table_strips_control_characters_and_cuts_long_names() -> None:
    lines = peers_table([peer(name="\x1b[31mred" + "x" * 40)])
    assert "\x1b" not in "".join(lines)
    assert "?[31mred" in lines[1] and "…" in lines[1]


FULL_STATUS = {
    "device": KITCHEN,
    "name": "kitchen",
    "version": "0.1.0",
    "listen": ["0.0.0.0:47100", "[::]:47100"],
    "position": 4567,
    "uptime": 3 * 3600 + 12 * 60,
    "records": 12345,
    "conflicts": 3,
    "discovery": {"enabled": True, "interfaces": ["eth0"], "nearby": 2},
    "pairing": {"active": True, "expires_in": 240},
}


def test_status_screen_names_the_device_then_its_peers_and_progress() -> None:
    peers = [
        peer(we_lack=5000, entries_received=5000, receive_rate=1000.0),
        peer(device=GARAGE, name="garage", connected=False),
    ]
    text = "\n".join(status_lines(FULL_STATUS, peers))
    assert text.startswith(f"kitchen ({KITCHEN})\n")
    for expected in (
        "0.1.0, up 3 h 12 min",
        "0.0.0.0:47100, [::]:47100",
        "12,345 (local position 4,567)",
        "3 conflicts: run `p2psync conflicts`",
        "on (eth0), 2 devices nearby",
        "expires in 4 min",
        "1 of 2 online",
    ):
        assert expected in text
    progress = re.search(r"attic  (\[[#.]+\]\s+\d+%)  5,000 entries to go, 1.0k/s, about 5 s", text)
    assert progress and progress.group(1) == progress_bar(0.5)
    assert "garage" in text.split("catching up:")[0]  # only connected peers get a bar


def test_status_screen_of_a_daemon_that_says_little() -> None:
    lines = status_lines({"device": KITCHEN}, [])
    assert lines[0] == f"this device ({KITCHEN})"
    assert NO_PEERS in lines and "catching up:" not in lines
    off = status_lines({**FULL_STATUS, "discovery": {"enabled": False}, "pairing": None}, [])
    assert any("discovery" in line and "off" in line for line in off)
    assert not any("pairing" in line for line in off)


def test_conflicts_line() -> None:
    assert conflicts_line(0) == "none"
    assert conflicts_line(1) == "1 conflict: run `p2psync conflicts`"
    assert conflicts_line(1200) == "1,200 conflicts: run `p2psync conflicts`"


def test_nearby_marks_devices_that_are_not_paired() -> None:
    nearby = [
        {
            "device": ATTIC,
            "name": "attic",
            "addresses": ["10.0.0.2:47100"],
            "member": True,
            "pairing": None,
        },
        {
            "device": GARAGE,
            "name": "new laptop",
            "addresses": ["10.0.0.9:47100", "[fe80::1]:47100"],
            "member": False,
            "pairing": None,
        },
        {"device": KITCHEN, "name": "tablet", "addresses": [], "member": False, "pairing": 7},
    ]
    lines = nearby_lines(nearby)
    assert lines[0].split() == ["NAME", "DEVICE", "STATE", "ADDRESSES"]
    assert "member" in lines[1]
    assert "NOT PAIRED" in lines[2] and "10.0.0.9:47100, [fe80::1]:47100" in lines[2]
    assert "offering code 7-..." in lines[3]
    assert lines[-1] == NOT_PAIRED_ADVICE
    assert NOT_PAIRED_ADVICE not in nearby_lines(nearby[:1])
    assert "multicast may be blocked" in nearby_lines([])[0]
    assert "discovery is off" in nearby_lines([], discovery_on=False)[0]


def test_membership_messages() -> None:
    shown = pairing_instructions({"code": "7-guitar-orbit", "expires_in": 300})
    assert "\n    7-guitar-orbit\n" in shown
    assert "On the other device run:  p2psync join 7-guitar-orbit" in shown
    assert "valid 5 min, one attempt" in shown
    assert "valid" not in pairing_instructions({"code": "7-guitar-orbit"})
    assert f"Paired with attic ({ATTIC})" in paired_message({"device": ATTIC, "name": "attic"})
    joined = joined_message({"device": KITCHEN, "name": "kitchen", "members": 3})
    assert f"household of kitchen ({KITCHEN}); this device now syncs with 3 devices" in joined
    assert "syncs with 1 device." in joined_message({"members": [{"name": "kitchen"}]})
    revoked = revoked_message({"device": ATTIC, "name": "attic", "revoked": True})
    assert "Revoked attic" in revoked and "keeps its copy" in revoked


def test_status_screen_says_this_device_was_revoked_copies_and_clock_skew() -> None:
    told = "this device was revoked by Küche at 2026-12-02 10:41"
    status = {
        "name": "attic",
        "revoked": [{"by": "Küche", "text": told}],
        "notices": [{"kind": "running_in_two_places", "text": "b is running in two places: x, y"}],
        "clock_skew": [{"device": "D", "name": "tv", "offset_ms": 3_600_000}],
    }
    shown = [line.split(None, 1) for line in status_lines(status, [])[1:5]]
    assert ["revoked", told] in shown
    assert ["warning", "b is running in two places: x, y"] in shown
    assert ["clock", "tv's clock is 3600 s ahead of ours: check both clocks"] in shown


@pytest.mark.parametrize(
    ("size", "shown"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (53122, "51.9 KiB"), (3 << 20, "3.0 MiB")],
)
def test_sizes(size: int, shown: str) -> None:
    assert format_size(size) == shown


def test_counted() -> None:
    assert counted(1, "member") == "1 member"
    assert counted(1200, "record") == "1,200 records"
    assert counted(None, "record") == "? records"
    assert counted(True, "record") == "? records"


def test_status_screen_lists_the_shares_when_the_daemon_gives_them() -> None:
    shares = [
        {"share": "default", "members": 3, "records": 120, "member": True},
        {"share": "parents", "members": 2, "records": 1, "member": True},
        {"share": "old\x1b[2J", "members": 1, "records": 9, "member": False},
    ]
    shown = status_lines({"name": "kitchen", "shares": shares}, [])
    start = shown.index("shares:")
    assert shown[start - 1] == "" and shown[start + 4] == ""
    assert [line.split() for line in shown[start + 1 : start + 3]] == [
        ["default", "3", "members", "120", "records"],
        ["parents", "2", "members", "1", "record"],
    ]
    assert shown[start + 3].split(None, 5) == [
        "old?[2J",
        "1",
        "member",
        "9",
        "records",
        "left: keeps its copy, gets no updates",
    ]
    # a daemon from before shares says nothing about them: nor does the screen
    assert not any("shares" in line for line in status_lines({"name": "kitchen"}, []))
    assert "shares:" not in status_lines({"name": "kitchen", "shares": []}, [])


def test_pairing_and_joining_name_the_shares_given() -> None:
    event = {"device": ATTIC, "name": "attic"}
    paired = paired_message({**event, "shares": ["default", "parents", "shopping"]})
    assert paired.endswith("It is in shares parents, shopping as well as default.")
    assert paired_message({**event, "shares": ["default"]}).endswith(
        "It is in the default share only."
    )
    assert "share" not in paired_message(event)  # a daemon from before shares
    joined = {"device": KITCHEN, "name": "kitchen", "members": 2}
    given = joined_message({**joined, "shares": ["family", "shopping"]})
    assert given.splitlines()[1] == "You were given shares: family, shopping."
    only_default = joined_message({**joined, "shares": ["default"]}).splitlines()[1]
    assert only_default.startswith("You were given the default share only")
    assert joined_message({**joined, "shares": []}).splitlines()[1] == only_default
    assert len(joined_message(joined).splitlines()) == 1


def test_devices_table_says_now_for_this_device_and_connected_ones_and_how_long_ago_else() -> None:
    now = 1_764_666_000.0  # 2025-12-02T09:00:00Z
    rows = [
        {"device": KITCHEN, "name": "kitchen", "this": True, "connected": True,
         "last_seen": "2025-12-02T09:00:00Z", "address": None, "version": "0.4.0"},
        {"device": ATTIC, "name": "attic", "this": False, "connected": True, "answering": False,
         "last_seen": "2025-12-02T08:59:58Z", "address": "10.0.0.2:7000",
         "version": "0.4.0\x1b[2J"},
        {"device": GARAGE, "name": "garage\x1b[2J", "this": False, "connected": False,
         "last_seen": "2025-12-02T08:57:00Z", "address": None},
        {"device": GARAGE, "name": "old", "this": False, "connected": False, "revoked": True,
         "last_seen": None, "address": None},
    ]  # fmt: skip
    header, kitchen, attic, garage, old = devices_table(rows, now)
    assert header.split() == ["NAME", "ID", "STATE", "LAST", "SEEN", "ADDRESS", "VERSION"]
    assert kitchen.split() == ["kitchen", "V4TH3", "this", "device", "now", "-", "0.4.0"]
    assert attic.split() == ["attic", "TPSDW", "silent", "now", "10.0.0.2:7000", "0.4.0?[2J"]
    assert garage.split() == ["garage?[2J", "QWERT", "offline", "3", "min", "ago", "-", "-"]
    assert old.split() == ["old", "QWERT", "revoked", "never", "-", "-"]


def test_seconds_since_reads_the_daemons_iso_times_only() -> None:
    assert seconds_since("2025-12-02T08:59:00Z", 1_764_666_000.0) == 60.0
    assert seconds_since("2025-12-02T09:01:00Z", 1_764_666_000.0) == 0.0  # a clock ahead
    assert seconds_since("yesterday", 1.0) is None and seconds_since(None, 1.0) is None


def test_status_screen_names_devices_away_that_history_waits_for() -> None:
    text = "Küche has been away 41 days; history since then is kept for it until 2026-12-20"
    waits = "history is kept until tv reports: it may run p2psync before 0.4.0 (upgrade it)"
    history = {"compaction": True, "away": [{"text": text}], "unreported": [{"text": waits}]}
    shown = [
        line.split(None, 1) for line in status_lines({"name": "attic", "history": history}, [])
    ]
    assert ["away", text] in shown and ["history", waits] in shown
    assert not [line for line in status_lines({"history": "junk"}, []) if "away" in line]
