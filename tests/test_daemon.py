"""End-to-end: real `p2psync daemon` processes on 127.0.0.1 with static peers."""

import os
import re
import select
import shutil
import signal
import socket
import ssl
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from p2psync import identity, keystore, tls
from p2psync.client import ChangeEvent, ControlError
from p2psync.control.socket_file import ControlSocketError
from p2psync.daemon_setup import StartupError, startup_failure
from tests.daemons import (
    DaemonProcess,
    introduce,
    running,
    wait_for,
    wait_for_value,
)

pytestmark = pytest.mark.slow


def get_value(daemon, collection, key):
    return daemon.call("get", collection=collection, key=key)["value"]


def test_a_line_of_three_relays_and_converges(tmp_path):
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b", peers=[a.address])
    c = DaemonProcess(tmp_path, "c", peers=[b.address])
    with running(a, b, c):
        introduce(a, b, c)
        a.call("put", collection="notes", key="from-a", value={"n": 1})
        wait_for_value(c, "notes", "from-a", {"n": 1})
        b.call("put", collection="notes", key="from-b", value="b")
        c.call("put", collection="notes", key="from-c", value=[3])
        for daemon in (a, b, c):
            wait_for_value(daemon, "notes", "from-b", "b")
            wait_for_value(daemon, "notes", "from-c", [3])
        assert get_value(a, "notes", "from-c") == [3]
        assert get_value(c, "notes", "from-a") == {"n": 1}


def test_writes_made_apart_become_siblings_everywhere_and_resolve_everywhere(tmp_path):
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b", peers=[a.address])
    with running(a, b):
        introduce(a, b)
        a.call("put", collection="notes", key="meet", value="start")
        wait_for_value(b, "notes", "meet", "start")
        a.stop()
        b.call("put", collection="notes", key="meet", value="from b")
        b.stop()
        a.start()
        a.call("put", collection="notes", key="meet", value="from a")
        b.start()
        wait_for_value(a, "notes", "meet", "from b")
        wait_for_value(b, "notes", "meet", "from a")
        seen = [d.call("get", collection="notes", key="meet", all=True) for d in (a, b)]
        wait_for(lambda: "new conflict(s)" in a.log(), "a log line about the conflict")
        assert all(view["conflict"] for view in seen)
        assert seen[0]["value"] == seen[1]["value"], "both pick the same winner"
        assert sorted(s["value"] for s in seen[0]["siblings"]) == ["from a", "from b"]
        b.call("resolve", collection="notes", key="meet", value="agreed")
        wait_for_value(a, "notes", "meet", "agreed")
        for daemon in (a, b):
            assert not daemon.call("get", collection="notes", key="meet")["conflict"]
            assert daemon.call("conflicts")["items"] == []


def test_kill_9_loses_no_acknowledged_write_and_catches_up(tmp_path):
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b", peers=[a.address])
    with running(a, b):
        introduce(a, b)
        for number in range(50):
            a.call("put", collection="acked", key=f"k{number}", value=number)
        a.kill()
        a.start()
        for number in range(50):
            assert get_value(a, "acked", f"k{number}") == number
        a.call("put", collection="acked", key="after-restart", value=True)
        wait_for_value(b, "acked", "k49", 49)
        wait_for_value(b, "acked", "after-restart", True)


def test_an_untrusted_device_is_refused_and_learns_nothing(tmp_path):
    a = DaemonProcess(tmp_path, "a")
    stranger = DaemonProcess(tmp_path, "stranger", peers=[a.address])
    with running(a, stranger):
        stranger.call("trust", cert=a.cert(), name="a")
        a.call("put", collection="secret", key="k", value="only for members")
        wait_for(lambda: "not a member" in a.log() or "refused" in a.log(), "refusal")
        with pytest.raises(ControlError):
            stranger.call("get", collection="secret", key="k")
        assert not any(p["connected"] for p in stranger.call("peers"))


