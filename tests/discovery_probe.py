"""A discovery process for namespace tests: runs `Discovery` and prints its events as JSON lines.

Reads commands from stdin (`pair N`, `unpair`, `rename NAME`); stops with a goodbye on SIGTERM or
end of input.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

import trio

from p2psync.discovery import Discovery, Found


def emit(record: dict[str, object]) -> None:
    # CLOCK_MONOTONIC is shared by all processes, so tests can compare times across probes.
    print(json.dumps({**record, "time": time.monotonic()}, ensure_ascii=False), flush=True)


async def obey_stdin(discovery: Discovery, cancel_scope: trio.CancelScope) -> None:
    # A pipe stream rather than trio.wrap_file: a blocking read in a thread would hold up SIGTERM.
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    pending = b""
    while chunk := await stdin.receive_some():
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            command = line.decode().split()
            if command[:1] == ["pair"]:
                discovery.set_pairing(int(command[1]))
            elif command == ["unpair"]:
                discovery.set_pairing(None)
            elif command[:1] == ["rename"]:
                discovery.rename(line.decode().split(" ", 1)[1])
            emit({"event": "done", "command": line.decode()})
    cancel_scope.cancel()


async def stop_on_sigterm(cancel_scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            cancel_scope.cancel()


async def main(args: argparse.Namespace) -> None:
    emit({"event": "starting"})
    with trio.CancelScope() as cancel_scope:
        async with (
            Discovery(
                args.device_id,
                args.name,
                args.port,
                interfaces=args.interface,
                interface_poll_seconds=args.poll,
            ) as discovery,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(stop_on_sigterm, cancel_scope)
            nursery.start_soon(obey_stdin, discovery, cancel_scope)
            emit({"event": "ready"})
            async for event in discovery.events():
                if isinstance(event, Found):
                    emit(
                        {
                            "event": "found",
                            "device_id": event.device_id,
                            "name": event.name,
                            "addresses": event.addresses,
                            "txt": event.txt,
                        }
                    )
                else:
                    emit({"event": "lost", "device_id": event.device_id})
    emit({"event": "stopped"})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--device-id", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, default=22000)
    parser.add_argument("--interface", action="append", required=True)
    parser.add_argument("--poll", type=float, default=10.0)
    trio.run(main, parser.parse_args())
