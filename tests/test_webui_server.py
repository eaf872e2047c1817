"""The web UI's server in a real daemon: one port on both loopbacks, a port in use named at
start (the daemon starts without the UI), and a clean stop with a live page still connected."""

import http.client
import socket
import subprocess
import sys
from urllib.parse import urlsplit

from p2psync.webui.server import bind_loopback
from tests.daemons import DaemonProcess, log_since, log_size, running


def test_port_0_gives_one_port_on_both_loopbacks():
    sockets = bind_loopback(0)
    try:
        assert [s.getsockname()[0] for s in sockets] == ["127.0.0.1", "::1"]
        assert sockets[0].getsockname()[1] == sockets[1].getsockname()[1]
    finally:
        for sock in sockets:
            sock.close()


def test_a_ui_port_in_use_leaves_the_daemon_syncing_without_the_ui_and_says_why(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        daemon = DaemonProcess(tmp_path, "kitchen", ui_port=port)
        with running(daemon):
            warned = [line for line in daemon.log().splitlines() if "web UI not started" in line]
            assert len(warned) == 1, daemon.log()
            assert f"port {port} on 127.0.0.1 is in use" in warned[0]
            assert "ui.port" in warned[0] and "`p2psync ui`" in warned[0]
            assert daemon.call("put", collection="notes", key="k", value=1)["seq"]
            error = daemon.error("ui_link")
            assert error["code"] == "not_found"
            assert f"unavailable: port {port} on 127.0.0.1 was in use" in error["message"]
            told = subprocess.run(
                [sys.executable, "-m", "p2psync", "--socket", str(daemon.socket_path), "ui"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        assert told.returncode != 0 and "ui.port" in told.stderr, told
        assert "Traceback" not in daemon.log() + told.stderr


def test_the_daemon_stops_cleanly_with_a_page_still_listening(tmp_path):
    daemon = DaemonProcess(tmp_path, "kitchen", ui_port=0)
    with running(daemon):
        url = urlsplit(daemon.call("ui_link")["url"])
        connection = http.client.HTTPConnection("127.0.0.1", url.port, timeout=10)
        connection.request("GET", f"{url.path}?{url.query}", headers={"Host": url.netloc})
        response = connection.getresponse()
        cookie = response.getheader("set-cookie", "").split(";")[0]
        response.read()
        connection.request("GET", "/events", headers={"Host": url.netloc, "Cookie": cookie})
        events = connection.getresponse()
        assert events.status == 200 and events.readline() == b"event: ready\n"
        assert daemon.stop(timeout=10) == 0
        connection.close()
    assert "did not stop" not in daemon.log()


def test_a_reload_says_a_ui_change_waits_for_the_restart(tmp_path):
    daemon = DaemonProcess(tmp_path, "kitchen")
    with running(daemon):
        offset = log_size(daemon)
        daemon.ui_port = 0
        daemon.write_config()
        assert daemon.call("reload")["reloaded"]
        assert "ui.enabled or ui.port changed" in log_since(daemon, offset)
        assert daemon.error("ui_link")["code"] == "not_found"  # still off until then
