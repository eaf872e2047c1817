"""The web UI's pages and what each button does: a Starlette app over the daemon's facade.

It owns the routes, which page shows what (server-rendered with Jinja2, which escapes everything
by default: device names and values come from peers), the live updates (`/events`, server-sent
events from the daemon's event bus and data changes; the pages' script fetches the region an
event concerns, so nothing polls) and applying `auth.py`'s checks to every request: a page needs
a session, a POST also its CSRF token and this UI's Origin, and every request a loopback Host.
It never opens the control socket (`facade.py` calls the methods in-process), never fetches
anything from the network, and serves every asset itself.
"""

import json
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jinja2
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from ..control.methods_data import HISTORY_MAX_LIMIT
from . import auth, views
from .facade import ActionFailed, Facade

log = logging.getLogger("p2psync.ui")
HERE = Path(__file__).parent
EVENT_BUFFER = 256
HEARTBEAT_SECONDS = 15.0
# At most this often a page hears that data changed: a catch-up of a million records must not
# make a million page fetches.
DATA_TICK_SECONDS = 0.5
MAX_FORM_BYTES = 64 * 1024
HISTORY_PAGE = 20  # versions a record's page shows first; "older versions" doubles it
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    # the login link's token must not travel to another site; not "no-referrer", which would
    # make the browser send `Origin: null` with our own forms' POSTs
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}

Handler = Callable[[Request, auth.Session, dict[str, str] | None], Awaitable[Response]]


def build_app(facade: Facade, gate: auth.Gate, port: int) -> ASGIApp:
    return WebApp(facade, gate, port).asgi


