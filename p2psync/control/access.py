"""Who may do what on the control socket: each connection's client, and this device's grants.

It owns identifying the client of each connection (the kernel's credentials, once per
connection), the grants (kept in the replica's SQLite meta table, so they survive restarts, and
never synced: a uid means nothing on another device), the admin methods `grant`, `revoke_grant`
and `grants`, and holding an app's connection to its grants: a request outside them is answered
`forbidden` and never reaches its method, and the app's `watch` sends only the changes they
cover. Grants are read at every request and every change a watch sends, so a revocation applies
at once, to open connections too. Admin connections are served as they are. The rules are
`access/grants.py`'s, what a request means is `server.py`'s; when in doubt this module refuses.
"""

import logging
import os
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import trio

from .. import __version__
from ..access import credentials
from ..access.grants import (
    Access,
    Grant,
    GrantError,
    Peer,
    app_label,
    covered,
    data_refusal,
    decode_grants,
    encode_grants,
    grant_json,
    make_grant,
    method_access,
    method_refusal,
    parse_app,
    scope_text,
    share_read_refusal,
    watch_refusal,
    with_grant,
    without_grants,
)
from ..node import Node
from ..shares.rules import unknown_share
from .connection import (
    Dispatcher,
    Follow,
    Reads,
    StartStream,
    serve_connection,
)
from .errors import BAD_REQUEST, FORBIDDEN, NOT_FOUND, RequestError
from .lines import error_line, json_line
from .methods_admin import AdminMethods
from .methods_data import Covers, DataMethods
from .schema import PARAMETERS
from .socket_file import why_others_cannot_connect
from .watch import ADMIN_EVENTS
from .writes import Write, param, share_param

log = logging.getLogger("p2psync.control")  # the name control lines have always been logged under

GRANTS_META_KEY = "control_grants"
UNKNOWN_CLIENT = Peer(uid=-1, user=None, admin=False, identified=False)


class Device(Protocol):
    """What an app's `status` tells about this device."""

    @property
    def device_id(self) -> str: ...
    @property
    def device_name(self) -> str: ...


class Served(Dispatcher, Protocol):
    """The request dispatcher (`server.Server`), whose `watch` and `collections` can be limited
    to what a predicate of (share, collection) lets through, and whose `hello` names the
    methods a client may use."""

    async def answer(
        self,
        request_id: Any,
        method: str,
        request: dict[str, Any],
        call: Callable[[dict[str, Any]], Awaitable[Any]] | None = None,
    ) -> bytes: ...

    @property
    def admin(self) -> AdminMethods: ...
    @property
    def data(self) -> DataMethods: ...

    async def start_watch(
        self, request: dict[str, Any], reads: Reads, covers: Covers | None = None
    ) -> tuple[dict[str, Any], Follow]: ...