def test_a_forgotten_device_is_dropped_at_once_and_refused_after(tmp_path):
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b", peers=[a.address])
    with running(a, b):
        introduce(a, b)
        b.call("put", collection="n", key="before", value=1)
        wait_for_value(a, "n", "before", 1)
        a.call("forget", device=b.device_id)
        wait_for(lambda: not any(p["connected"] for p in a.call("peers")), "disconnect")
        b.call("put", collection="n", key="after", value=2)
        wait_for(lambda: b.call("status")["revoked"], "the forgotten device to be told")
        with pytest.raises(ControlError):
            a.call("get", collection="n", key="after")


def trusted_tls_connection(a, tmp_path):
    """A raw TLS connection to `a` from a device `a` trusts, to send it bad bytes."""
    state = tmp_path / "intruder"
    device = keystore.load_or_create_identity(state)
    a.call("trust", cert=device.cert_pem.decode(), name="intruder")
    context = tls.make_ssl_context(
        keystore.cert_path(state), keystore.key_path(state), [a.cert().encode()], server_side=False
    )
    raw = socket.create_connection(("127.0.0.1", a.port), timeout=10)
    return context.wrap_socket(raw), device


def test_garbage_and_oversized_frames_leave_the_daemon_serving_others(tmp_path):
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b", peers=[a.address])
    with running(a, b):
        introduce(a, b)
        with socket.create_connection(("127.0.0.1", a.port), timeout=10) as junk:
            junk.sendall(b"GET / HTTP/1.1\r\n\r\n" + bytes(range(256)) * 4)
            try:
                answer = junk.recv(100)
            except ConnectionResetError:
                answer = b""
            assert answer == b"", "the daemon hangs up on a non-TLS client without a word"
        tls_socket, _ = trusted_tls_connection(a, tmp_path)
        with tls_socket:
            tls_socket.sendall(struct.pack(">I", 2**31) + b"\x00" * 64)
            with pytest.raises((ssl.SSLError, ConnectionError, TimeoutError)) as closed:
                while tls_socket.recv(65536):
                    pass
                raise ConnectionError("closed")
            assert closed.value is not None
        tls_socket, _ = trusted_tls_connection(a, tmp_path)
        with tls_socket:
            tls_socket.sendall(b"\x00\x00\x00\x05garbage-after-handshake")
        with socket.socket(socket.AF_UNIX) as control:
            control.connect(str(a.socket_path))
            control.sendall(b"this is not json\n" + b"x" * (2 << 20) + b"\n")
            assert b'"ok": false' in control.recv(4096).replace(b'"ok":false', b'"ok": false')
        b.call("put", collection="n", key="still", value="served")
        wait_for_value(a, "n", "still", "served")
        assert a.process.poll() is None


def test_a_second_daemon_on_the_same_state_dir_refuses_to_start(tmp_path):
    a = DaemonProcess(tmp_path, "a")
    with running(a):
        twin = DaemonProcess(tmp_path, "a")
        twin.port = a.port + 1 if a.port < 65000 else a.port - 1
        twin.write_config()
        twin.start(wait=False)
        assert twin.process.wait(timeout=20) != 0
        assert "already using" in twin.log()


def test_a_control_socket_in_use_stops_the_start_with_one_line_naming_it_and_the_option(
    tmp_path,
):
    a = DaemonProcess(tmp_path, "a")
    with running(a):
        # two daemons given only their own state dirs share the default socket path
        b = DaemonProcess(tmp_path, "b")
        b.socket_path = a.socket_path
        b.write_config()
        b.start(wait=False)
        assert b.process is not None
        assert b.process.wait(timeout=20) == 1
        logged = b.log()
        assert "Traceback" not in logged and "ExceptionGroup" not in logged
        lines = [line for line in logged.splitlines() if " INFO " not in line]
        assert len(lines) == 1, lines  # (the first start's "created device identity" is INFO)
        [line] = lines
        assert "ERROR" in line and f"control socket {a.socket_path} is in use" in line
        assert "control.socket" in line and "P2PSYNC_SOCKET" in line
        assert a.call("status")["control_socket"] == str(a.socket_path), "a is not disturbed"


