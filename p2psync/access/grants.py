"""Grants: what a local app may do through the control socket, decided per request (pure).

An *admin* (root, the daemon's own user, a member of the control group) may do everything. Every
other client is an *app*, known by its uid, and may only do what a grant of that uid allows: read,
or read and write, the records of one share or of one collection of a share. This module owns the
Grant model, its validation and its stored form, which control methods read data, write data or
are for admins only, and each decision: allowed, or refused with a message saying what was
refused and why. It never looks up users, reads credentials, or touches a socket or the store:
`credentials.py` says who a client is, `control/access.py` applies the decisions and keeps the
grants.
"""

import json
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Access(Enum):
    """What a control method touches, and so who may call it."""

    ANYONE = "anyone"  # this device's public identity: `id`, and `status` reduced for apps
    READ = "read"  # records of a share, under a grant
    WRITE = "write"  # records of a share, under a grant that is not read-only
    ADMIN = "admin"  # membership, pairing, configuration, grants, shares


METHOD_ACCESS: dict[str, Access] = {
    "hello": Access.ANYONE,
    "id": Access.ANYONE,
    "status": Access.ANYONE,
    "get": Access.READ,
    "scan": Access.READ,
    "collections": Access.READ,
    "conflicts": Access.READ,
    "history": Access.READ,
    "watch": Access.READ,
    "schema_get": Access.READ,
    "put": Access.WRITE,
    "delete": Access.WRITE,
    "transaction": Access.WRITE,
    "resolve": Access.WRITE,
}
# Admins only. So is every method missing from METHOD_ACCESS: a method added later stays closed
# to apps until someone decides what it touches. These are named for the docs and the tests.
ADMIN_METHODS = frozenset(
    {
        "peers",
        "devices",
        "rename",
        "nearby",
        "trust",
        "revoke",
        "forget",
        "reload",
        "pair",
        "join",
        "ui_link",
        "backup",
        "grant",
        "revoke_grant",
        "grants",
        "share_create",
        "share_add",
        "share_remove",
        "share_leave",
        "share_list",
        "share_show",
        "schema_set",
    }
)

MAX_UID = 2**32 - 2  # (uid_t)-1 means "no uid" to the kernel
SYSTEM_PREFIX = "_"  # collections of p2psync itself (`_devices`: membership), for admins only
STORED_VERSION = 1


def method_access(method: str) -> Access:
    return METHOD_ACCESS.get(method, Access.ADMIN)


class GrantError(ValueError):
    """A grant, or a stored list of them, that is not valid; the message says what is wrong."""


@dataclass(frozen=True)
class Grant:
    """`uid` may read (and unless `read_only`, write) `collection` of `share`, or all of it."""

    uid: int
    share: str
    collection: str | None  # None: every collection of the share
    read_only: bool

    @property
    def key(self) -> tuple[int, str, str]:
        """A uid holds at most one grant per share and collection (a new one replaces it)."""
        return (self.uid, self.share, self.collection or "")

    def covers(self, share: str, collection: str | None, write: bool) -> bool:
        """Whether this grant allows the request; `collection` None asks for the whole share."""
        if self.share != share or (write and self.read_only):
            return False
        return self.collection is None or self.collection == collection

    def scope(self) -> str:
        return scope_text(self.share, self.collection)


def scope_text(share: str, collection: str | None) -> str:
    if collection is None:
        return f"share {share!r}"
    return f"collection {collection!r} of share {share!r}"


def app_label(uid: int, user: str | None) -> str:
    """How messages name an app: `app uid 1001 (alice)`."""
    return f"app uid {uid} ({user})" if user else f"app uid {uid}"


def make_grant(uid: Any, share: Any, collection: Any, read_only: Any) -> Grant:
    """A valid Grant, or GrantError naming the first thing wrong."""
    check_uid(uid)
    if not isinstance(share, str) or not share:
        raise GrantError("'share' must be a non-empty string")
    if collection is not None:
        if not isinstance(collection, str) or not collection:
            raise GrantError("'collection' must be a non-empty string (or left out: every one)")
        if collection.startswith(SYSTEM_PREFIX):
            raise GrantError(
                f"collection {collection!r} is p2psync's own (names starting with "
                f"{SYSTEM_PREFIX!r}); only admins use it"
            )
    if not isinstance(read_only, bool):
        raise GrantError("'read_only' must be true or false")
    return Grant(uid, share, collection, read_only)