class GrantBook:
    """The grants of this device: in memory for the checks, in the meta table for restarts."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.grants: tuple[Grant, ...] = ()
        self._changing = trio.Lock()  # each change starts from the one before it

    async def load(self) -> None:
        raw = await self.node.call(self.node.replica.store.get_meta, GRANTS_META_KEY)
        if raw is None:
            return
        try:
            self.grants = decode_grants(raw)
        except GrantError as exc:
            log.error(
                "ignoring the stored grants (apps may do nothing till granted again): %s", exc
            )

    async def add(self, grant: Grant) -> None:
        async with self._changing:
            await self._save(with_grant(self.grants, grant))

    async def remove(self, uid: int, share: str, collection: str | None) -> tuple[Grant, ...]:
        async with self._changing:
            kept, removed = without_grants(self.grants, uid, share, collection)
            if removed:
                await self._save(kept)
            return removed

    async def _save(self, grants: tuple[Grant, ...]) -> None:
        await self.node.call(
            self.node.replica.store.save_meta, GRANTS_META_KEY, encode_grants(grants)
        )
        self.grants = grants  # only once stored: an acknowledged grant survives a restart


class ControlAccess:
    """Identifies each connection's client and serves it as an admin or as an app."""

    def __init__(
        self, node: Node, device: Device, socket_path: Path, admin_group: str | None
    ) -> None:
        self.book = GrantBook(node)
        self.device = device
        self.socket_path = socket_path
        self.admin_group = admin_group
        self.calls = {
            "grant": self._grant,
            "revoke_grant": self._revoke_grant,
            "grants": self._grants,
        }

    @property
    def grants(self) -> tuple[Grant, ...]:
        return self.book.grants

    async def load(self) -> None:
        await self.book.load()

    def warn_if_apps_cannot_connect(self, mode: int) -> None:
        """At start, when the socket is open to apps (mode o+rw) but they still cannot use it."""
        if mode & 0o006 != 0o006:
            return
        reason = why_others_cannot_connect(self.socket_path)
        if reason:
            log.warning("control.apps is on, but %s", reason)
        if credentials.uids_hidden():
            log.warning(
                "control.apps is on, but this daemon runs in a user namespace that hides other "
                "users (systemd's PrivateUsers=yes), so no app can be told apart and no grant "
                "applies; set PrivateUsers=no (`systemctl edit p2psync`)"
            )

    async def serve(self, server: Served, stream: trio.SocketStream, unread: bytes = b"") -> None:
        """Serve one connection as what its client is; never raises. `unread`: what a front-end
        process read of it before handing it over."""
        peer, admins = await self._identify(stream)
        if peer.admin:
            await serve_connection(server, stream, unread)
        else:
            await serve_connection(_AppConnection(server, peer, admins, self), stream, unread)

    async def _identify(self, stream: trio.SocketStream) -> tuple[Peer, str]:
        try:
            found = credentials.peer_credentials(stream.socket)
            privileged = credentials.admin_by_rule(found)
            if privileged is not None:  # root's CLI calls: without the thread's two hops (~1 ms)
                peer, admins = privileged, ""
            else:
                peer, admins = await trio.to_thread.run_sync(
                    self._lookup, found, abandon_on_cancel=True
                )
        except Exception as exc:  # whoever we cannot identify gets nothing but `id`
            log.warning("cannot identify a control client, serving it as an app: %s", exc)
            return UNKNOWN_CLIENT, "root and members of the control group"
        log.debug(
            "control client pid %s uid %s (%s): %s",
            peer.pid,
            peer.uid,
            peer.user or "?",
            "admin" if peer.admin else "app",
        )
        return peer, admins

    def _lookup(self, found: credentials.Credentials) -> tuple[Peer, str]:
        """In a thread: the user and group databases may be slow (NSS over the network). Who
        the admins are is looked up for apps only, to say so when they are refused."""
        peer = credentials.identify(found, self.admin_group)
        return peer, "" if peer.admin else credentials.admins_text(self.admin_group)

    def app_status(self, peer: Peer) -> dict[str, Any]:
        """`status` for an app: this device's public identity, and what the app may do."""
        own = [grant_json(g, peer.user) for g in self.grants if g.uid == peer.uid]
        return {
            "device": self.device.device_id,
            "name": self.device.device_name,
            "version": __version__,
            "access": {
                "admin": False,
                "uid": peer.uid,
                "user": peer.user,
                "identified": peer.identified,
                "grants": own if peer.identified else [],
            },
        }

    # admin methods ----------------------------------------------------------------------------

    async def _grant(self, request: dict[str, Any]) -> dict[str, Any]:
        share: str = param(request, "share", str)
        collection: str | None = param(request, "collection", str, None)
        read_only: bool = param(request, "read_only", bool, False)
        uid, user = await self._app(request)
        if uid in (0, os.geteuid()):
            raise RequestError(
                BAD_REQUEST,
                f"{app_label(uid, user)} is root or the daemon's own user, always an admin here: "
                "it may do everything already",
            )
        if not credentials.uid_visible(uid):
            raise RequestError(
                BAD_REQUEST,
                f"this daemon cannot see {app_label(uid, user)}: it runs in a user namespace "
                "that maps only some users (systemd's PrivateUsers=yes); set PrivateUsers=no "
                "(`systemctl edit p2psync`) and grant again",
            )
        try:
            grant = make_grant(uid, share, collection, read_only)
        except GrantError as exc:
            raise RequestError(BAD_REQUEST, str(exc)) from None
        if not await self.book.node.call(self.book.node.replica.holds, share):
            raise RequestError(NOT_FOUND, str(unknown_share(share)))
        await self.book.add(grant)
        log.info(
            "granted %s %s access to %s",
            app_label(uid, user),
            "read-only" if read_only else "read-write",
            grant.scope(),
        )
        return {**grant_json(grant, user), "note": await self._note(uid, user)}

    async def _note(self, uid: int, user: str | None) -> str | None:
        """What keeps a new grant from working yet, if anything."""
        if await trio.to_thread.run_sync(credentials.user_is_admin, uid, self.admin_group):
            return (
                f"{app_label(uid, user)} is an admin of this device (a member of its control "
                "group), so it may do everything; the grant applies once it is not"
            )
        return why_others_cannot_connect(self.socket_path)

    async def _revoke_grant(self, request: dict[str, Any]) -> dict[str, Any]:
        share: str = param(request, "share", str)
        collection: str | None = param(request, "collection", str, None)
        uid, user = await self._app(request)
        removed = await self.book.remove(uid, share, collection)
        if not removed:
            message = f"{app_label(uid, user)} has no grant for {scope_text(share, collection)}"
            if any(g.uid == uid and g.share == share for g in self.grants):
                message += (
                    "; its grant covers the whole share: revoke that (without a collection) "
                    "and grant the collections to keep"
                )
            raise RequestError(NOT_FOUND, message)
        for grant in removed:
            log.info("revoked the grant of %s to %s", app_label(uid, user), grant.scope())
        return {"removed": [grant_json(g, user) for g in removed]}

    async def _grants(self, request: dict[str, Any]) -> dict[str, Any]:
        grants = self.grants
        uids = {g.uid for g in grants}
        names = await trio.to_thread.run_sync(
            lambda: {uid: credentials.user_name(uid) for uid in uids}, abandon_on_cancel=True
        )
        return {
            "grants": [grant_json(g, names[g.uid]) for g in grants],
            "note": why_others_cannot_connect(self.socket_path) if grants else None,
        }

    async def _app(self, request: dict[str, Any]) -> tuple[int, str | None]:
        if request.get("app") is None:
            raise RequestError(BAD_REQUEST, "missing parameter 'app' (a user name or a uid)")
        try:
            app = parse_app(request["app"])
            return await trio.to_thread.run_sync(credentials.find_user, app, abandon_on_cancel=True)
        except GrantError as exc:
            raise RequestError(BAD_REQUEST, str(exc)) from None
        except LookupError as exc:
            raise RequestError(NOT_FOUND, str(exc)) from None


