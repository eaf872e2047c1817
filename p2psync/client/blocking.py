"""The blocking client: `Client`, on a plain Unix socket (the CLI is built on it).

One `Client` holds one connection, opened at its first call and reused; calls from several
threads take turns on it. Typed methods (`get`, `put`, `scan`...) return the dataclasses of
results.py; `call` and `stream` give any method's answer as the daemon sent it. `pipeline()` and
`put_many` send many requests before reading their answers (see exchange.py for the window);
`watch` follows changes on a connection of its own, as typed events (events.py). The connections,
`Stream` and `Watch` are connection.py's.

Every call raises a `ControlError` subclass (errors.py): the daemon's refusals by their code
(`NotFound`, `Conflict`...), `Timeout` when no answer came within `timeout` seconds, and
`ConnectionFailed` (`NotRunning`, `PermissionDenied`) when the daemon cannot be used. After a
`Timeout`, `ProtocolViolation` or `ConnectionFailed` the connection is closed; the next call opens
a new one.
"""

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

from . import calls
from .calls import MISSING, Call, Pending, Pipeline, WatchOptions, first_error
from .connection import LineConnection, Stream, Watch
from .exchange import DEFAULT_WINDOW, Exchange, Plan
from .paths import default_socket_path
from .results import (
    CollectionInfo,
    ConflictsPage,
    Hello,
    History,
    Put,
    Record,
    ScanPage,
    Sibling,
    TypeSchema,
    Write,
    WriteResult,
)

T = TypeVar("T")

DEFAULT_TIMEOUT_SECONDS: Final = 30.0


