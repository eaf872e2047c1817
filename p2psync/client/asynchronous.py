"""The async client: `AsyncClient`, on anyio, so it runs under asyncio and trio alike.

It has the blocking Client's methods as coroutines, with the same arguments, results and errors
(see blocking.py and errors.py), and shares its rules: the requests and answers of exchange.py,
one connection reused by every call, tasks taking turns on it (answers are matched by their
order). `async with client.pipeline() as batch` and `await client.put_many(...)` send many
requests before reading the answers; `client.watch(...)` is an async iterator of typed events on
a connection of its own:

    async with AsyncClient() as client, client.watch(since=0) as events:
        async for event in events:
            ...

A call cancelled half-way (a timeout of the caller's, a task group ending) closes the connection,
since its answer may still come; the next call opens a new one.
"""

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc

from . import calls
from .blocking import DEFAULT_TIMEOUT_SECONDS
from .calls import MISSING, Call, Pending, Pipeline, WatchOptions, first_error
from .connection import RECONNECT_FIRST_WAIT, RECONNECT_LONGEST_WAIT, peer_closed
from .errors import (
    ConnectionFailed,
    connect_failure,
    connection_lost,
    timed_out,
)
from .events import WatchEvent, event_from_json, resume_position
from .exchange import (
    ARRIVED,
    DEFAULT_WINDOW,
    RECEIVE,
    Exchange,
    LineBuffer,
    Plan,
    answer_of,
)
from .paths import default_socket_path, permission_advice
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

RECEIVE_BYTES = 256 * 1024  # read at once: a pipeline's answers come in bursts


class AsyncLineConnection:
    """One connection to the socket: request lines out, answer lines in (as JSON objects), and
    the Exchange of the requests on it."""

    def __init__(self, stream: anyio.abc.SocketStream, timeout: float | None, window: int) -> None:
        self.stream = stream
        self.timeout = timeout
        self.exchange = Exchange(window)
        self.lines = LineBuffer()

    @classmethod
    async def open(cls, path: Path, timeout: float | None, window: int) -> "AsyncLineConnection":
        try:
            with anyio.fail_after(timeout):
                stream = await anyio.connect_unix(path)
        except TimeoutError:
            raise connect_failure(path, TimeoutError()) from None
        except OSError as exc:
            advice = permission_advice(path) if isinstance(exc, PermissionError) else ""
            raise connect_failure(path, exc, advice) from None
        return cls(stream, timeout, window)

    async def send(self, data: bytes) -> None:
        try:
            with anyio.fail_after(self.timeout):
                await self.stream.send(data)
        except TimeoutError:
            raise timed_out(self.timeout) from None
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise connection_lost(str(exc) or "it closed the connection") from None

    async def receive(self) -> dict[str, Any]:
        # an answer already buffered is taken without waiting (and without a cancel scope, which
        # costs more than the rest of a pipelined answer's handling)
        line = self.lines.next_line()
        while line is None:
            await self._read()
            line = self.lines.next_line()
        return answer_of(line)

    async def arrived(self) -> int:
        """How many whole answers have arrived, once at least one has."""
        while not self.lines.has_line():
            await self._read()
        return self.lines.count_lines()

    async def _read(self) -> None:
        try:
            with anyio.fail_after(self.timeout):
                chunk = await self.stream.receive(RECEIVE_BYTES)
        except TimeoutError:
            raise timed_out(self.timeout) from None
        except anyio.EndOfStream:
            raise connection_lost("it closed the connection: did it stop?") from None
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise connection_lost(str(exc) or "the connection broke") from None
        self.lines.feed(chunk)

    async def run(self, plan: Plan) -> None:
        """Carry out an exchange plan: send what it yields, feed it the answers it asks for."""
        try:
            step = next(plan)
            while True:
                if step is RECEIVE:
                    step = plan.send(await self.receive())
                elif step is ARRIVED:
                    step = plan.send(await self.arrived())
                else:
                    await self.send(step)
                    step = next(plan)
        except StopIteration:
            return

    def idle_and_closed(self) -> bool:
        """As connection.LineConnection.idle_and_closed."""
        idle = not self.exchange.waiting and not self.lines.has_line()
        return idle and peer_closed(self.stream.extra(anyio.abc.SocketAttribute.raw_socket))

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):  # closing must happen even in a cancelled task
            await self.stream.aclose()


