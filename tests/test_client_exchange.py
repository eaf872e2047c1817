"""The exchange of requests and answers (p2psync/client/exchange.py), driven by a simulated
daemon: the window, answers matched in order, the protocol 1.0 check, and cutting lines."""

import json
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from p2psync.client import NotFound, Pending, ProtocolViolation, TooLarge, UnknownMethod
from p2psync.client import calls as requests
from p2psync.client.calls import Call
from p2psync.client.exchange import ARRIVED, RECEIVE, Exchange, LineBuffer, Plan

Answer = Callable[[dict[str, Any]], dict[str, Any]]


def echo(request: dict[str, Any]) -> dict[str, Any]:
    return {"id": request["id"], "ok": True, "result": request.get("n")}


class SimulatedDaemon:
    """Runs a plan: reads what it sends, and answers its requests in order with `answer`, one at
    a time when the plan waits for answers, or (`eager`) every request sent so far at once."""

    def __init__(self, answer: Answer = echo, eager: bool = False) -> None:
        self.answer = answer
        self.eager = eager
        self.received: list[dict[str, Any]] = []
        self.delivered = 0  # answers that reached the client
        self.read = 0  # answers the client has read
        self.most_in_flight = 0  # requests the client had sent ahead of their answers

    def run(self, plan: Plan) -> None:
        try:
            step = next(plan)
            while True:
                if step is RECEIVE:
                    if self.read == self.delivered:
                        self._deliver()
                    self.read += 1
                    step = plan.send(self.answer(self.received[self.read - 1]))
                elif step is ARRIVED:
                    if self.eager or self.read == self.delivered:
                        self._deliver()
                    step = plan.send(self.delivered - self.read)
                else:
                    assert isinstance(step, bytes)
                    self.received += [json.loads(line) for line in step.splitlines()]
                    in_flight = len(self.received) - self.delivered
                    self.most_in_flight = max(self.most_in_flight, in_flight)
                    step = next(plan)
        except StopIteration:
            return

    def _deliver(self) -> None:
        assert self.delivered < len(self.received), "the plan waits for an answer to nothing"
        self.delivered = len(self.received) if self.eager else self.delivered + 1


def echoes(count: int) -> list[tuple[Call[Any], Pending[Any]]]:
    return [(requests.raw("echo", {"n": n}), Pending()) for n in range(count)]


@pytest.mark.parametrize("eager", [False, True])
def test_the_window_fills_and_is_never_exceeded(eager: bool) -> None:
    daemon = SimulatedDaemon(eager=eager)
    items = echoes(100)
    daemon.run(Exchange(window=16).run(items))
    assert daemon.most_in_flight == 16
    assert [pending.result() for _, pending in items] == list(range(100))
    assert [r["id"] for r in daemon.received] == list(range(1, 101))


def test_submit_leaves_the_last_requests_until_finish() -> None:
    daemon = SimulatedDaemon()
    exchange = Exchange(window=4)
    first = echoes(6)
    daemon.run(exchange.submit(first))
    # answers are read only once the next requests went out: the third has arrived, unread
    assert [pending.done for _, pending in first] == [True, True, False, False, False, False]
    assert daemon.delivered == 3 and daemon.most_in_flight == 4
    daemon.run(exchange.finish())
    assert all(pending.done for _, pending in first) and not exchange.waiting


@pytest.mark.parametrize("eager", [False, True])
def test_a_pipeline_filled_one_call_at_a_time_keeps_to_the_window(eager: bool) -> None:
    daemon = SimulatedDaemon(eager=eager)
    exchange = Exchange(window=4)
    items = echoes(50)
    for item in items:
        daemon.run(exchange.submit([item]))
    daemon.run(exchange.finish())
    assert daemon.most_in_flight == 4
    assert [pending.result() for _, pending in items] == list(range(50))


def test_errors_settle_their_request_only() -> None:
    def refuse_odd(request: dict[str, Any]) -> dict[str, Any]:
        if request["n"] % 2:
            error = {"code": "not_found", "message": "x"}
            return {"id": request["id"], "ok": False, "error": error}
        return echo(request)

    items = echoes(4)
    SimulatedDaemon(refuse_odd).run(Exchange().run(items))
    assert [type(pending.error) for _, pending in items] == [type(None), NotFound] * 2


def test_an_answer_to_another_request_is_a_protocol_violation() -> None:
    def wrong(request: dict[str, Any]) -> dict[str, Any]:
        return {"id": request["id"] + 1, "ok": True, "result": None}

    with pytest.raises(ProtocolViolation, match="answered request 2 where request 1"):
        SimulatedDaemon(wrong).run(Exchange().run(echoes(1)))


def test_a_skipped_line_is_answered_in_order_with_id_null() -> None:
    def too_long(request: dict[str, Any]) -> dict[str, Any]:
        error = {"code": "too_large", "message": "skipped"}
        return {"id": None, "ok": False, "error": error} if request["n"] == 1 else echo(request)

    items = echoes(3)
    SimulatedDaemon(too_long).run(Exchange().run(items))
    assert isinstance(items[1][1].error, TooLarge) and items[2][1].result() == 2


def hello_answer(protocol: str | None) -> Answer:
    def answer(request: dict[str, Any]) -> dict[str, Any]:
        if request["method"] == "put":
            return {"id": request["id"], "ok": True, "result": {"position": 1, "seq": 1}}
        if request["method"] != "hello":
            return echo(request)
        if protocol is None:
            error = {"code": "unknown_method", "message": "unknown method 'hello'"}
            return {"id": request["id"], "ok": False, "error": error}
        return {"id": request["id"], "ok": True, "result": {"protocol": protocol}}

    return answer


def conditional(items: Iterable[int]) -> list[tuple[Call[Any], Pending[Any]]]:
    return [
        (
            requests.put("c", "k", n, type=None, schema_version=None, if_version="", share=None),
            Pending(),
        )
        for n in items
    ]


def test_a_call_an_older_daemon_would_ignore_is_not_sent_to_it() -> None:
    daemon = SimulatedDaemon(hello_answer(None))
    items = [*echoes(2), *conditional([1, 2])]
    daemon.run(Exchange().run(items))
    assert [r["method"] for r in daemon.received] == ["echo", "echo", "hello"]  # asked once
    assert items[0][1].result() == 0 and isinstance(items[2][1].error, UnknownMethod)
    assert "before 1.0" in str(items[3][1].error)


def test_a_1_0_daemon_gets_them_after_one_hello() -> None:
    daemon = SimulatedDaemon(hello_answer("1.0"))
    exchange = Exchange()
    daemon.run(exchange.run(conditional([1, 2])))
    daemon.run(exchange.run(conditional([3])))
    assert [r["method"] for r in daemon.received] == ["hello", "put", "put", "put"]
    assert daemon.received[1]["if_version"] == ""


def test_lines_are_cut_as_they_complete() -> None:
    lines = LineBuffer()
    lines.feed(b'{"a"')
    assert lines.next_line() is None and not lines.has_line()
    lines.feed(b': 1}\n{"b": 2}\n{"c"')
    assert lines.has_line()
    assert lines.next_line() == b'{"a": 1}\n'
    assert lines.next_line() == b'{"b": 2}\n'
    assert lines.next_line() is None
    lines.feed(b": 3}\n")
    assert lines.next_line() == b'{"c": 3}\n'
    big = b"x" * 1_000_000
    for start in range(0, len(big), 65536):  # a long line in many chunks
        lines.feed(big[start : start + 65536])
        assert lines.next_line() is None
    lines.feed(b"\n")
    assert lines.next_line() == big + b"\n"
