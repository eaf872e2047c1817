"""The requests, as values: what each method sends and how its answer is read (no I/O here).

A `Call` is one request ready to go: its JSON text (encoded when the call is made, so a value
that cannot be sent raises right there, before anything is sent) and the function that turns the
daemon's `result` into the typed result. The blocking and the async client both send Calls (see
exchange.py); a `Pipeline` queues them with a `Pending` answer each. The functions here are the
one place that knows each method's parameters: optional parameters go out only when given.
"""

import enum
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import ClientError, ControlError
from .results import (
    CollectionInfo,
    ConflictsPage,
    Delete,
    Hello,
    History,
    Put,
    Record,
    ScanPage,
    Sibling,
    TypeSchema,
    Write,
    WriteResult,
    collections_from_json,
    manifest_from_json,
)
from .values import request_line

T = TypeVar("T")


class Missing(enum.Enum):
    """The type of `MISSING`: a parameter not given where `None` is a value (`resolve`'s)."""

    MISSING = enum.auto()


MISSING = Missing.MISSING


def _as_is(result: Any) -> Any:
    return result


@dataclass(slots=True)  # not frozen: frozen dataclasses are slower to make, and a put makes one
class Call(Generic[T]):
    """One request: `body` is its JSON object without the `id` (the connection numbers it),
    `parse` reads its result. `needs` names what of protocol 1.0 it relies on that an older
    daemon would silently ignore (such a call is refused instead: see exchange.py)."""

    method: str
    body: bytes
    parse: Callable[[Any], T]
    needs: str | None = None

    def line(self, request_id: int) -> bytes:
        """The request line, numbered `request_id` (the body is encoded once, ids spliced in)."""
        return b'{"id":%d,%s' % (request_id, self.body[1:])


def make_call(
    method: str, params: dict[str, Any], parse: Callable[[Any], T], needs: str | None = None
) -> Call[T]:
    """A Call of `method` with `params` as they are (None included: it means "not given")."""
    return Call(method, request_line({"method": method, **params}), parse, needs)


def _given(**params: Any) -> dict[str, Any]:
    return {name: value for name, value in params.items() if value is not None}


# the data methods -------------------------------------------------------------------------------


def hello(client: str | None = None, reads: Mapping[str, int] | None = None) -> Call[Hello]:
    """`reads`: type -> the newest schema_version this app understands (for `outdated`)."""
    declared = None
    if reads:
        declared = {name: {"max_schema_version": version} for name, version in reads.items()}
    return make_call("hello", _given(client=client, reads=declared), Hello.from_json)


def get(collection: str, key: str, *, all_versions: bool, share: str | None) -> Call[Record]:
    params = _given(collection=collection, key=key, all=all_versions or None, share=share)
    return make_call("get", params, Record.from_json)


def put(
    collection: str,
    key: str,
    value: Any,
    *,
    type: str | None,
    schema_version: int | None,
    if_version: str | None,
    share: str | None,
) -> Call[WriteResult]:
    # built by hand rather than from a Put: pipelined puts spend much of their client time here
    request = {"method": "put", "collection": collection, "key": key, "value": value}
    if type is not None:
        request["type"] = type
    if schema_version is not None:
        request["schema_version"] = schema_version
    if if_version is not None:
        request["if_version"] = if_version
    if share is not None:
        request["share"] = share
    needs = None if if_version is None else "if_version"
    return Call("put", request_line(request), WriteResult.from_json, needs)


def delete(
    collection: str, key: str, *, if_version: str | None, share: str | None
) -> Call[WriteResult]:
    params = {**Delete(collection, key, if_version).params(), **_given(share=share)}
    return _write("delete", params, if_version)


def transaction(writes: Iterable[Write], *, share: str | None) -> Call[WriteResult]:
    ops: list[dict[str, Any]] = []
    conditional = None
    for write in writes:
        if not isinstance(write, Put | Delete):
            raise TypeError(f"a transaction takes Put and Delete ops, not {write!r}")
        ops.append({"op": "put" if isinstance(write, Put) else "delete", **write.params()})
        conditional = conditional if write.if_version is None else write.if_version
    return _write("transaction", {"ops": ops, **_given(share=share)}, conditional)


def _write(method: str, params: dict[str, Any], if_version: str | None) -> Call[WriteResult]:
    # an older daemon ignores if_version and would overwrite what the caller meant to protect
    needs = "if_version" if if_version is not None else None
    return make_call(method, params, WriteResult.from_json, needs)


