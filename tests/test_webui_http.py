"""The web UI over real HTTP, served by a real daemon: who gets in, what is refused, what pages
show and escape, and the live event stream."""

import http.client
import json
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

from tests.daemons import DaemonProcess, running

TIMEOUT = 10


class Browser:
    """A browser as far as the UI can tell: a Host, an Origin on POSTs, a cookie once in."""

    def __init__(self, daemon: DaemonProcess, host: str = "127.0.0.1") -> None:
        link = daemon.call("ui_link")
        parts = urlsplit(link["url"])
        assert parts.hostname == "127.0.0.1"
        self.port = int(parts.port or 0)
        self.host = host
        self.link = f"{parts.path}?{parts.query}"
        self.cookie = ""

    def connect(self) -> http.client.HTTPConnection:
        address = "::1" if self.host == "[::1]" else "127.0.0.1"
        return http.client.HTTPConnection(address, self.port, timeout=TIMEOUT)

    def request(
        self, method: str, path: str, body: dict[str, str] | None = None, **headers: str
    ) -> tuple[int, dict[str, str], str]:
        sent = {"Host": f"{self.host}:{self.port}", **headers}
        if self.cookie:
            sent.setdefault("Cookie", self.cookie)
        if body is not None:
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        connection = self.connect()
        try:
            connection.request(method, path, urlencode(body) if body else None, sent)
            response = connection.getresponse()
            found = {k.lower(): v for k, v in response.getheaders()}
            return response.status, found, response.read().decode()
        finally:
            connection.close()

    def log_in(self) -> "Browser":
        status, headers, _ = self.request("GET", self.link)
        assert status == 303, status
        self.cookie = headers["set-cookie"].split(";")[0]
        return self

    def csrf(self) -> str:
        _, _, page = self.request("GET", "/")
        found = re.search(r'name="csrf-token" content="([^"]+)"', page)
        assert found
        return found[1]

    def post(self, path: str, fields: dict[str, str], **headers: str) -> tuple[int, str]:
        headers.setdefault("Origin", f"http://{self.host}:{self.port}")
        status, _, page = self.request("POST", path, fields, **headers)
        return status, page


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    kitchen = DaemonProcess(tmp_path_factory.mktemp("webui"), "kitchen", ui_port=0)
    with running(kitchen):
        yield kitchen


def test_pages_need_the_login_link_and_it_works_once(daemon):
    browser = Browser(daemon)
    for path in ("/", "/add", "/conflicts", "/fragment/devices", "/events"):
        assert browser.request("GET", path)[0] == 401, path
    assert browser.request("GET", "/login?token=guessed")[0] == 401
    browser.log_in()
    status, _, page = browser.request("GET", "/")
    assert status == 200 and "kitchen" in page
    replay = Browser(daemon)
    replay.link = browser.link
    status, headers, page = replay.request("GET", browser.link)
    assert status == 401 and "set-cookie" not in headers and "used already" in page
    wrong_cookie = browser.request("GET", "/", Cookie=f"p2psync_session_{browser.port}=forged")
    assert wrong_cookie[0] == 401


def test_the_session_cookie_is_http_only_and_strict_and_pages_forbid_framing(daemon):
    browser = Browser(daemon)
    status, headers, _ = browser.request("GET", browser.link)
    assert status == 303 and headers["location"] == "/"
    assert "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["referrer-policy"] == "same-origin"


def test_logging_out_ends_the_session(daemon):
    browser = Browser(daemon).log_in()
    status, page = browser.post("/logout", {"csrf": browser.csrf()})
    assert status == 200 and "Logged out" in page
    assert browser.request("GET", "/")[0] == 401  # the old cookie, kept by a careless browser


def test_another_host_name_is_refused_even_with_a_session(daemon):
    browser = Browser(daemon).log_in()
    status, _, page = browser.request("GET", "/", Host=f"rebound.example:{browser.port}")
    assert status == 403 and "127.0.0.1" in page
    assert browser.request("GET", "/static/ui.css", Host="rebound.example")[0] == 403
    assert Browser(daemon, host="localhost").log_in().request("GET", "/")[0] == 200