class _AppConnection:
    """The dispatcher of an app's connection: the server's methods, each held to the app's
    grants before it runs."""

    def __init__(self, server: Served, peer: Peer, admins: str, access: ControlAccess) -> None:
        self.server = server
        self.peer = peer
        self.admins = admins
        self.access = access
        self.methods = server.methods
        # what an app is told and shown differs from an admin's for these
        self.calls: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            **server.calls,
            "hello": lambda request: server.admin.hello(request, self._app_methods()),
            "collections": partial(server.data.collections, covers=self._may_read),
        }
        self.writes: dict[str, Callable[[dict[str, Any]], Write]] = {
            method: partial(self._write, method) for method in server.writes
        }
        self.streams: dict[str, StartStream] = {
            method: partial(self._stream, method) for method in server.streams
        }

    @property
    def node(self) -> Node:
        return self.server.node

    async def answer(self, request_id: Any, method: str, request: dict[str, Any]) -> bytes:
        try:
            self._check_call(method, request)
        except RequestError as exc:
            return error_line(request_id, exc.code, exc.message)
        if method == "status":
            status = self.access.app_status(self.peer)
            return json_line({"id": request_id, "ok": True, "result": status})
        return await self.server.answer(request_id, method, request, self.calls[method])

    def _app_methods(self) -> list[str]:
        return [m for m in PARAMETERS if method_access(m) is not Access.ADMIN]

    def _check_call(self, method: str, request: dict[str, Any]) -> None:
        self._check_method(method)
        kind = method_access(method)
        if kind not in (Access.READ, Access.WRITE):
            return
        # `collections` lists only what the grants cover; the manifest is the whole share's
        if method in ("collections", "schema_get"):
            refusal = share_read_refusal(self.peer, self.access.grants, share_param(request))
            if refusal is not None:
                raise RequestError(FORBIDDEN, refusal)
            return
        collection = request.get("collection")
        if collection is not None and not isinstance(collection, str):
            return  # the method answers bad_request before it reads anything
        self._check_data(share_param(request), collection, write=kind is Access.WRITE)

    def _check_method(self, method: str) -> None:
        refusal = method_refusal(self.peer, method, self.admins)
        if refusal is not None:
            raise RequestError(FORBIDDEN, refusal)

    def _check_data(self, share: str, collection: str | None, *, write: bool) -> None:
        refusal = data_refusal(self.peer, self.access.grants, share, collection, write=write)
        if refusal is not None:
            raise RequestError(FORBIDDEN, refusal)

    def _write(self, method: str, request: dict[str, Any]) -> Write:
        """Every op of a write must be covered by a grant that is not read-only."""
        self._check_method(method)
        write = self.server.writes[method](request)
        share = share_param(request)
        for index, op in enumerate(write.ops):
            try:
                self._check_data(share, op.collection, write=True)
            except RequestError as exc:
                if method == "transaction":
                    raise RequestError(exc.code, f"ops[{index}]: {exc.message}") from None
                raise
        return write

    async def _stream(
        self, method: str, request: dict[str, Any], reads: Reads
    ) -> tuple[dict[str, Any], Follow]:
        self._check_method(method)
        if method != "watch":  # a stream for apps that nobody taught this module to filter
            raise RequestError(FORBIDDEN, f"{self.peer} may not use {method!r}")
        share = share_param(request) if request.get("share") is not None else None
        collection = request.get("collection")
        if collection is None or isinstance(collection, str):
            refusal = watch_refusal(self.peer, self.access.grants, share, collection)
            if refusal is not None:
                raise RequestError(FORBIDDEN, refusal)
        kinds = request.get("events")
        if isinstance(kinds, list):
            for kind in ADMIN_EVENTS.intersection(k for k in kinds if isinstance(k, str)):
                raise RequestError(
                    FORBIDDEN,
                    f"{self.peer} may not watch {kind!r} events: they tell about devices and "
                    f"members, for admins of this device only ({self.admins})",
                )
        return await self.server.start_watch(request, reads, covers=self._may_read)

    def _may_read(self, share: str, collection: str | None) -> bool:
        """Whether the app may read `collection` of `share` (None: anything of the share)."""
        if collection is None:
            return share_read_refusal(self.peer, self.access.grants, share) is None
        return covered(self.peer, self.access.grants, share, collection, write=False)
