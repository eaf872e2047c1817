"""Who may use the web UI, decided per request (pure).

Owns the one-time login links (`p2psync ui`: a token that works once, for a short time), the
sessions they turn into (a random id in an HttpOnly, SameSite=Strict cookie, with a CSRF token of
its own), and the checks every request passes: the Host header names this UI on loopback (so a
DNS-rebound name cannot reach it), and a state-changing request carries its session's CSRF token
and an Origin of this UI. It never reads the clock (times are passed in), a socket or a request
object: `app.py` hands it header values and applies its answers. docs/threat-model.md says why.
"""

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

LINK_SECONDS = 120.0  # a login link printed by `p2psync ui` works once, within this
SESSION_SECONDS = 12 * 3600.0
MAX_SESSIONS = 64  # the oldest go first: a local user cannot grow our memory with logins
MAX_LINKS = 16
LOOPBACK_HOSTS = ("127.0.0.1", "[::1]", "localhost")


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Session:
    id: str
    csrf: str
    expires_at: float


def cookie_name(port: int) -> str:
    """Cookies are not kept apart by port: two daemons' UIs on one machine need two names."""
    return f"p2psync_session_{port}"


def session_cookie(port: int, session: Session, now: float) -> str:
    """The Set-Cookie value for a new session: never readable by scripts, never sent along
    with a request another site starts."""
    max_age = max(0, int(session.expires_at - now))
    return f"{cookie_name(port)}={session.id}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict"


def cleared_cookie(port: int) -> str:
    """The Set-Cookie value that makes a browser forget its session (at logout)."""
    return f"{cookie_name(port)}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict"


class Gate:
    """The login links not used yet and the live sessions of one UI."""

    def __init__(self, token: Callable[[], str] = new_token) -> None:
        self._token = token
        self._links: dict[str, float] = {}  # token -> when it stops working
        self._sessions: dict[str, Session] = {}

    def issue_link(self, now: float) -> str:
        """A token for one login within LINK_SECONDS."""
        self._links = {t: end for t, end in self._links.items() if end > now}
        while len(self._links) >= MAX_LINKS:
            del self._links[next(iter(self._links))]
        token = self._token()
        self._links[token] = now + LINK_SECONDS
        return token

    def redeem(self, token: str, now: float) -> Session | None:
        """The new session a link's token opens, or None: unknown, used already, or expired.
        A token is spent by its first use, whatever that use's outcome."""
        found = next((t for t in self._links if hmac.compare_digest(t, token)), None)
        if found is None:
            return None
        expires = self._links.pop(found)
        if expires <= now:
            return None
        self._sessions = {i: s for i, s in self._sessions.items() if s.expires_at > now}
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        session = Session(self._token(), self._token(), now + SESSION_SECONDS)
        self._sessions[session.id] = session
        return session

    def session(self, cookie: str | None, now: float) -> Session | None:
        """The live session a cookie names, if any."""
        if not cookie:
            return None
        found = next((s for i, s in self._sessions.items() if hmac.compare_digest(i, cookie)), None)
        if found is None or found.expires_at <= now:
            return None
        return found

    def end(self, session: Session) -> None:
        self._sessions.pop(session.id, None)


def host_allowed(host: str | None, port: int) -> bool:
    """Whether a Host header names this UI on loopback. Any other name, even one that resolves
    to 127.0.0.1, may be an attacker's page rebinding its DNS to reach us."""
    return host is not None and host.lower() in {f"{name}:{port}" for name in LOOPBACK_HOSTS}


def origin_allowed(origin: str | None, host: str | None, port: int) -> bool:
    """Whether a state-changing request comes from a page of this UI: its Origin is
    http://HOST:PORT, HOST being the one it was sent to. A request without Origin is refused:
    every browser the UI supports sends one with a POST."""
    if origin is None or not host_allowed(host, port):
        return False
    return origin.lower() == f"http://{host}".lower()


def csrf_matches(session: Session, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(session.csrf, given)