def check_uid(uid: Any) -> int:
    if isinstance(uid, bool) or not isinstance(uid, int) or not 0 <= uid <= MAX_UID:
        raise GrantError(f"a uid is a whole number from 0 to {MAX_UID}")
    return uid


def parse_app(value: Any) -> int | str:
    """The `app` of grant and revoke_grant: a uid (a number, or digits) or a user name."""
    if isinstance(value, int) and not isinstance(value, bool):
        return check_uid(value)
    if not isinstance(value, str):
        raise GrantError("'app' must be a user name or a uid")
    text = value.strip()
    if text.isascii() and text.isdigit():
        return check_uid(int(text))
    if not text or any(c in ":/" or unicodedata.category(c)[0] in "CZ" for c in text):
        raise GrantError(f"'app' {value!r} is neither a user name nor a uid")
    return text


# the grants of this device ----------------------------------------------------------------------


def _order(grant: Grant) -> tuple[int, str, str]:
    return grant.key


def with_grant(grants: Iterable[Grant], new: Grant) -> tuple[Grant, ...]:
    """The grants with `new` added, replacing the one it names (same uid, share, collection)."""
    return tuple(sorted([*(g for g in grants if g.key != new.key), new], key=_order))


def without_grants(
    grants: Iterable[Grant], uid: int, share: str, collection: str | None
) -> tuple[tuple[Grant, ...], tuple[Grant, ...]]:
    """(kept, removed): `collection` None removes every grant of the uid on the share."""
    kept: list[Grant] = []
    removed: list[Grant] = []
    for grant in grants:
        named = grant.uid == uid and grant.share == share
        (removed if named and collection in (None, grant.collection) else kept).append(grant)
    return tuple(kept), tuple(removed)


def grant_json(grant: Grant, user: str | None) -> dict[str, Any]:
    return {
        "uid": grant.uid,
        "user": user,
        "share": grant.share,
        "collection": grant.collection,
        "read_only": grant.read_only,
    }


def encode_grants(grants: Iterable[Grant]) -> bytes:
    """The stored form: JSON, so that `sqlite3 ... 'select value from meta'` shows it plainly."""
    listed = [
        {"uid": g.uid, "share": g.share, "collection": g.collection, "read_only": g.read_only}
        for g in sorted(grants, key=_order)
    ]
    return json.dumps({"version": STORED_VERSION, "grants": listed}, sort_keys=True).encode()