def test_p2psync_socket_names_the_socket_for_daemon_and_cli_and_the_old_name_warns(tmp_path):
    for variable, deprecated in (("P2PSYNC_SOCKET", False), ("P2PSYNC_CONTROL_SOCKET", True)):
        daemon = DaemonProcess(tmp_path, variable.lower())
        elsewhere = tmp_path / f"{variable.lower()}.sock"
        daemon.start(env={variable: str(elsewhere)})  # beats control.socket of its config
        try:
            assert elsewhere.is_socket() and not daemon.socket_path.exists()
            cli = subprocess.run(
                [sys.executable, "-m", "p2psync", "id"],
                capture_output=True,
                text=True,
                timeout=30,
                env={**os.environ, "P2PSYNC_SOCKET": str(elsewhere)},
            )
            assert cli.returncode == 0, cli.stderr
            warned = "P2PSYNC_CONTROL_SOCKET is deprecated: set P2PSYNC_SOCKET=" in daemon.log()
            assert warned == deprecated
        finally:
            daemon.stop()


def test_a_startup_failure_inside_the_nursery_comes_out_alone_anything_else_whole():
    in_use = ControlSocketError("control socket /run/x.sock is in use")
    nested = ExceptionGroup("daemon", [ExceptionGroup("serve", [in_use])])
    assert startup_failure(nested) is in_use
    assert isinstance(startup_failure(ExceptionGroup("x", [StartupError("no")])), StartupError)
    assert startup_failure(ExceptionGroup("x", [in_use, StartupError("no")])) is None
    assert startup_failure(ExceptionGroup("bug", [KeyError("k")])) is None


def test_sigterm_stops_cleanly_and_says_stopping(tmp_path):
    a = DaemonProcess(tmp_path, "a")
    with running(a):
        a.process.send_signal(signal.SIGTERM)
        a.wait_for_notification("STOPPING=1")
        assert a.process.wait(timeout=10) == 0


def test_device_ids_from_the_cli_and_the_certificate_agree(tmp_path):
    a = DaemonProcess(tmp_path, "a")
    with running(a):
        reported = a.call("id")
        assert identity.device_id_from_certificate(reported["cert"].encode()) == reported["device"]


