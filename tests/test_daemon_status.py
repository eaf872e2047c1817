from p2psync.daemon_status import history_json
from p2psync.history.stability import Away
from p2psync.membership import DeviceRecord

DAY = 86_400_000
NOW = 1_796_000_000_000  # 2026-11-30 00:53 UTC


def test_history_says_how_long_a_device_has_been_away_and_until_when_history_waits():
    """And why it waits for members that never reported: an old release, or compaction off."""
    members = {"K": DeviceRecord("K", "Küche", b"", "A", False)}
    away = [Away("K", NOW - 12 * DAY, NOW + 18 * DAY), Away("X", NOW - 41 * DAY, NOW - 11 * DAY)]
    found = history_json(True, away, ["K", "T"], members, NOW, {"K": None, "T": "0.4.0"})
    assert found["compaction"] is True
    kitchen, other = found["away"]
    assert kitchen["text"] == (
        "Küche has been away 12 days; history since then is kept for it until 2026-12-18"
    )
    assert (kitchen["since_ms"], kitchen["kept_until_ms"]) == (NOW - 12 * DAY, NOW + 18 * DAY)
    assert other["name"] == "X" and other["text"] == (
        "X has been away 41 days; history was kept for it until 2026-11-19: only its deletes are"
        " kept for it now"
    )
    assert found["unreported"] == [
        {
            "device": "K",
            "name": "Küche",
            "version": None,
            "text": "history is kept until Küche reports: it may run p2psync before 0.4.0"
            " (upgrade it) or have [history] compaction off",
        },
        {
            "device": "T",
            "name": "T",
            "version": "0.4.0",
            "text": "history is kept until T reports: it runs p2psync 0.4.0; if it has run a"
            " while, turn [history] compaction on there",
        },
    ]
    assert history_json(False, [], [], members, NOW) == {
        "compaction": False,
        "away": [],
        "unreported": [],
    }
