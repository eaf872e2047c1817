"""Every control-socket line of the tests held to docs/control-protocol.schema.json (a test
helper, not a test module).

`install()` wraps each control connection a daemon serves (in-process, or a daemon subprocess
started through `tests.schema_daemon`), so whatever the client is (raw lines, `p2psync.client`,
the CLI, an app of another uid) every request it sends and every line it gets back is checked:

- an answer must be a valid response, and its result the result of the method asked;
- a line after a stream's first answer (`watch`, `pair`) must be a valid event;
- a request the schema refuses must have been refused by the daemon too (`bad_request`,
  `unknown_method`, or `forbidden` for an app stopped before its parameters were read): a request
  the schema calls invalid but the daemon carried out means the schema or the daemon is wrong.

Violations are collected, never raised inside the daemon: the tests' fixtures and
`tests.daemons` fail the test that caused them. The switch is `P2PSYNC_SCHEMA_CHECK=1`
(tests/conftest.py sets it unless told otherwise). Uses `jsonschema`, a test dependency only.
"""

import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    import jsonschema

from p2psync.control.lines import MAX_LINE_BYTES

SCHEMA_PATH = Path(__file__).parent.parent / "docs" / "control-protocol.schema.json"
ENV = "P2PSYNC_SCHEMA_CHECK"
STREAMS = ("watch", "pair", "backup")
# how the daemon may refuse a request the schema refuses
REFUSALS = ("bad_request", "unknown_method", "forbidden")


@cache
def _schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return loaded


def _inlined(schema: Any, definitions: dict[str, Any]) -> Any:
    """`schema` with each `{"$ref": "#/$defs/x"}` replaced by x itself (the file has no cycles):
    jsonschema resolves a reference at every use, which doubles the cost of a check."""
    if isinstance(schema, dict):
        if set(schema) == {"$ref"}:
            return _inlined(definitions[schema["$ref"].rpartition("/")[2]], definitions)
        return {key: _inlined(value, definitions) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_inlined(item, definitions) for item in schema]
    return schema


@cache
def _validator(definition: str) -> "jsonschema.protocols.Validator":
    """A validator of one `$defs` entry. jsonschema is imported on the first check, not with
    this module: a daemon started under the check gets ready as fast as any other."""
    import jsonschema

    definitions = _schema()["$defs"]
    validator: jsonschema.protocols.Validator = jsonschema.Draft202012Validator(
        _inlined(definitions[definition], definitions)
    )
    return validator


def errors(definition: str, instance: Any) -> list[str]:
    """What is wrong with `instance` as `$defs/<definition>` (nothing: valid)."""
    validator = _validator(definition)
    if validator.is_valid(instance):
        return []
    found = validator.iter_errors(instance)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in found]


def event_errors(event: Any) -> list[str]:
    """An event, checked against the definition of its kind (all of them when it names none)."""
    kind = event.get("event") if isinstance(event, dict) else None
    if kind == "membership":
        shares = event.get("change") == "share_members"
        return errors("event.membership.share" if shares else "event.membership.device", event)
    if isinstance(kind, str) and f"event.{kind}" in _schema()["$defs"]:
        return errors(f"event.{kind}", event)
    return errors("event", event)


@dataclass
class _Asked:
    """A request line the daemon will answer, as the checker understood it."""

    line: bytes
    method: str | None  # None: not a request the schema could name
    refused_by_schema: list[str]
    too_large: bool = False