class WebApp:
    def __init__(self, facade: Facade, gate: auth.Gate, port: int) -> None:
        self.facade = facade
        self.gate = gate
        self.port = port
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        guarded = self.guarded
        routes = [
            Route("/login", self.login),
            Route("/", guarded(self.overview)),
            Route("/add", guarded(self.add_device), methods=["GET", "POST"]),
            Route("/join", guarded(self.join), methods=["GET", "POST"]),
            Route("/shares", guarded(self.shares)),
            Route("/conflicts", guarded(self.conflicts), methods=["GET", "POST"]),
            Route("/data", guarded(self.data)),
            Route("/record", guarded(self.record)),
            Route("/doctor", guarded(self.doctor)),
            Route("/logout", guarded(self.logout), methods=["POST"]),
            Route("/fragment/{name}", guarded(self.fragment)),
            Route("/events", LiveEvents(self)),
            Mount("/static", StaticFiles(directory=HERE / "static")),
        ]
        self.asgi = HostCheck(Starlette(routes=routes), port, self.notice)

    # access -----------------------------------------------------------------------------------

    def notice(self, status: int, reason: str) -> Response:
        body = self.templates.get_template("notice.html").render(status=status, reason=reason)
        return HTMLResponse(body, status, headers=SECURITY_HEADERS)

    def session_of(self, request: Request) -> auth.Session | None:
        cookie = request.cookies.get(auth.cookie_name(self.port))
        return self.gate.session(cookie, trio.current_time())

    def guarded(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = self.session_of(request)
            if session is None:
                return self.notice(401, "Not logged in: run `p2psync ui` and open its link.")
            form = None
            if request.method == "POST":
                host = request.headers.get("host")
                if not auth.origin_allowed(request.headers.get("origin"), host, self.port):
                    return self.notice(403, "This request did not come from this page.")
                form = await _form(request)
                if form is None:
                    return self.notice(413, "This form is too large.")
                if not auth.csrf_matches(session, form.get("csrf")):
                    return self.notice(403, "This form has expired: reload the page.")
            return await handler(request, session, form)

        return endpoint

    async def login(self, request: Request) -> Response:
        token = request.query_params.get("token", "")
        session = self.gate.redeem(token, trio.current_time())
        if session is None:
            return self.notice(
                401, "This link was used already or has expired: run `p2psync ui` for a new one."
            )
        response = RedirectResponse("/", 303, headers=SECURITY_HEADERS)
        cookie = auth.session_cookie(self.port, session, trio.current_time())
        response.headers.append("set-cookie", cookie)
        return response

    async def logout(self, request: Request, session: auth.Session, form: Any) -> Response:
        self.gate.end(session)
        response = self.notice(200, "Logged out. Run `p2psync ui` to log in again.")
        response.headers.append("set-cookie", auth.cleared_cookie(self.port))
        return response

    # pages ------------------------------------------------------------------------------------

    def render(self, name: str, session: auth.Session, **values: Any) -> Response:
        page = self.templates.get_template(name).render(csrf=session.csrf, page=name, **values)
        return HTMLResponse(page, headers=SECURITY_HEADERS)

    async def overview(self, request: Request, session: auth.Session, form: Any) -> Response:
        return self.render("overview.html", session, **await self._devices())

    async def _devices(self) -> dict[str, Any]:
        status = await self.facade.call("status")
        rows = views.device_rows(
            await self.facade.call("devices"), await self.facade.call("peers")
        )
        return {"status": status, "devices": rows}

    async def add_device(self, request: Request, session: auth.Session, form: Any) -> Response:
        error = None
        if form is not None:
            try:
                if form.get("action") == "stop":
                    self.facade.stop_pairing()
                else:
                    await self.facade.start_pairing()
            except ActionFailed as exc:
                error = str(exc)
            if error is None:
                return RedirectResponse("/add", 303, headers=SECURITY_HEADERS)
        return self.render("add.html", session, error=error, **self._pairing())

    def _pairing(self) -> dict[str, Any]:
        pairing = self.facade.pairing
        if pairing is None:
            return {"pairing": None}
        return {
            "pairing": views.pairing_view(pairing, trio.current_time()),
            "qr": views.qr_svg(pairing.code),
        }

    async def join(self, request: Request, session: auth.Session, form: Any) -> Response:
        joined = error = None
        code = address = ""
        if form is not None:
            code, address = str(form.get("code", "")).strip(), str(form.get("address", "")).strip()
            try:
                joined = await self.facade.call("join", code=code, address=address or None)
            except ActionFailed as exc:
                error = str(exc)
        return self.render(
            "join.html", session, joined=joined, error=error, code=code, address=address
        )

    async def shares(self, request: Request, session: auth.Session, form: Any) -> Response:
        found = []
        for name in await self.facade.shares():
            if name == "default":
                continue
            found.append(await self.facade.call("share_show", share=name))
        return self.render("shares.html", session, shares=found)

    async def conflicts(self, request: Request, session: auth.Session, form: Any) -> Response:
        error = None
        if form is not None:
            try:
                await self.facade.call(
                    "resolve",
                    share=str(form.get("share", "")),
                    collection=str(form.get("collection", "")),
                    key=str(form.get("key", "")),
                    pick={"version": str(form.get("version", ""))},
                )
                return RedirectResponse("/conflicts", 303, headers=SECURITY_HEADERS)
            except ActionFailed as exc:
                error = str(exc)
        return self.render("conflicts.html", session, error=error, **await self._conflicts())

    async def _conflicts(self) -> dict[str, Any]:
        names = await self._names()
        records = []
        for share in await self.facade.shares():
            found = await self.facade.call("conflicts", share=share)
            records += [views.conflict_view(share, item, names) for item in found["items"]]
        return {"records": records}

    async def _names(self) -> dict[str, str]:
        return {d["device"]: d["name"] for d in await self.facade.call("devices")}

    async def data(self, request: Request, session: auth.Session, form: Any) -> Response:
        return self.render("data.html", session, **await self._data(request))

    async def _data(self, request: Request) -> dict[str, Any]:
        share = request.query_params.get("share", "default")
        collection = request.query_params.get("collection")
        after = request.query_params.get("after") or None
        shares, error, listed, records = await self.facade.shares(), None, [], None
        try:
            listed = (await self.facade.call("collections", share=share))["collections"]
            if collection:
                records = await self.facade.call(
                    "scan", share=share, collection=collection, after=after, limit=100
                )
        except ActionFailed as exc:
            error = str(exc)
        return {
            "shares": shares,
            "share": share,
            "collections": listed,
            "collection": collection,
            "records": views.record_rows(records["items"]) if records else [],
            "next": records["next"] if records else None,
            "error": error,
        }

    async def record(self, request: Request, session: auth.Session, form: Any) -> Response:
        """One record's history. Not a live region: `history` reads the share's log back from
        its end, for people looking at one record, not on every change."""
        share = request.query_params.get("share") or "default"
        collection = request.query_params.get("collection", "")
        key = request.query_params.get("key", "")
        error, found = None, None
        try:
            limit = int(request.query_params.get("limit") or HISTORY_PAGE)
            found = await self.facade.call(
                "history", share=share, collection=collection, key=key, limit=limit
            )
        except ValueError:
            error = "The number of versions to show must be a whole number."
        except ActionFailed as exc:
            error = str(exc)
        versions = views.history_rows(found["versions"], await self._names()) if found else []
        older = bool(found and found["more"])
        more = views.more_history_limit(len(versions), HISTORY_MAX_LIMIT) if older else None
        return self.render(
            "record.html",
            session,
            share=share,
            collection=collection,
            key=key,
            versions=versions,
            more=more,
            cut=older and more is None,
            error=error,
        )

    async def doctor(self, request: Request, session: auth.Session, form: Any) -> Response:
        return self.render("doctor.html", session, checks=await self.facade.doctor())

    async def fragment(self, request: Request, session: auth.Session, form: Any) -> Response:
        """The live part of a page, fetched again when an event concerns it."""
        name = request.path_params["name"]
        if name == "devices":
            values = await self._devices()
        elif name == "pairing":
            values = self._pairing()
        elif name == "conflicts":
            values = await self._conflicts()
        elif name == "records":
            values = await self._data(request)
        else:
            return self.notice(404, "No such part of a page.")
        body = self.templates.get_template(f"_{name}.html").render(csrf=session.csrf, **values)
        return HTMLResponse(body, headers=SECURITY_HEADERS)


async def _form(request: Request) -> dict[str, str] | None:
    """A form as browsers post it (urlencoded, the pages' forms set no other encoding); None
    when larger than any form of the UI can be."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


class HostCheck:
    """Every request, assets included, must name this UI on loopback in its Host header."""

    def __init__(self, app: ASGIApp, port: int, notice: Callable[[int, str], Response]) -> None:
        self.app, self.port, self.notice = app, port, notice

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = Request(scope).headers.get("host")
            if not auth.host_allowed(host, self.port):
                reason = f"Open this page as http://127.0.0.1:{self.port}/ (not through a name)."
                await self.notice(403, reason)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class LiveEvents:
    """`/events`: the daemon's news as server-sent events, for the pages' live regions."""

    def __init__(self, web: WebApp) -> None:
        self.web = web

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.web.session_of(Request(scope)) is None:
            await self.web.notice(401, "Not logged in.")(scope, receive, send)
            return
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        facade = self.web.facade
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_until_disconnected, receive, nursery.cancel_scope)
            with (
                facade.events.subscribe(EVENT_BUFFER) as daemon_news,
                facade.bus.subscribe(EVENT_BUFFER) as ui_news,
            ):
                await self._stream(send, daemon_news, ui_news)
            nursery.cancel_scope.cancel()

    async def _stream(self, send: Send, *subscriptions: Any) -> None:
        changes = self.web.facade.context.node.changes
        position = changes.position
        await _send_event(send, "ready", {})
        while not any(s.overflowed for s in subscriptions):
            with trio.move_on_after(HEARTBEAT_SECONDS):
                async with trio.open_nursery() as waiting:
                    for wait in [s.wait for s in subscriptions]:
                        waiting.start_soon(_then_cancel, wait, waiting.cancel_scope)
                    waiting.start_soon(
                        _then_cancel, partial(changes.wait_beyond, position), waiting.cancel_scope
                    )
            for subscription in subscriptions:
                for event in subscription.take():
                    await _send_event(send, str(event.get("event", "news")), event)
            if changes.position != position:
                position = changes.position
                await _send_event(send, "data", {"position": position})
                await trio.sleep(DATA_TICK_SECONDS)
            await send({"type": "http.response.body", "body": b": alive\n\n", "more_body": True})


async def _send_event(send: Send, name: str, data: dict[str, Any]) -> None:
    body = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
    await send({"type": "http.response.body", "body": body, "more_body": True})


async def _then_cancel(wait: Callable[[], Awaitable[Any]], scope: trio.CancelScope) -> None:
    await wait()
    scope.cancel()


async def _until_disconnected(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