def decode_grants(raw: bytes) -> tuple[Grant, ...]:
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise GrantError("the stored grants are not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("grants"), list):
        raise GrantError("the stored grants are not a {version, grants} object")
    if document.get("version") != STORED_VERSION:
        raise GrantError(
            f"the stored grants have version {document.get('version')!r}; this p2psync knows "
            f"{STORED_VERSION} (written by a newer one?)"
        )
    grants: tuple[Grant, ...] = ()
    for index, item in enumerate(document["grants"]):
        if not isinstance(item, dict):
            raise GrantError(f"stored grant {index} is not an object")
        try:
            grant = make_grant(
                item.get("uid"), item.get("share"), item.get("collection"), item.get("read_only")
            )
        except GrantError as exc:
            raise GrantError(f"stored grant {index}: {exc}") from None
        grants = with_grant(grants, grant)
    return grants


# who is asking ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """A control client, as the kernel names it."""

    uid: int
    user: str | None  # its user name, when the user database knows the uid
    admin: bool
    # False when this daemon runs in a user namespace that shows the client as the overflow uid
    # (systemd's PrivateUsers=yes): then every unmapped user looks the same, and no grant applies.
    identified: bool = True
    pid: int | None = None

    def __str__(self) -> str:
        if not self.identified:
            return f"an app this daemon cannot tell apart from other users (it sees uid {self.uid})"
        return app_label(self.uid, self.user)


def is_admin(
    uid: int,
    *,
    identified: bool,
    process_gids: Iterable[int],
    user_gids: Iterable[int],
    daemon_uid: int,
    admin_gid: int,
) -> bool:
    """Root, the daemon's own user, and members of the control group are admins. A process that
    holds the group is one whatever the user database says (the kernel vouches for it, and it
    could open a 0660 socket anyway); a user listed in the group is one even if this process
    dropped the group (same uid, same rights)."""
    if admin_gid in process_gids:
        return True
    if not identified:
        return False
    return uid in (0, daemon_uid) or admin_gid in user_gids


# decisions --------------------------------------------------------------------------------------


def method_refusal(peer: Peer, method: str, admins: str) -> str | None:
    """Why `peer` may not call `method` at all; None: it may (data methods within its grants).
    `admins` says who the admins are, e.g. "root, user p2psync and members of group p2psync"."""
    if peer.admin or method_access(method) is not Access.ADMIN:
        return None
    return f"{peer} may not use {method!r}: only admins of this device may ({admins})"


def covered(
    peer: Peer, grants: Iterable[Grant], share: str, collection: str | None, *, write: bool
) -> bool:
    """Whether `peer` may read (or write) `collection` of `share`; None: the whole share."""
    if peer.admin:
        return True
    if not peer.identified or (collection or "").startswith(SYSTEM_PREFIX):
        return False
    return any(g.uid == peer.uid and g.covers(share, collection, write) for g in grants)


def data_refusal(
    peer: Peer, grants: Iterable[Grant], share: str, collection: str | None, *, write: bool
) -> str | None:
    """Why `peer` may not read (or write) `collection` of `share`; None: it may."""
    grants = tuple(grants)
    if covered(peer, grants, share, collection, write=write):
        return None
    if not peer.identified:
        return _unidentified(peer)
    if collection is not None and collection.startswith(SYSTEM_PREFIX):
        return (
            f"{peer} may not use collection {collection!r}: collections starting with "
            f"{SYSTEM_PREFIX!r} hold p2psync's own data (membership), for admins only"
        )
    on_share = [g for g in grants if g.uid == peer.uid and g.share == share]
    if not on_share:
        return f"{peer} has no grant for share {share!r}"
    if not any(g.covers(share, collection, write=False) for g in on_share):
        named = ", ".join(sorted(repr(g.collection) for g in on_share))
        if collection is None:
            return (
                f"{peer} has grants for only some collections of share {share!r} ({named}): "
                "name one of them"
            )
        return (
            f"{peer} has no grant for collection {collection!r} of share {share!r} (only for "
            f"{named})"
        )
    return f"{peer} may only read {scope_text(share, collection)}: its grant is read-only"


def watch_refusal(
    peer: Peer, grants: Iterable[Grant], share: str | None, collection: str | None
) -> str | None:
    """Why `peer` may not watch `collection` of `share` (None: any); None when it may, and then
    it is sent the changes `covered` lets it read. A watch must ask for something the app has a
    grant for; a share it may read only some collections of is filtered, not refused."""
    if peer.admin:
        return None
    if not peer.identified:
        return _unidentified(peer)
    if collection is not None and collection.startswith(SYSTEM_PREFIX):
        return data_refusal(peer, (), share or "", collection, write=False)
    own = [g for g in grants if g.uid == peer.uid and share in (None, g.share)]
    if not own:
        if share is None:
            return f"{peer} has no grant for any share, so there is nothing it may watch"
        return f"{peer} has no grant for share {share!r}"
    if collection is not None and not any(g.collection in (None, collection) for g in own):
        if share is None:
            return f"{peer} has no grant for collection {collection!r} in any share"
        return data_refusal(peer, own, share, collection, write=False)
    return None


def share_read_refusal(peer: Peer, grants: Iterable[Grant], share: str) -> str | None:
    """Why `peer` may read nothing of `share`; None when some grant lets it read some of it
    (what listing the share's collections, filtered, and its sync events need)."""
    return watch_refusal(peer, grants, share, None)


def _unidentified(peer: Peer) -> str:
    return (
        f"{peer}: this daemon runs in a user namespace (systemd's PrivateUsers=yes) that shows "
        "every user it does not map as that uid, so no grant can apply; an admin can set "
        "PrivateUsers=no for the service (`systemctl edit p2psync`)"
    )