class ConnectionCheck:
    """Follows one connection's bytes both ways and reports what breaks the schema."""

    def __init__(self, report: Callable[[str], None]) -> None:
        self.report = report
        self.inbound = bytearray()
        self.outbound = bytearray()
        self.skipping = False  # inside an oversized line, as the daemon is
        self.asked: deque[_Asked] = deque()
        self.streaming: str | None = None  # the stream method whose events follow

    # the client's side -------------------------------------------------------------------------

    def received(self, data: bytes) -> None:
        if self.streaming is not None:
            return  # a stream takes no more requests: the daemon reads and drops them
        if not data:  # the client closed: a last line without newline is answered
            if self.inbound and not self.skipping:
                self._request(bytes(self.inbound))
            self.inbound.clear()
            return
        self.inbound += data
        while (newline := self.inbound.find(b"\n")) >= 0:
            line = bytes(self.inbound[:newline])
            del self.inbound[: newline + 1]
            if self.skipping:
                self.skipping = False
                continue
            self._request(line)
        if len(self.inbound) > MAX_LINE_BYTES:
            self.inbound.clear()
            if not self.skipping:
                self.skipping = True
                self.asked.append(_Asked(b"<oversized>", None, [], too_large=True))

    def _request(self, line: bytes) -> None:
        if len(line) > MAX_LINE_BYTES:
            self.asked.append(_Asked(line[:80], None, [], too_large=True))
            return
        if not line.strip():
            return
        try:
            request = json.loads(line)
        except (ValueError, RecursionError):
            self.asked.append(_Asked(line, None, ["not JSON"]))
            return
        method = request.get("method") if isinstance(request, dict) else None
        if not isinstance(method, str):
            self.asked.append(_Asked(line, None, ["no method"]))
            return
        known = method in _schema()["$defs"]["method"]["enum"]
        refused = errors(f"request.{method}", request) if known else ["unknown method"]
        self.asked.append(_Asked(line, method if known else None, refused))

    # the daemon's side -------------------------------------------------------------------------

    def sent(self, data: bytes) -> None:
        self.outbound += data
        while (newline := self.outbound.find(b"\n")) >= 0:
            line = bytes(self.outbound[:newline])
            del self.outbound[: newline + 1]
            self._answer(line)

    def _answer(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            self._violation(line, ["the daemon sent a line that is not JSON"])
            return
        if self.streaming is not None:
            self._violation(line, event_errors(message), f"an event of {self.streaming}")
            return
        if not self.asked:
            self._violation(line, ["an answer to no request"])
            return
        asked = self.asked.popleft()
        problems = errors("response", message)
        if problems:
            self._violation(line, problems, f"the answer to {asked.line[:200]!r}")
            return
        if message["ok"]:
            if asked.refused_by_schema:
                self._violation(
                    asked.line,
                    asked.refused_by_schema,
                    "a request the schema refuses, carried out by the daemon",
                )
            elif asked.method is not None:
                self._violation(
                    line, errors(f"result.{asked.method}", message["result"]), "its result"
                )
            if asked.method in STREAMS:
                self.streaming = asked.method
                self.asked.clear()  # lines sent after it are never answered
        else:
            code = message["error"]["code"]
            if asked.too_large and code != "too_large":
                self._violation(line, [f"an oversized line answered {code}, not too_large"])
            elif asked.refused_by_schema and code not in REFUSALS and not asked.too_large:
                self._violation(
                    asked.line,
                    asked.refused_by_schema,
                    f"a request the schema refuses, answered {code}, not one of {REFUSALS}",
                )

    def _violation(self, line: bytes, problems: list[str], what: str = "") -> None:
        if problems:
            shown = line[:300].decode(errors="replace")
            self.report(f"{what or 'a line'}: {shown}\n  " + "\n  ".join(problems))


class CheckedStream(trio.abc.HalfCloseableStream):
    """A control connection's stream, with a ConnectionCheck watching both directions."""

    def __init__(self, stream: trio.SocketStream, check: ConnectionCheck) -> None:
        self.stream = stream
        self.check = check

    @property
    def socket(self) -> trio.socket.SocketType:  # the kernel's credentials are read from it
        return self.stream.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.stream.receive_some(max_bytes)
        self.check.received(data)
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)
        self.check.sent(bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()


def install(report: Callable[[str], None]) -> Callable[[], None]:
    """Check every control connection served from now on; returns what undoes it."""
    from p2psync.control.access import ControlAccess

    serve = ControlAccess.serve

    async def checked(
        self: ControlAccess, server: Any, stream: trio.SocketStream, unread: bytes = b""
    ) -> None:
        # a connection a front-end process handed over: its writes before were answered there
        # (tests/test_control_front_end.py checks those answers are the daemon's own lines)
        check = ConnectionCheck(report)
        check.received(unread)
        await serve(self, server, CheckedStream(stream, check), unread)

    ControlAccess.serve = checked  # type: ignore[method-assign]

    def uninstall() -> None:
        ControlAccess.serve = serve  # type: ignore[method-assign]

    return uninstall
