"""What the web UI's pages show, from control answers (pure)."""

from p2psync import hlc
from p2psync.webui import views
from p2psync.webui.facade import Pairing

THIS, PEER, GONE = "AAAAA-1", "BBBBB-2", "CCCCC-3"


def device(device_id: str, name: str, **fields):
    return {
        "device": device_id,
        "name": name,
        "short_id": device_id[:5],
        "this": False,
        "connected": False,
        "answering": False,
        "last_seen": None,
        "revoked": False,
        **fields,
    }


def test_devices_say_their_state_and_catch_up_and_revoked_ones_are_left_out():
    rows = views.device_rows(
        [
            device(THIS, "kitchen", this=True, connected=True),
            device(PEER, "", connected=True, answering=True),
            device(GONE, "attic", revoked=True),
        ],
        [{"device": PEER, "in_sync": False, "we_lack": 3, "they_lack": 1}],
    )
    assert [r["name"] for r in rows] == ["kitchen", "device BBBBB"]
    assert [r["state"] for r in rows] == ["this device", "online"]
    assert rows[1]["catch_up"] == "receiving 3 changes, sending 1 change"
    synced = views.device_rows(
        [device(PEER, "den", connected=True)],
        [{"device": PEER, "in_sync": True, "we_lack": 0, "they_lack": 0}],
    )
    assert (synced[0]["state"], synced[0]["catch_up"]) == ("silent", "in sync")


def test_a_conflict_shows_each_version_with_its_writer_and_time():
    written = hlc.from_millis(1_764_669_845_000)
    record = {
        "collection": "notes",
        "key": "k",
        "version": "v1",
        "siblings": [
            {"version": "v1", "origin": THIS, "hlc": written, "value": {"a": 1}},
            {"version": "v2", "origin": PEER, "hlc": written, "deleted": True, "value": None},
        ],
    }
    shown = views.conflict_view("default", record, {THIS: "kitchen"})
    first, second = shown["versions"]
    assert (first["writer"], first["current"], first["when"]) == (
        "kitchen",
        True,
        "2025-12-02T10:04:05Z",
    )
    assert first["value"] == '{\n  "a": 1\n}'
    assert (second["writer"], second["deleted"], second["value"]) == ("device BBBBB", True, "")


def test_large_values_are_cut_to_a_preview():
    shown = views.shown_value("x" * 5000)
    assert len(shown) < 2100 and shown.endswith("(cut here)")


def test_the_pairing_says_how_it_went_and_its_qr_code_is_an_svg():
    pairing = Pairing("7-guitar-orbit", expires_at=100.0)
    waiting = views.pairing_view(pairing, now=40.0)
    assert (waiting["expires_in"], waiting["ended"]) == (60, False)
    pairing.outcome = {"event": "paired", "name": "den"}
    assert views.pairing_view(pairing, now=50.0)["state"] == "Paired with den."
    pairing.outcome = {"event": "pairing_failed", "error": {"message": "wrong code"}}
    assert views.pairing_view(pairing, 50.0)["state"] == "Pairing failed: wrong code"
    svg = views.qr_svg("7-guitar-orbit")
    assert svg.startswith("<svg") and "7-guitar-orbit" in svg


def test_a_history_names_each_writer_and_marks_the_current_versions():
    written = hlc.from_millis(1_764_669_845_000)

    def version(name: str, origin: str, **fields):
        return {"version": name, "origin": origin, "hlc": written, "value": name, **fields}

    rows = views.history_rows(
        [
            version("v3", PEER, current=True, winner=True),
            version("v2", THIS, current=True, deleted=True, value=None),
            version("v1", THIS),
        ],
        {THIS: "kitchen"},
    )
    assert [r["writer"] for r in rows] == ["device BBBBB", "kitchen", "kitchen"]
    assert [r["standing"] for r in rows] == [
        "current: shown on every device",
        "current: the other side of a conflict",
        "replaced",
    ]
    assert [r["value"] for r in rows] == ['"v3"', "", '"v1"']
    assert rows[1]["deleted"] and rows[0]["when"] == "2025-12-02T10:04:05Z"


def test_older_versions_are_asked_for_twice_as_many_up_to_the_methods_limit():
    assert views.more_history_limit(20, 1000) == 40
    assert views.more_history_limit(640, 1000) == 1000
    assert views.more_history_limit(1000, 1000) is None