def start_with_config(tmp_path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "p2psync", "daemon", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_broken_config_stops_the_start_with_the_file_and_line(tmp_path):
    broken = start_with_config(tmp_path, '[network]\nlisten = ["127.0.0.1:0"\n')
    assert broken.returncode == 2
    assert str(tmp_path / "config.toml") in broken.stderr and "last line" in broken.stderr
    misspelt = start_with_config(tmp_path, '[network]\nlisen = ["127.0.0.1:0"]\n')
    assert misspelt.returncode == 2
    assert "network.lisen" in misspelt.stderr and "network.listen" in misspelt.stderr


def test_a_port_in_use_or_an_unusable_state_dir_is_named(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    with busy:
        port = busy.getsockname()[1]
        state = tmp_path / "state"
        taken = start_with_config(
            tmp_path,
            f'[paths]\nstate_dir = "{state}"\n[control]\nsocket = "{tmp_path / "c.sock"}"\n'
            f'[network]\nlisten = ["127.0.0.1:{port}"]\n[discovery]\nenabled = false\n'
            "[ui]\nenabled = false\n",
        )
    assert taken.returncode == 1
    assert f"127.0.0.1:{port}" in taken.stderr and "in use" in taken.stderr
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    unusable = start_with_config(
        tmp_path,
        f'[paths]\nstate_dir = "{not_a_dir / "state"}"\n[network]\nlisten = ["127.0.0.1:0"]\n'
        "[discovery]\nenabled = false\n[ui]\nenabled = false\n",
    )
    assert unusable.returncode == 1
    assert "state directory" in unusable.stderr and "--state-dir" in unusable.stderr


def test_sd_notify_ready_status_watchdog_reload_and_stopping(tmp_path):
    a = DaemonProcess(tmp_path, "a")
    a.start(wait=False, env={"WATCHDOG_USEC": "200000"})
    try:
        ready = a.wait_for_notification("READY=1")
        assert any(line.startswith("STATUS=") for line in ready.split("\n"))
        a.wait_for_notification("WATCHDOG=1")
        a.config_path.write_text(a.config_path.read_text().replace('"debug"', '"info"'))
        a.process.send_signal(signal.SIGHUP)
        a.wait_for_notification("RELOADING=1")
        a.wait_for_notification("READY=1")
        assert "configuration reloaded: log.level" in a.log()
        a.process.send_signal(signal.SIGTERM)
        a.wait_for_notification("STOPPING=1")
        assert a.process.wait(timeout=10) == 0
    finally:
        if a.process.poll() is None:
            a.kill()


def test_watch_delivers_every_change_once_in_order_across_a_reconnect(tmp_path):
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b", peers=[a.address])
    with running(a, b):
        introduce(a, b)
        start = b.call("status")["position"]
        for number in range(60):
            target = a if number % 2 else b  # half local to b, half arriving from a
            target.call("put", collection="feed", key=f"{number:03}", value=number)
        seen: list[str] = []
        with b.client() as client:
            watch = client.watch(since=start, collection="feed", idle_timeout=20)
            for event in watch:
                if isinstance(event, ChangeEvent):
                    seen.extend(change.key for change in event.changes)
                if len(seen) >= 25:
                    resume_from = watch.position
                    break
        with b.client() as client:
            for event in client.watch(since=resume_from, collection="feed", idle_timeout=20):
                if isinstance(event, ChangeEvent):
                    seen.extend(change.key for change in event.changes)
                if len(seen) >= 60:
                    break
        assert sorted(seen) == [f"{n:03}" for n in range(60)]
        assert len(set(seen)) == 60, "no change delivered twice"
        local = [k for k in seen if int(k) % 2 == 0]
        assert local == sorted(local), "one device's writes arrive in the order they were made"


def test_many_concurrent_writers_all_reach_the_peer(tmp_path):
    """Group commits racing the live push: every acknowledged write must arrive (a sender that
    marks entries as sent before they were read from the log loses them)."""
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b", peers=[a.address])
    with running(a, b):
        introduce(a, b)

        def source(number: int) -> DaemonProcess:
            return a if number % 4 else b  # mostly a, some b: both directions are live

        def writer(number: int) -> None:
            with source(number).client() as client:
                for index in range(150):
                    client.call("put", collection="load", key=f"{number}-{index}", value=index)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for number in range(16):
            destination = b if source(number) is a else a
            wait_for_value(destination, "load", f"{number}-149", 149)
        assert a.call("status")["records"] == b.call("status")["records"] == 16 * 150


def test_a_device_restored_from_a_backup_writes_at_once_loses_nothing_and_is_reported(tmp_path):
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b", peers=[a.address])
    with running(a, b):
        introduce(a, b)
        a.call("put", collection="n", key="before-backup", value=1)
        wait_for_value(b, "n", "before-backup", 1)
        a.stop()
        backup = tmp_path / "backup"
        shutil.copytree(a.state_dir, backup)
        a.start()
        old_actor = a.call("status")["actor"]
        a.call("put", collection="n", key="after-backup", value=2)
        wait_for_value(b, "n", "after-backup", 2)
        a.stop()
        shutil.rmtree(a.state_dir)
        shutil.copytree(backup, a.state_dir)
        # b is away while a writes, so a writes knowing only its backup (when b is up, a may hear
        # of its second start first and continue that, which is no restore at all)
        b.stop()
        a.start()
        a.call("put", collection="n", key="after-restore", value=3)
        assert a.call("status")["actor"] != old_actor, "a start never reuses an epoch"
        b.start()
        wait_for_value(b, "n", "after-restore", 3)
        wait_for_value(a, "n", "after-backup", 2)
        # The backup holds the state the second start began from, so the third start continues
        # the same head as the second: to the household it is one state dir used twice.
        wait_for(lambda: "started twice from the same state" in b.log(), "restore report")
        notices = b.call("status")["notices"]
        assert [n["kind"] for n in notices] == ["running_twice"]
        assert notices[0]["device"] == a.device_id and notices[0]["text"].startswith("a ")


FLOOD_CONNECTIONS = 300
FLOOD_SOURCES = 40  # 127.0.0.2 ... 127.0.0.41: loopback answers for all of 127/8
FLOOD_NOFILE = 128  # the daemon's file limit: 300 idle connections would exhaust it


def open_flood(port: int) -> list[socket.socket]:
    """Idle TCP connections to the sync port from many loopback sources; nothing is sent."""
    flood = []
    for i in range(FLOOD_CONNECTIONS):
        sock = socket.socket()
        sock.bind((f"127.0.0.{2 + i % FLOOD_SOURCES}", 0))
        sock.connect(("127.0.0.1", port))
        flood.append(sock)
    return flood


def hung_up(flood: list[socket.socket], timeout: float) -> int:
    """How many of the connections the daemon closed, waiting until that stops changing or
    `timeout` passed (poll() on the sockets: EOF or reset makes them readable)."""
    poller = select.poll()
    by_fd = {sock.fileno(): sock for sock in flood}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    closed = 0
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        ready = poller.poll(min(remaining, 1.0) * 1000)
        if not ready:
            break  # a second without a hang-up: the turned-away ones are all closed
        for fd, _ in ready:
            poller.unregister(fd)
            try:
                gone = by_fd[fd].recv(1) == b""
            except ConnectionResetError:
                gone = True
            closed += gone
    return closed


def test_an_idle_connection_flood_leaves_control_and_members_fast(tmp_path):
    a = DaemonProcess(tmp_path, "a", nofile=FLOOD_NOFILE)
    b = DaemonProcess(tmp_path, "b", peers=[a.address])
    with running(a, b):
        introduce(a, b)
        b_id = b.device_id
        wait_for(lambda: a.call("status")["peers_connected"] == 1, "b connected to a", a, b)
        mark = len(a.log_path.read_bytes())
        flood = open_flood(a.port)
        try:
            # Only the first 32 (a quarter of the file limit) may stay, at most 8 per source;
            # every other one is closed at once, without the daemon reading a byte.
            closed = hung_up(flood, timeout=20)
            assert FLOOD_CONNECTIONS - 32 <= closed < FLOOD_CONNECTIONS, closed
            latencies = []
            for _ in range(20):
                started = time.perf_counter()
                assert a.call("status")["peers_connected"] == 1
                latencies.append(time.perf_counter() - started)
            position = a.call("status")["position"]
            started = time.perf_counter()
            b.call("put", collection="flood", key="during", value="still syncing")
            wait_for_value(a, "flood", "during", "still syncing", since=position)
            synced = time.perf_counter() - started
            open_fds = len(os.listdir(f"/proc/{a.process.pid}/fd"))
        finally:
            for sock in flood:
                sock.close()
        worst = max(latencies)
        print(
            f"\nflood of {FLOOD_CONNECTIONS}: {closed} turned away, {open_fds} fds open of "
            f"{FLOOD_NOFILE}; status median {sorted(latencies)[10] * 1000:.1f} ms, worst "
            f"{worst * 1000:.1f} ms; a write on b seen on a after {synced * 1000:.1f} ms"
        )
        assert worst < 1.0 and synced < 1.0  # under 100 ms on a quiet machine; CI may be busy
        assert open_fds < FLOOD_NOFILE - 32
        assert a.call("peers")[0]["device"] == b_id and a.call("peers")[0]["connected"]
        logged = a.log_path.read_bytes()[mark:].decode(errors="replace")
        assert "Traceback" not in logged and "ERROR" not in logged
        loud = [
            line
            for line in logged.splitlines()
            if " DEBUG " not in line and ("turned away" in line or "accept failed" in line)
        ]
        assert 1 <= len(loud) <= 3, loud  # the first one, and summaries once a minute


def file_mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_state_dir_and_database_are_private_whatever_existed_before(tmp_path):
    a = DaemonProcess(tmp_path, "a")
    state = a.state_dir
    private = ["replica.db", "replica.db-wal", "replica.db-shm", "device.key"]
    previous = os.umask(0o022)  # the daemon inherits an umask that would make them 0644
    try:
        with running(a):
            a.call("put", collection="n", key="k", value="secret")
            assert file_mode(state) == 0o700
            assert {name: file_mode(state / name) for name in private} == dict.fromkeys(
                private, 0o600
            )
            assert a.stop() == 0
        # an older release, a restored backup or a copy left it all open to local users
        state.chmod(0o755)
        loose = [path for path in state.iterdir() if path.name in private]
        assert {"replica.db", "device.key"} <= {path.name for path in loose}
        for path in loose:
            path.chmod(0o644)
        mark = len(a.log_path.read_bytes())
        with running(a.start()):
            assert file_mode(state) == 0o700
            for path in loose:
                assert file_mode(path) == 0o600, path
            assert a.call("get", collection="n", key="k")["value"] == "secret"
        logged = a.log_path.read_bytes()[mark:].decode()
        assert f"made {state} private (mode 0700, was 0755)" in logged
        assert f"made {state / 'replica.db'} private (mode 0600, was 0644)" in logged
    finally:
        os.umask(previous)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
def test_a_database_others_can_read_and_we_cannot_fix_stops_the_start_with_the_fix(as_nobody):
    with tempfile.TemporaryDirectory(dir="/tmp") as top:  # reachable for nobody, unlike tmp_path
        os.chmod(top, 0o755)
        state = Path(top) / "state"
        state.mkdir()
        os.chown(state, 65534, 65534)
        state.chmod(0o755)
        database = state / "replica.db"
        database.write_bytes(b"")  # root's, so nobody cannot chmod it
        database.chmod(0o644)
        probe = (
            "from pathlib import Path\n"
            "from p2psync.daemon_setup import StartupError, prepare_state_dir\n"
            "try:\n"
            f"    prepare_state_dir(Path({str(state)!r}))\n"
            "except StartupError as exc:\n"
            "    print(exc)\n"
        )
        result = as_nobody(probe)
        assert file_mode(state) == 0o700  # what this user owns was made private first
        assert file_mode(database) == 0o644
    message = result.stdout
    assert f"{database} is open to other local users (mode 0644)" in message, result.stderr
    assert f"chmod 0600 {database}" in message and "chown 65534" in message


def test_two_running_copies_of_one_device_both_sync_and_are_named_with_their_places(tmp_path):
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b", host="127.0.0.2", peers=[a.address])
    with running(a, b):
        introduce(a, b)
        b.call("put", collection="n", key="from-b", value=0)
        wait_for_value(a, "n", "from-b", 0)
        b.stop()
        copy = DaemonProcess(tmp_path, "b-copy", host="127.0.0.3", peers=[a.address])
        shutil.copytree(b.state_dir, copy.state_dir)
        b.start()
        with running(copy):
            assert copy.device_id == b.device_id
            b.call("put", collection="n", key="original", value=1)
            copy.call("put", collection="n", key="copy", value=2)
            wait_for_value(a, "n", "original", 1)
            wait_for_value(a, "n", "copy", 2)
            wait_for(
                lambda: any(
                    n["kind"] == "running_in_two_places" for n in a.call("status")["notices"]
                ),
                "a to name the two places",
            )
            [places] = [
                n for n in a.call("status")["notices"] if n["kind"] == "running_in_two_places"
            ]
            # on loopback both copies dial from 127.0.0.1, so their places are told by port
            place = r"127\.0\.0\.1:\d+"
            expected = rf"b(-copy)? is running in two places: {place} and {place}"
            assert re.fullmatch(expected, places["text"])
            assert f"device {b.device_id} is running in two places" in a.log()
            # both copies stay connected, so each one's writes keep flowing
            b.call("put", collection="n", key="original-later", value=3)
            copy.call("put", collection="n", key="copy-later", value=4)
            wait_for_value(a, "n", "original-later", 3)
            wait_for_value(a, "n", "copy-later", 4)


def test_a_revoked_device_comes_back_only_when_readmitted_and_on_a_new_epoch(tmp_path):
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b", peers=[a.address])
    with running(a, b):
        introduce(a, b)
        a.call("revoke", device=b.device_id)
        wait_for(lambda: b.call("status")["revoked"], "b to be told")
        epoch_when_revoked = b.call("status")["actor"]
        with pytest.raises(ControlError) as refused:
            a.call("trust", cert=b.cert(), name="b")
        assert refused.value.code == "bad_request" and "--readmit" in str(refused.value)
        a.call("trust", cert=b.cert(), name="b", address=b.address, readmit=True)
        wait_for(lambda: not b.call("status")["revoked"], "b to hear from a again")
        wait_for(
            lambda: b.call("status")["actor"] != epoch_when_revoked,
            "b to learn from the revocation it applies that its epoch was frozen",
        )
        b.call("put", collection="n", key="back", value=1)
        wait_for_value(a, "n", "back", 1)
