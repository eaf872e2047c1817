"""`p2psync doctor`: each check from fabricated facts, the probes on real sockets, and one run of
the command against a real daemon."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from p2psync.doctor import (
    Check,
    GroupAccess,
    Level,
    SocketProblem,
    clock_check,
    conflicts_check,
    control_socket_check,
    diagnose,
    discovery_check,
    failed,
    history_checks,
    loopback_target,
    peer_checks,
    port_check,
    probe_control_socket,
    probe_port,
    render,
    run_doctor,
    trust_checks,
)
from tests.apps import APP_UID, needs_root, run_cli_as
from tests.daemons import DaemonProcess, running
from tests.installed import RunAsNobody
from tests.test_control_access import AppsDaemon

ROOT = Path(__file__).parent.parent
SOCKET = Path("/run/p2psync/control.sock")


def peer(name: str = "attic", **fields: Any) -> dict[str, Any]:
    return {
        "device": "TPSDW-QVCLZ-3WFQ7-ENPPE-JYSJU-YEKOD-6PFNI",
        "name": name,
        "revoked": False,
        "connected": True,
        "address": "10.0.0.2:47100",
        "last_seen_seconds_ago": 1.0,
        "in_sync": True,
        "we_lack": 0,
        **fields,
    }


def discovery(enabled: bool = True, nearby: int = 0) -> dict[str, Any]:
    return {
        "device": "V4TH3",
        "discovery": {"enabled": enabled, "interfaces": [], "nearby": nearby},
    }


def test_control_socket_problems_each_say_what_to_do() -> None:
    assert control_socket_check(SOCKET, None).level is Level.OK
    missing = control_socket_check(SOCKET, SocketProblem.MISSING)
    assert missing.level is Level.FAIL and "systemctl start p2psync" in missing.advice
    assert "P2PSYNC_SOCKET" in missing.advice
    stale = control_socket_check(SOCKET, SocketProblem.REFUSED)
    assert "stale socket" in stale.message and "journalctl" in stale.advice
    assert "not a socket" in control_socket_check(SOCKET, SocketProblem.NOT_A_SOCKET).message
    assert "stuck" in control_socket_check(SOCKET, SocketProblem.TIMEOUT).advice
    other = control_socket_check(SOCKET, SocketProblem.OTHER, "Too many levels of symbolic links")
    assert "symbolic links" in other.message


def test_permission_advice_depends_on_group_membership() -> None:
    def advice(access: GroupAccess | None) -> str:
        check = control_socket_check(SOCKET, SocketProblem.PERMISSION, access=access)
        assert check.level is Level.FAIL and "permission denied" in check.message
        return check.advice

    assert "sudo usermod -aG p2psync $USER" in advice(None)
    assert "usermod -aG sync" in advice(GroupAccess("sync", listed=False, effective=False))
    assert "log out and in again" in advice(GroupAccess("p2psync", listed=True, effective=False))
    assert "control.mode" in advice(GroupAccess("p2psync", listed=True, effective=True))


def test_probe_control_socket_on_real_paths(tmp_path: Path) -> None:
    assert "no control socket" in probe_control_socket(tmp_path / "missing.sock").message
    (tmp_path / "file").write_text("")
    assert "not a socket" in probe_control_socket(tmp_path / "file").message
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(tmp_path / "stale.sock"))  # bound, never listening: a dead daemon's
        assert "stale socket" in probe_control_socket(tmp_path / "stale.sock").message
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(str(tmp_path / "live.sock"))
        live.listen(1)
        assert probe_control_socket(tmp_path / "live.sock").level is Level.OK
    only = run_doctor(tmp_path / "missing.sock")
    assert len(only) == 1 and failed(only)


@pytest.mark.parametrize(
    ("listen", "target"),
    [
        ("0.0.0.0:47100", ("127.0.0.1", 47100)),
        ("[::]:47100", ("::1", 47100)),
        ("127.0.0.5:4000", ("127.0.0.5", 4000)),
        ("[::1]:4000", ("::1", 4000)),
        ("192.168.1.5:47100", None),  # never connect anywhere but loopback
        ("[fe80::1]:47100", None),
        ("nonsense", None),
    ],
)
def test_loopback_targets(listen: str, target: tuple[str, int] | None) -> None:
    assert loopback_target(listen) == target


def test_port_checks() -> None:
    assert port_check("192.168.1.5:47100", None, None).level is Level.INFO
    good = port_check("0.0.0.0:47100", ("127.0.0.1", 47100), None)
    assert good.level is Level.OK and "firewall" in good.message
    bad = port_check("0.0.0.0:47100", ("127.0.0.1", 47100), "Connection refused")
    assert bad.level is Level.FAIL and "Connection refused" in bad.message
    assert "journalctl" in bad.advice


def test_probe_port_on_loopback() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        assert probe_port("127.0.0.1", port) is None
    assert probe_port("127.0.0.1", port) == "Connection refused"  # closed now


def test_discovery() -> None:
    assert discovery_check({"device": "V4TH3"}, [], None) is None  # not reported: no opinion
    off = discovery_check(discovery(enabled=False), [], None)
    assert off and off.level is Level.INFO and "network.peers" in off.message
    seen = discovery_check(discovery(nearby=2), [], None)
    assert seen and seen.level is Level.OK and "2 devices" in seen.message
    nearby_list = discovery_check(discovery(nearby=0), [], [{"device": "X"}])
    assert nearby_list and "1 device seen" in nearby_list.message
    static = discovery_check(discovery(), [peer()], [])
    assert static and static.level is Level.OK and "static" in static.message
    blocked = discovery_check(discovery(), [peer(connected=False)], [])
    assert blocked and blocked.level is Level.WARN
    assert "network.peers" in blocked.advice and "--address with join" in blocked.advice


def test_peers() -> None:
    alone = peer_checks([peer(revoked=True)])
    assert [c.level for c in alone] == [Level.WARN] and "p2psync pair" in alone[0].advice
    online, catching_up, offline, never = peer_checks(
        [
            peer(),
            peer("laptop", we_lack=1500, in_sync=False),
            peer("garage", connected=False, last_seen_seconds_ago=7300),
            peer("phone", connected=False, last_seen_seconds_ago=None),
        ]
    )
    assert online == Check(Level.OK, "attic online at 10.0.0.2:47100, in sync")
    assert "catching up (1,500 entries to receive)" in catching_up.message
    assert offline.level is Level.WARN and offline.message == "garage offline, last seen 2 h ago"
    assert "network.peers" in offline.advice
    assert never.message == "phone offline, last seen never"


def test_clock_skew() -> None:
    assert clock_check([peer(clock_offset_ms=None), peer()]) is None
    fine = clock_check([peer(clock_offset_ms=1000), peer("b", clock_offset_ms=-20)])
    assert fine and fine.level is Level.OK and "2 peers" in fine.message
    skewed = clock_check(
        [
            peer(clock_offset_ms=3200),
            peer("garage", clock_offset_ms=-1500.5),
            peer("b", clock_offset_ms=3),
        ]
    )
    assert skewed and skewed.level is Level.WARN
    assert skewed.message == "clocks differ: attic by 3.2 s, garage by 1.5 s"
    assert "timedatectl set-ntp true" in skewed.advice and "timesyncd" in skewed.advice
    assert clock_check([peer(clock_offset_ms=90_000, revoked=True)]) is None


def test_conflicts() -> None:
    assert conflicts_check({}) is None
    assert conflicts_check({"conflicts": 0}) == Check(Level.OK, "no conflicts")
    pending = conflicts_check({"conflicts": 3})
    assert pending and pending.level is Level.INFO and pending.message == "3 records in conflict"
    assert "p2psync conflicts" in pending.advice


def test_diagnose_and_render() -> None:
    status = {**discovery(), "name": "kitchen", "version": "0.1.0", "uptime": 75, "conflicts": 2}
    checks = diagnose(status, [peer(connected=False, clock_offset_ms=5000)], [])
    assert [c.level for c in checks] == [Level.OK, Level.WARN, Level.WARN, Level.WARN, Level.INFO]
    assert checks[0].message == "daemon running: kitchen (V4TH3), p2psync 0.1.0, up 1 min 15 s"
    assert not failed(checks)
    lines = render([*checks, Check(Level.FAIL, "broken", "fix it")])
    assert lines[0].startswith("✓ daemon running") and lines[1].startswith("! discovery")
    assert lines[2] == "    " + checks[1].advice
    assert "✗ broken" in lines and "    fix it" in lines
    assert any(line.startswith("i 2 records") for line in lines)
    assert lines[-1] == "1 problem, 3 warnings"
    assert render([Check(Level.OK, "fine")])[-1] == "no problems found"


def test_doctor_against_a_real_daemon(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, "kitchen")
    command = [sys.executable, "-m", "p2psync", "--socket", str(daemon.socket_path), "doctor"]
    with running(daemon):
        shown = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=ROOT)
        as_json = subprocess.run(
            [*command, "--json"], capture_output=True, text=True, timeout=30, cwd=ROOT
        )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"✓ control socket {daemon.socket_path} answers" in shown.stdout
    assert "✓ daemon running: kitchen" in shown.stdout
    assert f"✓ listening on 127.0.0.1:{daemon.port}: port {daemon.port} accepts" in shown.stdout
    assert "! no other device in this household yet" in shown.stdout
    checks = json.loads(as_json.stdout)
    assert as_json.returncode == 0
    assert {"level", "message", "advice"} == set(checks[0])
    assert "fail" not in {c["level"] for c in checks}
    stopped = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert stopped.returncode == 1 and "✗" in stopped.stdout


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
def test_probe_says_permission_denied_to_someone_outside_the_group(
    tmp_path: Path, as_nobody: RunAsNobody
) -> None:
    path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        probe = (
            "from pathlib import Path\n"
            "from p2psync.doctor import probe_control_socket\n"
            f"check = probe_control_socket(Path({str(path)!r}))\n"
            "print(check.level, check.message, check.advice, sep='|')\n"
        )
        result = as_nobody(probe)
    level, message, advice = result.stdout.strip().split("|")
    assert (level, message) == ("fail", f"permission denied on {path}"), result.stderr
    assert "sudo usermod -aG" in advice and "log in again" in advice


def test_a_revoked_device_and_a_copied_state_dir_are_named_with_advice() -> None:
    told = "this device was revoked by Küche at 2026-12-02 10:41"
    twice = "Anna's iPad started twice from the same state"
    status = {
        "revoked": [{"by": "Küche", "text": told}],
        "notices": [{"kind": "running_twice", "text": twice}],
    }
    revoked, copied = trust_checks(status)
    assert revoked.level is Level.FAIL and "revoked by Küche at 2026-12-02 10:41" in revoked.message
    assert "re-admit" in (revoked.advice or "")
    assert copied.level is Level.WARN and copied.message.startswith("Anna's iPad started twice")
    assert trust_checks({"revoked": [], "notices": []}) == []


def test_members_whose_history_is_kept_are_named_with_what_to_do() -> None:
    away = "Küche has been away 41 days; history since then is kept for it until 2026-12-20"
    kept = "history is kept until tv reports: it may run p2psync before 0.4.0 (upgrade it)"
    history = {"compaction": True, "away": [{"text": away}], "unreported": [{"text": kept}]}
    status = {"history": history}
    kitchen, tv = history_checks(status)
    assert (kitchen.level, kitchen.message) == (Level.INFO, away)
    assert "p2psync revoke" in kitchen.advice
    assert (tv.level, tv.message) == (Level.WARN, kept)
    assert "upgrade p2psync there (0.4.0 or newer)" in tv.advice
    assert history_checks({"history": {"compaction": True, "away": [], "unreported": []}}) == []
    assert history_checks({}) == [] and history_checks({"history": "junk"}) == []


@needs_root
def test_an_app_is_told_the_daemon_answers_and_that_the_full_check_is_for_admins() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as top:  # reachable for the app's uid
        os.chmod(top, 0o755)
        daemon = AppsDaemon(Path(top), "a")
        with running(daemon):
            daemon.call("grant", app=APP_UID, share="default", read_only=True)
            checked = run_cli_as(APP_UID, "--socket", str(daemon.socket_path), "doctor", "--json")
    assert checked.returncode == 0, checked.stderr
    levels = {check["level"] for check in json.loads(checked.stdout)}
    assert "fail" not in levels
    assert any(
        f"you are an app here (uid {APP_UID}, 1 grant(s))" in check["message"]
        for check in json.loads(checked.stdout)
    )