class AsyncClient:
    """`AsyncClient()` talks to the daemon at `default_socket_path()`, `AsyncClient(path)` at
    `path`; `timeout` and `window` as for the blocking Client. Use it as `async with`, or call
    `aclose()`: it holds a connection. It belongs to the event loop it is first used in."""

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
        self._connection: AsyncLineConnection | None = None
        self._turn = anyio.Lock()  # one exchange at a time: answers are matched by order

    async def _exchange(self, items: Iterable[tuple[Call[Any], Pending[Any]]]) -> None:
        async with self._turn:
            if self._connection is not None and self._connection.idle_and_closed():
                await self.aclose()  # the daemon restarted since the last call: start afresh
            if self._connection is None:
                self._connection = await AsyncLineConnection.open(
                    self.socket_path, self.timeout, self.window
                )
            connection = self._connection
            try:
                await connection.run(connection.exchange.run(items))
            except BaseException:
                # answers may still be on their way: the next call must not read them as its own
                await self.aclose()
                raise

    async def _run(self, call: Call[T]) -> T:
        pending: Pending[T] = Pending()
        await self._exchange([(call, pending)])
        return pending.result()

    async def call(self, method: str, **params: Any) -> Any:
        """Any method, its result untyped (as `Client.call`)."""
        return await self._run(calls.raw(method, params))

    async def hello(self, client: str | None = None) -> Hello:
        """As `Client.hello`: raises UnknownMethod before protocol 1.0."""
        return await self._run(calls.hello(client))

    async def get(
        self, collection: str, key: str, *, all_versions: bool = False, share: str | None = None
    ) -> Record:
        """As `Client.get`: raises NotFound, Forbidden, BadRequest."""
        return await self._run(calls.get(collection, key, all_versions=all_versions, share=share))

    async def put(
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
        """As `Client.put`: raises Conflict (`if_version`), BadRequest, Forbidden, NotFound,
        DiskFull, TypeError/ValueError (a value JSON cannot carry), UnknownMethod."""
        return await self._run(
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

    async def delete(
        self, collection: str, key: str, *, if_version: str | None = None, share: str | None = None
    ) -> WriteResult:
        """As `Client.delete`: raises as `put` does."""
        return await self._run(calls.delete(collection, key, if_version=if_version, share=share))

    async def transaction(
        self, writes: Iterable[Write], *, share: str | None = None
    ) -> WriteResult:
        """As `Client.transaction`: all or nothing; raises as `put` does."""
        return await self._run(calls.transaction(writes, share=share))

    async def scan(
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
        """As `Client.scan`: raises BadRequest, NotFound, Forbidden, UnknownMethod."""
        types = calls.type_filter(type, min_schema_version, max_schema_version)
        return await self._run(
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

    async def scan_all(
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
    ) -> AsyncIterator[Record]:
        """Every record of `scan`, page after page (as `Client.scan_all`)."""
        after: str | None = None
        while True:
            page = await self.scan(
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
            for record in page.items:
                yield record
            if page.next is None:
                return
            after = page.next

    async def conflicts(
        self, collection: str | None = None, *, share: str | None = None
    ) -> ConflictsPage:
        """As `Client.conflicts`: raises NotFound, Forbidden."""
        return await self._run(calls.conflicts(collection, share=share))

    async def history(
        self, collection: str, key: str, *, limit: int | None = None, share: str | None = None
    ) -> History:
        """As `Client.history`: raises NotFound, Forbidden, UnknownMethod."""
        return await self._run(calls.history(collection, key, limit=limit, share=share))

    async def resolve(
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
        """As `Client.resolve`: raises Conflict, NotFound, Forbidden, BadRequest, ValueError."""
        return await self._run(
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

    async def collections(self, *, share: str | None = None) -> list[CollectionInfo]:
        """As `Client.collections`: raises UnknownMethod (older daemon), NotFound, Forbidden."""
        return await self._run(calls.collections(share=share))

    async def schema_get(self, *, share: str | None = None) -> dict[str, TypeSchema]:
        """As `Client.schema_get`."""
        return await self._run(calls.schema_get(share=share))

    async def schema_set(
        self,
        type: str,
        current: int,
        *,
        oldest_written: int | None = None,
        json_schema: Mapping[str, Any] | None = None,
        share: str | None = None,
    ) -> TypeSchema:
        """As `Client.schema_set`."""
        return await self._run(
            calls.schema_set(
                type, current, oldest_written=oldest_written, json_schema=json_schema, share=share
            )
        )

    @asynccontextmanager
    async def pipeline(self, *, raise_errors: bool = True) -> AsyncIterator["AsyncPipeline"]:
        """As `Client.pipeline`: `async with client.pipeline() as batch: batch.put(...)` (the
        queueing methods are plain calls); sent when the block ends or at `await batch.flush()`."""
        batch = AsyncPipeline(self, raise_errors)
        yield batch
        await batch.flush()

    async def put_many(
        self, writes: Iterable[Put | tuple[str, str, Any]], *, share: str | None = None
    ) -> list[WriteResult]:
        """As `Client.put_many`: raises the first error once every answer is in."""
        answers: list[Pending[WriteResult]] = []
        await self._exchange(calls.put_calls(writes, share, answers))
        error = first_error(answers)
        if error is not None:
            raise error
        return [answer.result() for answer in answers]

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
    ) -> "AsyncWatch":
        """As `Client.watch`, as an async iterator; it connects at `async with` (or at the first
        event) and raises there what `Client.watch` raises."""
        options = WatchOptions(
            collection,
            share,
            None if events is None else tuple(events),
            heartbeat,
            calls.type_filter(type, min_schema_version, max_schema_version),
            tuple(sorted((reads or {}).items())),
        )
        reconnection = reconnect_timeout if reconnect else None
        return AsyncWatch(
            self.socket_path, self.timeout, since, options, idle_timeout, reconnection
        )

    def stream(
        self, method: str, *, idle_timeout: float | None = None, **params: Any
    ) -> "AsyncStream":
        """As `Client.stream`: `async with client.stream("pair") as s`, then `s.result` and
        `async for line in s`."""
        return AsyncStream(self.socket_path, self.timeout, calls.raw(method, params), idle_timeout)

    async def aclose(self) -> None:
        """Close the connection (the next call opens a new one)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class AsyncPipeline(Pipeline):
    """A Pipeline of an AsyncClient (see calls.Pipeline for the queueing methods)."""

    def __init__(self, client: AsyncClient, raise_errors: bool) -> None:
        super().__init__()
        self._client = client
        self._raise_errors = raise_errors

    async def flush(self) -> None:
        """As `BlockingPipeline.flush`."""
        taken = self.take()
        await self._client._exchange(taken)
        error = first_error(pending for _, pending in taken)
        if error is not None and self._raise_errors:
            raise error


class AsyncStream:
    """A streaming request on a connection of its own (as connection.Stream): it connects at
    `async with` or at the first `async for` step; `result` is its first answer."""

    def __init__(
        self,
        path: Path,
        timeout: float | None,
        call: Call[Any],
        idle_timeout: float | None,
        before: Sequence[Call[Any]] = (),
    ) -> None:
        self._path, self._timeout, self._call = path, timeout, call
        self._idle_timeout = idle_timeout
        self._before = before  # sent first on every connection (a watch's `hello` with reads)
        self._connection: AsyncLineConnection | None = None
        self.result: Any = None

    async def _open(self, call: Call[Any]) -> AsyncLineConnection:
        connection = await AsyncLineConnection.open(self._path, self._timeout, DEFAULT_WINDOW)
        try:
            sent = (*self._before, call)
            answers: list[Pending[Any]] = [Pending() for _ in sent]
            await connection.run(connection.exchange.run(zip(sent, answers, strict=True)))
            for answer in answers:
                self.result = answer.result()  # raises the first error
        except BaseException:
            await connection.aclose()
            raise
        connection.timeout = self._idle_timeout
        return connection

    async def start(self) -> None:
        """Connect and read the first answer (once); raises what the request raises."""
        if self._connection is None:
            self._connection = await self._open(self._call)
            self._started()

    def _started(self) -> None:
        """What a subclass takes from the first answer."""

    async def _receive(self) -> dict[str, Any]:
        await self.start()
        assert self._connection is not None
        return await self._connection.receive()

    def __aiter__(self) -> "AsyncStream":
        return self

    async def __anext__(self) -> Any:
        return await self._receive()

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.aclose()

    async def __aenter__(self) -> "AsyncStream":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class AsyncWatch(AsyncStream):
    """Typed watch events; `position` is where to resume from (as connection.Watch)."""

    def __init__(
        self,
        path: Path,
        timeout: float | None,
        since: int | None,
        options: WatchOptions,
        idle_timeout: float | None,
        reconnect_timeout: float | None,
    ) -> None:
        super().__init__(path, timeout, options.call(since), idle_timeout, options.before())
        self.position: int | None = since
        self._options = options
        self._reconnect_timeout = reconnect_timeout

    def _started(self) -> None:
        self.position = int(self.result["position"])

    def __aiter__(self) -> "AsyncWatch":
        return self

    async def __anext__(self) -> WatchEvent:
        await self.start()  # a first connection that fails is not reconnected: it raises
        while True:
            try:
                line = await self._receive()
            except ConnectionFailed:
                if self._reconnect_timeout is None or self.position is None:
                    raise
                await self._reconnect(self._reconnect_timeout)
                continue
            event = event_from_json(line)
            moved = resume_position(event)
            self.position = self.position if moved is None else moved
            return event

    async def _reconnect(self, patience: float) -> None:
        """As connection.Watch._reconnect, waiting with anyio."""
        await self.aclose()
        failure: ConnectionFailed = connection_lost(f"it did not come back within {patience:g} s")
        with anyio.move_on_after(patience) as waiting:
            wait = RECONNECT_FIRST_WAIT
            while True:
                try:
                    self._connection = await self._open(self._options.call(self.position))
                    return
                except ConnectionFailed as exc:
                    failure = exc
                await anyio.sleep(wait)  # the daemon is starting again: nothing to wait on
                wait = min(wait * 2, RECONNECT_LONGEST_WAIT)
        assert waiting.cancelled_caught
        raise failure

    async def __aenter__(self) -> "AsyncWatch":
        await self.start()
        return self