def scan(
    collection: str,
    *,
    prefix: str | None,
    after: str | None,
    limit: int | None,
    deleted: bool,
    share: str | None,
    types: "TypeFilter | None" = None,
) -> Call[ScanPage]:
    params = _given(
        collection=collection,
        prefix=prefix,
        after=after,
        limit=limit,
        deleted=deleted or None,
        share=share,
        **(types.params() if types is not None else {}),
    )
    # an older daemon would leave the deleted-but-in-conflict records out without a word
    return make_call("scan", params, ScanPage.from_json, "deleted" if deleted else None)


@dataclass(frozen=True, slots=True)
class TypeFilter:
    """Only records (or changes) of `type` and of a schema version in `min`..`max` (inclusive,
    each optional)."""

    type: str | None = None
    min_schema_version: int | None = None
    max_schema_version: int | None = None

    def params(self) -> dict[str, Any]:
        return _given(
            type=self.type,
            min_schema_version=self.min_schema_version,
            max_schema_version=self.max_schema_version,
        )


def type_filter(
    type: str | None, min_schema_version: int | None, max_schema_version: int | None
) -> TypeFilter | None:
    wanted = TypeFilter(type, min_schema_version, max_schema_version)
    return wanted if wanted.params() else None


def schema_get(*, share: str | None) -> Call[dict[str, TypeSchema]]:
    return make_call("schema_get", _given(share=share), manifest_from_json)


def schema_set(
    type: str,
    current: int,
    *,
    oldest_written: int | None,
    json_schema: Mapping[str, Any] | None,
    share: str | None,
) -> Call[TypeSchema]:
    params = _given(
        type=type,
        current=current,
        oldest_written=oldest_written,
        json_schema=None if json_schema is None else dict(json_schema),
        share=share,
    )
    return make_call("schema_set", params, TypeSchema.from_json)


def conflicts(collection: str | None, *, share: str | None) -> Call[ConflictsPage]:
    return make_call(
        "conflicts", _given(collection=collection, share=share), ConflictsPage.from_json
    )


def history(collection: str, key: str, *, limit: int | None, share: str | None) -> Call[History]:
    params = _given(collection=collection, key=key, limit=limit, share=share)
    return make_call("history", params, History.from_json)


def resolve(
    collection: str,
    key: str,
    *,
    value: Any = MISSING,
    pick: str | Sibling | None = None,
    type: str | None = None,
    schema_version: int | None = None,
    share: str | None = None,
) -> Call[WriteResult]:
    if (value is MISSING) == (pick is None):
        raise ValueError("resolve takes either a new value or pick= one of the versions")
    params: dict[str, Any] = {"collection": collection, "key": key}
    if pick is None:
        params.update(value=value, **_given(type=type, schema_version=schema_version))
    else:
        params["pick"] = _pick(pick)
    return make_call("resolve", {**params, **_given(share=share)}, WriteResult.from_json)


def _pick(pick: str | Sibling) -> dict[str, Any]:
    if isinstance(pick, str):
        return {"version": pick}
    if pick.version is not None:
        return {"version": pick.version}
    if pick.origin is None or pick.hlc is None:
        raise ValueError("the picked sibling has neither a version nor an origin and hlc")
    return {"origin": pick.origin, "hlc": pick.hlc}  # how a daemon before 1.0 names a version


def collections(*, share: str | None) -> Call[list[CollectionInfo]]:
    return make_call("collections", _given(share=share), collections_from_json)


def raw(method: str, params: dict[str, Any]) -> Call[Any]:
    """Any method, its result as the daemon sent it (tags such as `$base64` left as they are)."""
    return make_call(method, params, _as_is)


def watch(
    since: int | None,
    collection: str | None,
    *,
    share: str | None,
    events: Iterable[str] | None,
    heartbeat: float | None,
    types: TypeFilter | None = None,
) -> Call[Any]:
    kinds = None if events is None else list(events)
    params = _given(
        since=since,
        collection=collection,
        share=share,
        events=kinds,
        heartbeat=heartbeat,
        **(types.params() if types is not None else {}),
    )
    # an older daemon would send none of the asked-for events or heartbeats, silently
    needs = "watch events" if kinds is not None or heartbeat is not None else None
    return make_call("watch", params, _as_is, needs)


@dataclass(frozen=True, slots=True)
class WatchOptions:
    """What a watch follows besides its position, kept to open it again after a reconnection."""

    collection: str | None = None
    share: str | None = None
    events: tuple[str, ...] | None = None
    heartbeat: float | None = None
    types: TypeFilter | None = None
    reads: tuple[tuple[str, int], ...] = ()  # (type, newest schema_version understood)

    def call(self, since: int | None) -> Call[Any]:
        """The `watch` request starting after `since`."""
        return watch(
            since,
            self.collection,
            share=self.share,
            events=self.events,
            heartbeat=self.heartbeat,
            types=self.types,
        )

    def before(self) -> tuple[Call[Any], ...]:
        """What the watch's connection says first: `hello` with what it reads, if anything."""
        return (hello(reads=dict(self.reads)),) if self.reads else ()