def test_the_ui_answers_on_ipv6_loopback_and_listens_on_loopback_only(daemon):
    browser = Browser(daemon, host="[::1]")
    browser.log_in()
    assert browser.request("GET", "/")[0] == 200
    listening = subprocess.run(
        ["ss", "-Hltn", f"sport = :{browser.port}"], capture_output=True, text=True, check=True
    )
    addresses = sorted(line.split()[3] for line in listening.stdout.splitlines())
    assert addresses == [f"127.0.0.1:{browser.port}", f"[::1]:{browser.port}"]


def test_a_post_needs_the_csrf_token_and_this_uis_origin(daemon):
    browser = Browser(daemon).log_in()
    csrf = browser.csrf()
    assert browser.post("/add", {"action": "start"})[0] == 403  # no token
    assert browser.post("/add", {"action": "start", "csrf": "wrong"})[0] == 403
    other_origin = browser.post("/add", {"csrf": csrf}, Origin="http://evil.example")
    assert other_origin[0] == 403
    status, _, _ = browser.request("POST", "/add", {"csrf": csrf})  # no Origin at all
    assert status == 403
    assert "pairing-code" not in browser.request("GET", "/add")[2]  # none of those did a thing
    assert browser.post("/add", {"action": "start", "csrf": csrf})[0] == 303
    _, _, page = browser.request("GET", "/add")
    code = re.search(r'id="pairing-code"[^>]*>([^<]+)<', page)
    assert code and re.fullmatch(r"\d+(-[a-z]+)+", code[1])
    assert "<svg" in page  # the QR code, inline
    assert browser.post("/add", {"action": "stop", "csrf": csrf})[0] == 303


def test_a_join_that_fails_says_why_on_the_page(daemon):
    browser = Browser(daemon).log_in()
    fields = {"csrf": browser.csrf(), "code": "7-no-such", "address": "127.0.0.1:1"}
    status, page = browser.post("/join", fields)
    assert status == 200 and 'id="join-error"' in page and 'id="joined"' not in page
    assert 'value="7-no-such"' in page  # the form keeps what was typed, to correct it


def test_text_from_peers_is_escaped(daemon):
    daemon.call("rename", name="<b>kitchen</b>")
    try:
        daemon.call("put", collection="notes", key="<i>k</i>", value="<script>alert(1)</script>")
        browser = Browser(daemon).log_in()
        _, _, overview = browser.request("GET", "/")
        assert "&lt;b&gt;kitchen&lt;/b&gt;" in overview and "<b>kitchen" not in overview
        _, _, data = browser.request("GET", "/data?share=default&collection=notes")
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in data and "<script>alert" not in data
        assert "&lt;i&gt;k&lt;/i&gt;" in data
        _, _, history = browser.request("GET", "/record?collection=notes&key=%3Ci%3Ek%3C%2Fi%3E")
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in history and "<script>alert" not in history
        assert "By <strong>&lt;b&gt;kitchen&lt;/b&gt;</strong>" in history
    finally:
        daemon.call("rename", name="kitchen")


def test_a_records_page_shows_its_history_newest_first_with_the_writers_name(daemon):
    for value in ("first", "second", "third"):
        daemon.call("put", collection="history", key="<b>k</b>", value=value)
    browser = Browser(daemon).log_in()
    _, _, data = browser.request("GET", "/data?share=default&collection=history")
    link = re.search(r'href="(/record\?[^"]+)"', data)
    assert link, data
    status, _, page = browser.request("GET", link[1].replace("&amp;", "&"))
    assert status == 200 and "History of history/&lt;b&gt;k&lt;/b&gt;" in page
    versions = re.findall(r'<li id="version-\d+"[^>]*class="version([^"]*)".*?</li>', page, re.S)
    assert [standing.strip() for standing in versions] == ["winner", "", ""]
    values = re.findall(r"<pre>&#34;(\w+)&#34;</pre>", page)
    assert values == ["third", "second", "first"]
    assert page.count("By <strong>kitchen</strong>") == 3
    assert "Older versions" not in page


