"""The web UI's access rules, pure: one-time links, sessions, cookies, Host, Origin, CSRF."""

import itertools

import pytest

from p2psync.webui import auth


def counting_gate() -> auth.Gate:
    numbers = itertools.count()
    return auth.Gate(token=lambda: f"token{next(numbers)}")


def test_a_link_opens_one_session_once():
    gate = counting_gate()
    token = gate.issue_link(now=100.0)
    session = gate.redeem(token, now=101.0)
    assert session is not None
    assert session.id != token and session.csrf not in (token, session.id)
    assert gate.redeem(token, now=102.0) is None  # replayed
    assert gate.session(session.id, now=103.0) == session


def test_a_link_expires_and_an_unknown_one_opens_nothing():
    gate = counting_gate()
    token = gate.issue_link(now=0.0)
    assert gate.redeem("guessed", now=1.0) is None
    assert gate.redeem(token, now=auth.LINK_SECONDS) is None
    assert gate.redeem(token, now=1.0) is None  # spent by the late try


def test_a_session_lasts_its_time_and_ends_at_logout():
    gate = counting_gate()
    session = gate.redeem(gate.issue_link(0.0), 0.0)
    assert session is not None
    assert gate.session(session.id, auth.SESSION_SECONDS - 1) == session
    assert gate.session(session.id, auth.SESSION_SECONDS) is None
    other = gate.redeem(gate.issue_link(0.0), 0.0)
    assert other is not None
    gate.end(other)
    assert gate.session(other.id, 1.0) is None
    assert gate.session(None, 1.0) is None and gate.session("", 1.0) is None


def test_links_and_sessions_are_bounded():
    gate = counting_gate()
    first = gate.issue_link(0.0)
    for _ in range(auth.MAX_LINKS):
        gate.issue_link(0.0)
    assert gate.redeem(first, 1.0) is None  # the oldest made room
    opened = [gate.redeem(gate.issue_link(0.0), 0.0) for _ in range(auth.MAX_SESSIONS + 1)]
    assert opened[0] is not None and gate.session(opened[0].id, 1.0) is None
    assert opened[-1] is not None and gate.session(opened[-1].id, 1.0) == opened[-1]


def test_the_cookie_is_http_only_strict_and_named_by_port():
    session = auth.Session("abc", "csrf", expires_at=3600.0)
    cookie = auth.session_cookie(47180, session, now=0.0)
    assert cookie.startswith("p2psync_session_47180=abc;")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age=3600" in cookie
    assert auth.cookie_name(47180) != auth.cookie_name(47181)
    assert auth.cleared_cookie(47180).startswith("p2psync_session_47180=; Max-Age=0;")


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:8000", True),
        ("[::1]:8000", True),
        ("localhost:8000", True),
        ("LOCALHOST:8000", True),
        ("127.0.0.1:8001", False),
        ("127.0.0.1", False),
        ("evil.example:8000", False),  # DNS rebinding: a name that now resolves to 127.0.0.1
        ("192.168.1.20:8000", False),
        (None, False),
    ],
)
def test_the_host_must_name_this_ui_on_loopback(host, allowed):
    assert auth.host_allowed(host, 8000) is allowed


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("http://[::1]:8000", "[::1]:8000", True),
        ("http://localhost:8000", "127.0.0.1:8000", False),  # another origin than the page's
        ("http://evil.example", "127.0.0.1:8000", False),
        ("null", "127.0.0.1:8000", False),
        (None, "127.0.0.1:8000", False),
        ("http://evil.example:8000", "evil.example:8000", False),
    ],
)
def test_a_post_must_come_from_a_page_of_this_ui(origin, host, allowed):
    assert auth.origin_allowed(origin, host, 8000) is allowed


def test_the_csrf_token_must_be_the_sessions():
    session = auth.Session("id", "right", 10.0)
    assert auth.csrf_matches(session, "right")
    assert not auth.csrf_matches(session, "wrong")
    assert not auth.csrf_matches(session, None)