class Client:
    """`Client()` talks to the daemon at `default_socket_path()`, `Client(path)` at `path`.

    `timeout` bounds each wait for the daemon (seconds; None waits for ever); `window` is how many
    requests a pipeline sends ahead of their answers (at most the daemon's 128)."""

    def __init__(
        self,
        socket_path: str | Path | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
        *,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        self.socket_path = Path(socket_path) if socket_path is not None else default_socket_path()
        self.timeout = timeout
        self.window = window
        self._connection: LineConnection | None = None
        # one thread at a time: answers are matched by their order. Reentrant, so that a call
        # made inside a pipeline's block (same thread) goes out after the pipeline's requests
        self._turn = threading.RLock()

    # the exchange -------------------------------------------------------------------------------

    def _drive(self, plan_of: Callable[[Exchange], Plan]) -> None:
        with self._turn:
            if self._connection is not None and self._connection.idle_and_closed():
                self.close()  # the daemon restarted since the last call: start afresh
            if self._connection is None:
                self._connection = LineConnection(self.socket_path, self.timeout, self.window)
            connection = self._connection
            try:
                connection.run(plan_of(connection.exchange))
            except BaseException:
                # answers may still be on their way: the next call must not read them as its own
                self.close()
                raise

    def _exchange(self, items: Iterable[tuple[Call[Any], Pending[Any]]]) -> None:
        self._drive(lambda exchange: exchange.run(items))

    def _run(self, call: Call[T]) -> T:
        pending: Pending[T] = Pending()
        self._exchange([(call, pending)])
        return pending.result()

    def call(self, method: str, **params: Any) -> Any:
        """Any method with any parameters; its `result` as the daemon sent it (untyped, tags
        such as `$base64` as they are). Raises ControlError (its subclass by code)."""
        return self._run(calls.raw(method, params))

    # typed methods ------------------------------------------------------------------------------

    def hello(self, client: str | None = None) -> Hello:
        """The daemon's protocol version, own version, capabilities, methods and limits;
        `client` ("name/version") names this app in the daemon's debug log. Raises
        UnknownMethod from a daemon older than protocol 1.0."""
        return self._run(calls.hello(client))

    def get(
        self, collection: str, key: str, *, all_versions: bool = False, share: str | None = None
    ) -> Record:
        """The record at `collection`/`key` (of `share`, default "default"). `siblings` lists
        every version when it is in conflict, or always with `all_versions` (which also shows a
        deleted record). Raises NotFound (no such record, or it was deleted; or no such share),
        Forbidden (outside this app's grants), BadRequest."""
        return self._run(calls.get(collection, key, all_versions=all_versions, share=share))

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
    ) -> WriteResult:
        """Write `value` (JSON, or bytes) at `collection`/`key`; durable when this returns.
        `if_version` makes it a compare-and-set: only if the current version is that one (`""`:
        only if there is no live record). Raises Conflict (`if_version` did not match),
        BadRequest (a value that cannot be stored, a reserved collection), Forbidden, NotFound
        (no such share), DiskFull, TypeError/ValueError for a value JSON cannot carry (nothing is
        sent), UnknownMethod for `if_version` on a daemon before protocol 1.0."""
        return self._run(
            calls.put(
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
    ) -> WriteResult:
        """Delete `collection`/`key` (deleting what does not exist is no error). Raises as
        `put` does."""
        return self._run(calls.delete(collection, key, if_version=if_version, share=share))

    def transaction(self, writes: Iterable[Write], *, share: str | None = None) -> WriteResult:
        """Apply `Put` and `Delete` ops atomically, as one change everywhere. Raises as `put`
        does; if any op is invalid nothing is written (the message names it: `ops[1]: ...`)."""
        return self._run(calls.transaction(writes, share=share))

    def scan(
        self,
        collection: str,
        *,
        prefix: str | None = None,
        after: str | None = None,
        limit: int | None = None,
        deleted: bool = False,
        share: str | None = None,
        type: str | None = None,
        min_schema_version: int | None = None,
        max_schema_version: int | None = None,
    ) -> ScanPage:
        """One page of live records whose key starts with `prefix`, in key order, after key
        `after`; `limit` 1..1000 (default 100). With `deleted` (1.0) records whose winner is a
        delete but which have live versions in conflict are listed too. Raises BadRequest,
        NotFound (share), Forbidden, UnknownMethod (`deleted` before protocol 1.0)."""
        types = calls.type_filter(type, min_schema_version, max_schema_version)
        return self._run(
            calls.scan(
                collection,
                prefix=prefix,
                after=after,
                limit=limit,
                deleted=deleted,
                share=share,
                types=types,
            )
        )

    def scan_all(
        self,
        collection: str,
        *,
        prefix: str | None = None,
        deleted: bool = False,
        page_size: int | None = None,
        share: str | None = None,
        type: str | None = None,
        min_schema_version: int | None = None,
        max_schema_version: int | None = None,
    ) -> Iterator[Record]:
        """Every record of `scan`, page after page. Raises as `scan` does, while iterating."""
        after: str | None = None
        while True:
            page = self.scan(
                collection,
                prefix=prefix,
                after=after,
                limit=page_size,
                deleted=deleted,
                share=share,
                type=type,
                min_schema_version=min_schema_version,
                max_schema_version=max_schema_version,
            )
            yield from page.items
            if page.next is None:
                return
            after = page.next

    def conflicts(
        self, collection: str | None = None, *, share: str | None = None
    ) -> ConflictsPage:
        """Records in conflict (of one collection, or all), each with its siblings; at most
        1000 (`more` says there are others). Raises NotFound (share), Forbidden."""
        return self._run(calls.conflicts(collection, share=share))

    def history(
        self, collection: str, key: str, *, limit: int | None = None, share: str | None = None
    ) -> History:
        """The writes of a record that the log still holds, newest first (at most `limit`,
        default 100). Raises NotFound (no such record or share), Forbidden, UnknownMethod."""
        return self._run(calls.history(collection, key, limit=limit, share=share))

    def resolve(
        self,
        collection: str,
        key: str,
        *,
        value: Any = MISSING,
        pick: str | Sibling | None = None,
        type: str | None = None,
        schema_version: int | None = None,
        share: str | None = None,
    ) -> WriteResult:
        """End a conflict: write a new `value` (a merge), or `pick` one of the versions (its
        `version` string, or the Sibling itself). Raises Conflict (the picked version is no
        longer among the record's: look again), NotFound, Forbidden, BadRequest, ValueError
        (neither or both of value and pick)."""
        return self._run(
            calls.resolve(
                collection,
                key,
                value=value,
                pick=pick,
                type=type,
                schema_version=schema_version,
                share=share,
            )
        )

    def collections(self, *, share: str | None = None) -> list[CollectionInfo]:
        """The collections of a share with their record counts (protocol 1.0). Raises
        UnknownMethod (older daemon), NotFound (share), Forbidden."""
        return self._run(calls.collections(share=share))

    def schema_get(self, *, share: str | None = None) -> dict[str, TypeSchema]:
        """The share's schema manifest: each record type by name. Raises NotFound (share),
        Forbidden."""
        return self._run(calls.schema_get(share=share))

    def schema_set(
        self,
        type: str,
        current: int,
        *,
        oldest_written: int | None = None,
        json_schema: Mapping[str, Any] | None = None,
        share: str | None = None,
    ) -> TypeSchema:
        """Set a type's current version (versions only go up), the oldest version still
        written (unchanged unless given) and the JSON Schema of `current`; admins only. Raises
        BadRequest (an invalid JSON Schema, a version going down), Forbidden, NotFound."""
        return self._run(
            calls.schema_set(
                type, current, oldest_written=oldest_written, json_schema=json_schema, share=share
            )
        )

    # many requests at once ----------------------------------------------------------------------

    @contextmanager
    def pipeline(self, *, raise_errors: bool = True) -> Iterator["BlockingPipeline"]:
        """`with client.pipeline() as batch: batch.put(...)`: each queued request returns a
        Pending at once and goes out as soon as the window has room, before earlier answers are
        read; the end of the block (or `batch.flush()`) reads every answer, in order, and then
        `.result()` gives each. With `raise_errors` that raises the first request's error once
        every answer is in (the connection stays usable). Other threads wait for the block to
        end; a call of this thread inside it goes out after the requests queued before it. If the
        block raises, the connection is closed: requests already sent may have been applied."""
        with self._turn:
            batch = BlockingPipeline(self, raise_errors)
            try:
                yield batch
            except BaseException:
                self.close()
                raise
            batch.flush()

    def put_many(
        self, writes: Iterable[Put | tuple[str, str, Any]], *, share: str | None = None
    ) -> list[WriteResult]:
        """Pipelined puts, each its own write, in order: `Put`s or (collection, key, value)
        tuples; `writes` may be a generator (it is sent as it is read). Raises the first error
        once every answer is in (the others were written)."""

        answers: list[Pending[WriteResult]] = []
        self._exchange(calls.put_calls(writes, share, answers))
        error = first_error(answers)
        if error is not None:
            raise error
        return [answer.result() for answer in answers]

    # streams ------------------------------------------------------------------------------------

    def watch(
        self,
        since: int | None = None,
        collection: str | None = None,
        *,
        share: str | None = None,
        events: Iterable[str] | None = None,
        heartbeat: float | None = None,
        idle_timeout: float | None = None,
        reconnect: bool = False,
        reconnect_timeout: float = 60.0,
        type: str | None = None,
        min_schema_version: int | None = None,
        max_schema_version: int | None = None,
        reads: Mapping[str, int] | None = None,
    ) -> "Watch":
        """Changes after position `since` (None: from now; 0: everything), of one `collection`
        and `share` when given, as typed events on a connection of their own. Protocol 1.0:
        `events` picks the kinds ("change" by default; "peer", "synced", "conflict",
        "membership"), `heartbeat` asks for a Heartbeat every so many idle seconds.
        With `idle_timeout`, waiting longer than that for an event raises Timeout. With
        `reconnect`, a lost connection (the daemon restarting) is opened again from the last
        position received, nothing missed or repeated, for up to `reconnect_timeout` seconds.
        `type` and `min_schema_version`/`max_schema_version` (inclusive) keep only the changes
        of that type and version range. `reads` (type -> the newest schema_version this app
        understands) is declared in the watch connection's `hello`: the watch then also sends
        an OutdatedEvent when the share holds a newer version of one of those types.
        Raises BadRequest (a `since` beyond the daemon's position), Forbidden, NotFound (share),
        ConnectionFailed; UnknownMethod for `events`/`heartbeat` before protocol 1.0."""
        options = WatchOptions(
            collection,
            share,
            None if events is None else tuple(events),
            heartbeat,
            calls.type_filter(type, min_schema_version, max_schema_version),
            tuple(sorted((reads or {}).items())),
        )
        reconnection = reconnect_timeout if reconnect else None
        return Watch(self.socket_path, self.timeout, since, options, idle_timeout, reconnection)

    def stream(self, method: str, *, idle_timeout: float | None = None, **params: Any) -> "Stream":
        """Start a streaming request (like `pair`): `.result` is its first answer, iterating
        gives the event lines that follow, untyped. With `idle_timeout`, waiting longer than that
        for an event raises Timeout."""
        return Stream(self.socket_path, self.timeout, calls.raw(method, params), idle_timeout)

    def close(self) -> None:
        """Close the connection (the next call opens a new one)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class BlockingPipeline(Pipeline):
    """A Pipeline of a blocking Client (see calls.Pipeline for the queueing methods) that sends
    its requests as the window allows, while more are being queued."""

    def __init__(self, client: Client, raise_errors: bool) -> None:
        super().__init__()
        self._client = client
        self._raise_errors = raise_errors
        self._unchecked: list[Pending[Any]] = []  # answers flush() has not looked at yet

    def add(self, call: Call[T]) -> Pending[T]:
        pending = super().add(call)
        self._unchecked.append(pending)
        taken = self.take()
        self._client._drive(lambda exchange: exchange.submit(taken))
        return pending

    def flush(self) -> None:
        """Send what is queued and read every answer. Raises the first request's error (with
        `raise_errors`), or Timeout/ConnectionFailed/ProtocolViolation for the connection."""
        self._client._drive(lambda exchange: exchange.finish())
        checked, self._unchecked = self._unchecked, []
        error = first_error(checked)
        if error is not None and self._raise_errors:
            raise error