def test_a_long_history_pages_with_older_versions_and_a_deletion_says_so(daemon):
    for number in range(3):
        daemon.call("put", collection="history", key="long", value=number)
    daemon.call("delete", collection="history", key="long")
    browser = Browser(daemon).log_in()
    _, _, page = browser.request("GET", "/record?collection=history&key=long&limit=2")
    assert len(re.findall(r'<li id="version-', page)) == 2
    assert '<p class="deleted">deleted</p>' in page
    older = re.search(r'id="older" href="([^"]+)"', page)
    assert older and older[1].endswith("limit=4#version-3")  # the keyboard lands on the 3rd
    _, _, page = browser.request("GET", older[1].replace("&amp;", "&").split("#")[0])
    assert len(re.findall(r'<li id="version-', page)) == 4 and 'id="older"' not in page


def test_a_records_page_for_no_record_or_a_bad_limit_says_why(daemon):
    browser = Browser(daemon).log_in()
    status, _, page = browser.request("GET", "/record?collection=history&key=never")
    assert status == 200 and 'role="alert">no record history/never<' in page
    _, _, page = browser.request("GET", "/record?collection=history&key=long&limit=lots")
    assert "must be a whole number" in page
    _, _, page = browser.request("GET", "/record?collection=history&key=long&limit=5000")
    assert "between 1 and 1000" in page


def test_keeping_a_version_that_is_not_there_says_so_and_changes_nothing(daemon):
    # (settling a real conflict by a click: test_webui_browser.py, with two daemons)
    browser = Browser(daemon).log_in()
    daemon.call("put", collection="settle", key="colour", value="blue")
    record = daemon.call("get", collection="settle", key="colour")
    _, _, page = browser.request("GET", "/conflicts")
    assert "No conflicts" in page
    status, page = browser.post(
        "/conflicts",
        {
            "csrf": browser.csrf(),
            "share": "default",
            "collection": "settle",
            "key": "colour",
            "version": "not-a-version",
        },
    )
    assert status == 200 and "has no version" in page
    assert daemon.call("get", collection="settle", key="colour")["version"] == record["version"]


def test_the_event_stream_delivers_a_change_as_it_happens(daemon):
    browser = Browser(daemon).log_in()
    connection = browser.connect()
    headers = {"Host": f"127.0.0.1:{browser.port}", "Cookie": browser.cookie}
    connection.request("GET", "/events", headers=headers)
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("content-type", "").startswith("text/event-stream")
    events: list[tuple[str, str]] = []
    ready = threading.Event()

    def read() -> None:
        name = ""
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                events.append((name, line[len("data: ") :]))
                if name == "ready":
                    ready.set()
                if name == "data":
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert ready.wait(TIMEOUT)
    written = daemon.call("put", collection="live", key="k", value=1)
    reader.join(TIMEOUT)
    connection.close()
    assert events[-1][0] == "data", events
    assert json.loads(events[-1][1])["position"] >= written["position"]


def test_ui_link_says_so_when_the_ui_is_off(tmp_path: Path):
    quiet = DaemonProcess(tmp_path, "attic")  # the harness's default: the UI off
    with running(quiet):
        error = quiet.error("ui_link")
    assert error["code"] == "not_found" and "ui.enabled" in error["message"]


def test_the_doctor_page_probes_the_control_socket_and_ports_and_names_the_cli_only_check(daemon):
    browser = Browser(daemon).log_in()
    status, _, page = browser.request("GET", "/doctor")
    assert status == 200
    assert f"control socket {daemon.socket_path} answers" in page
    port = daemon.call("status")["listen"][0]
    assert f"listening on {port}: port" in page and "accepts connections" in page
    assert 'id="doctor-cli"' in page and "<code>p2psync doctor</code> in a terminal" in page