# answers that come later ------------------------------------------------------------------------


class Pending(Generic[T]):
    """The answer to a pipelined request; `result()` once the pipeline has been flushed."""

    __slots__ = ("_error", "_result", "done")

    def __init__(self) -> None:
        self.done = False
        self._result: T | None = None
        self._error: ControlError | None = None

    def set_result(self, result: T) -> None:
        self._result, self.done = result, True

    def set_error(self, error: ControlError) -> None:
        self._error, self.done = error, True

    @property
    def error(self) -> ControlError | None:
        """The error the daemon answered (None: it succeeded, or has not answered yet)."""
        return self._error

    def result(self) -> T:
        """The typed result; raises the request's ControlError if it failed, ClientError if
        it has not been answered (the pipeline was not flushed, or its connection broke)."""
        if self._error is not None:
            raise self._error
        if not self.done:
            raise ClientError("this request has not been answered: flush its pipeline first")
        return self._result  # type: ignore[return-value]  # done: it was set


class Pipeline:
    """Requests queued to go out together (`Client.pipeline()`, `AsyncClient.pipeline()`).

    Each method queues its request and returns its `Pending` answer at once; the client sends
    the queue when the pipeline is flushed (and when its `with` block ends), up to its window
    ahead of the answers, and reads the answers in order. Writes are committed in the order
    queued; a read sees every write queued before it. A request that fails does not stop the
    others (each has its own answer)."""

    def __init__(self) -> None:
        self.queued: list[tuple[Call[Any], Pending[Any]]] = []

    def __len__(self) -> int:
        return len(self.queued)

    def add(self, call: Call[T]) -> Pending[T]:
        pending: Pending[T] = Pending()
        self.queued.append((call, pending))
        return pending

    def take(self) -> list[tuple[Call[Any], Pending[Any]]]:
        """Everything queued so far, leaving the queue empty."""
        taken, self.queued = self.queued, []
        return taken

    def call(self, method: str, **params: Any) -> Pending[Any]:
        """Any method, its result untyped (as `Client.call`)."""
        return self.add(raw(method, params))

    def put(
        self,
        collection: str,
        key: str,
        value: Any,
        *,
        type: str | None = None,
        schema_version: int | None = None,
        if_version: str | None = None,
        share: str | None = None,
    ) -> Pending[WriteResult]:
        """Queue a `put` (as `Client.put`)."""
        return self.add(
            put(
                collection,
                key,
                value,
                type=type,
                schema_version=schema_version,
                if_version=if_version,
                share=share,
            )
        )

    def delete(
        self, collection: str, key: str, *, if_version: str | None = None, share: str | None = None
    ) -> Pending[WriteResult]:
        """Queue a `delete` (as `Client.delete`)."""
        return self.add(delete(collection, key, if_version=if_version, share=share))

    def transaction(
        self, writes: Iterable[Write], *, share: str | None = None
    ) -> Pending[WriteResult]:
        """Queue a `transaction` (as `Client.transaction`)."""
        return self.add(transaction(writes, share=share))

    def get(
        self, collection: str, key: str, *, all_versions: bool = False, share: str | None = None
    ) -> Pending[Record]:
        """Queue a `get` (as `Client.get`): it sees every write queued before it."""
        return self.add(get(collection, key, all_versions=all_versions, share=share))

    def scan(
        self,
        collection: str,
        *,
        prefix: str | None = None,
        after: str | None = None,
        limit: int | None = None,
        deleted: bool = False,
        share: str | None = None,
    ) -> Pending[ScanPage]:
        """Queue a `scan` of one page (as `Client.scan`)."""
        return self.add(
            scan(collection, prefix=prefix, after=after, limit=limit, deleted=deleted, share=share)
        )


def first_error(answered: Iterable[Pending[Any]]) -> ControlError | None:
    """The first error among answers, in the order the requests were queued."""
    return next((p.error for p in answered if p.error is not None), None)


def put_calls(
    writes: Iterable[Put | tuple[str, str, Any]],
    share: str | None,
    answers: list[Pending[WriteResult]],
) -> Iterator[tuple[Call[Any], Pending[Any]]]:
    """The calls of `put_many`, made as they are sent; their Pendings go into `answers`."""
    for write in writes:
        pending: Pending[WriteResult] = Pending()
        answers.append(pending)
        if isinstance(write, Put):
            call = put(
                write.collection,
                write.key,
                write.value,
                type=write.type,
                schema_version=write.schema_version,
                if_version=write.if_version,
                share=share,
            )
        else:
            collection, key, value = write
            call = put(
                collection, key, value, type=None, schema_version=None, if_version=None, share=share
            )
        yield call, pending
