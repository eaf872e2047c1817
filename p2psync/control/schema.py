"""What control protocol 1.0 declares: every method's parameters, the ops of a transaction, the
optional features a daemon announces in `hello` (pure).

One table, `PARAMETERS`, names what each method takes; the connection refuses any other name
before the method runs (`unknown parameter 'limt' for scan; known: ...`), `hello` derives what it
tells from it, and a test holds docs/control-protocol.schema.json to it. What a parameter must
hold is checked by the method (`api.py`): this module only knows names. It never reads a socket
or the store.
"""

from collections.abc import Mapping
from typing import Any

from .errors import BAD_REQUEST, RequestError

PROTOCOL_VERSION = "1.0"

# Allowed in every request: the id echoed in the answer, and the method's name.
ENVELOPE = frozenset({"id", "method"})

_DATA = ("share", "collection", "key")
_META = ("type", "schema_version")
_TYPE_FILTER = ("type", "min_schema_version", "max_schema_version")

PARAMETERS: Mapping[str, frozenset[str]] = {
    method: frozenset(names)
    for method, names in {
        # anyone
        "hello": ("client", "reads"),
        "id": (),
        "status": (),
        # records
        "get": (*_DATA, "all"),
        "scan": ("share", "collection", "prefix", "after", "limit", "deleted", *_TYPE_FILTER),
        "collections": ("share",),
        "conflicts": ("share", "collection"),
        "history": (*_DATA, "limit"),
        "put": (*_DATA, "value", *_META, "if_version"),
        "delete": (*_DATA, *_META, "if_version"),
        "transaction": ("share", "ops"),
        "resolve": (*_DATA, "value", *_META, "pick"),
        "watch": ("since", "collection", "share", "heartbeat", "events", *_TYPE_FILTER),
        # the daemon, membership, pairing
        "peers": (),
        "devices": (),
        "rename": ("name",),
        "nearby": (),
        "trust": ("cert", "name", "address", "readmit"),
        "revoke": ("device",),
        "forget": ("device",),
        "reload": (),
        "pair": ("ttl", "readmit", "shares"),
        "join": ("code", "address"),
        "ui_link": (),
        "backup": ("with_key",),
        # shares
        "share_create": ("share",),
        "share_add": ("share", "device"),
        "share_remove": ("share", "device"),
        "share_leave": ("share",),
        "share_list": (),
        "share_show": ("share",),
        # schema manifests
        "schema_get": ("share",),
        "schema_set": ("share", "type", "current", "oldest_written", "json_schema"),
        # grants of apps
        "grant": ("app", "share", "collection", "read_only"),
        "revoke_grant": ("app", "share", "collection"),
        "grants": (),
    }.items()
}

# The fields of one op of a `transaction`.
OP_PARAMETERS = frozenset({"op", "collection", "key", "value", *_META, "if_version"})

# Optional features, named in `hello` so that a client can tell what this daemon does without
# comparing version numbers. A name is never reused for something else.
CAPABILITIES = (
    "backup",  # the `backup` stream: a consistent copy of the database (and the key)
    "bytes.base64",  # {"$base64": "..."} alone in a value is stored as bytes (and shown so)
    "collections",  # the `collections` method
    "history",  # the `history` method: the versions of a record the log still holds
    "if_version",  # compare-and-set on put, delete and transaction ops
    "pipelining",  # many requests in flight per connection, answered in order
    "resolve.pick_version",  # resolve picks a sibling by its `version`
    "scan.deleted",  # scan can include deleted records that are in conflict
    "schemas",  # schema manifests: schema_get, schema_set, invalid_value, `reads` in hello
    "type_filter",  # scan and watch take type, min_schema_version and max_schema_version
    "version",  # records, siblings, changes and writes carry an opaque `version`
    "watch.caught_up",  # a `caught_up` event once replay reaches the head
    "watch.events",  # watch events besides changes: peer, synced, conflict, membership
    "watch.heartbeat",  # heartbeat events on a quiet watch
    "watch.names",  # conflict and share membership events name the devices they are about
    "watch.outdated",  # `outdated` events for a reader that declared `reads` in hello
    "watch.previous",  # deletes in change events carry the previous winner's value
)


# what a request of each method may name, the envelope included: one set test per request
_ALLOWED = {method: names | ENVELOPE for method, names in PARAMETERS.items()}


def check_parameters(method: str, request: Mapping[str, Any]) -> None:
    """Refuse a request naming a parameter `method` does not take (`method` must be known)."""
    if _ALLOWED[method].issuperset(request):
        return
    known = PARAMETERS[method]
    unknown = [name for name in request if name not in known and name not in ENVELOPE]
    raise RequestError(BAD_REQUEST, _unknown_message(unknown, f"for {method}", known))


def check_op_parameters(op: Mapping[str, Any]) -> None:
    """Refuse an op of a transaction naming a field no op has."""
    if not OP_PARAMETERS.issuperset(op):
        unknown = [name for name in op if name not in OP_PARAMETERS]
        raise RequestError(
            BAD_REQUEST, _unknown_message(unknown, "for an op of a transaction", OP_PARAMETERS)
        )


def _unknown_message(unknown: list[str], where: str, known: frozenset[str]) -> str:
    named = ", ".join(repr(name) for name in unknown)
    listed = ", ".join(sorted(known)) or "none (only 'id' and 'method')"
    plural = "s" if len(unknown) > 1 else ""
    return f"unknown parameter{plural} {named} {where}; known: {listed}"
