"""The `p2psync` command line: parsing, human and --json output, exit codes, against a server."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from p2psync import cli, cli_commands, cli_format
from p2psync.cli import build_parser, main
from p2psync.cli_commands import CLEAR_SCREEN
from p2psync.client import Client
from p2psync.pairing_words import WORDS
from tests.apps import APP_UID, needs_root, run_cli_as
from tests.control_harness import Served, conflicting_write, start_served
from tests.daemons import DaemonProcess, running
from tests.test_control_access import AppsDaemon


@pytest.fixture
async def served(nursery: trio.Nursery, tmp_path: Path) -> Served:
    return await start_served(nursery, tmp_path)


class Run:
    def __init__(self, served: Served, capsys: pytest.CaptureFixture[str]) -> None:
        self.served = served
        self.capsys = capsys

    async def __call__(self, *argv: str, stdin: bytes | None = None) -> tuple[int, str, str]:
        """Run the CLI in a worker thread (it blocks); returns exit code, stdout, stderr."""
        if stdin is not None:
            sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
        with trio.fail_after(10):
            code = await trio.to_thread.run_sync(main, ["--socket", str(self.served.path), *argv])
        out, err = self.capsys.readouterr()
        return code, out, err

    async def ok(self, *argv: str, stdin: bytes | None = None) -> str:
        code, out, err = await self(*argv, stdin=stdin)
        assert code == 0, err
        return out


@pytest.fixture
def run(served: Served, capsys: pytest.CaptureFixture[str]) -> Run:
    return Run(served, capsys)


def test_usage_errors_exit_2_and_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        [],
        ["frobnicate"],
        ["get", "notes"],
        ["ls", "c", "--limit", "0"],
        ["watch", "--since", "-1"],
        ["put", "c", "k", "v", "--schema-version", "x"],
    ):
        assert main(argv) == 2, argv
        assert "usage: p2psync" in capsys.readouterr().err
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    assert "export-cert" in top and "exit codes" in top and "4 not found" in top
    assert '{"error": {"code": ..., "message": ...}}' in top
    assert main(["put", "--help"]) == 0
    assert "'-' reads it from stdin" in " ".join(capsys.readouterr().out.split())
    assert main(["forget", "--help"]) == 0
    assert "household-wide" in " ".join(capsys.readouterr().out.split())


def test_a_version_starting_with_a_dash_is_taken_as_the_value_of_pick() -> None:
    args = build_parser().parse_args(
        cli.with_dashed_values_joined(["resolve", "c", "k", "--pick", "-Xy4", "--force"])
    )
    assert (args.pick, args.force) == ("-Xy4", True)
    after_dashes = ["put", "c", "k", "--", "--pick", "-v"]
    assert cli.with_dashed_values_joined(after_dashes) == after_dashes


def test_no_daemon_exits_3_with_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("P2PSYNC_SOCKET", str(tmp_path / "missing.sock"))
    for argv in (["status"], ["--json", "get", "c", "k"]):
        assert main(argv) == 3
        err = capsys.readouterr().err
        assert "missing.sock" in err and "p2psync daemon" in err


def test_no_daemon_under_json_is_one_json_line_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "missing.sock")
    assert main(["--socket", missing, "--json", "get", "c", "k"]) == 3
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    error = json.loads(err)["error"]
    assert error["code"] == "not_running" and "missing.sock" in error["message"]
    sock = tmp_path / "locked.sock"
    sock.touch(mode=0)
    if os.geteuid() != 0:  # root opens anything
        assert main(["--socket", str(sock), "get", "c", "k", "--json"]) == 3
        assert json.loads(capsys.readouterr().err)["error"]["code"] == "permission_denied"


async def test_errors_under_json_carry_the_daemons_code_and_not_found_exits_4(run: Run) -> None:
    code, out, err = await run("--json", "get", "notes", "missing")
    assert (code, out) == (4, "") and len(err.splitlines()) == 1
    assert json.loads(err) == {
        "error": {"code": "not_found", "message": json.loads(err)["error"]["message"]}
    }
    assert "notes/missing" in json.loads(err)["error"]["message"]
    code, out, err = await run("get", "notes", "missing")  # for people: prose, same exit code
    assert (code, out) == (4, "") and err.startswith("p2psync: ") and "notes/missing" in err
    code, out, err = await run("put", "_devices", "x", "1", "--json")
    assert (code, out) == (1, "") and json.loads(err)["error"]["code"] == "bad_request"
    code, out, err = await run("--json", "trust", "/nonexistent/cert.pem")
    assert (code, out) == (2, "") and json.loads(err)["error"]["code"] == "usage"
    code, out, err = await run("--json", "share", "show", "nosuch")
    assert (code, out) == (4, "") and json.loads(err)["error"]["code"] == "not_found"


async def test_a_client_side_timeout_under_json_says_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "silent.sock"
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen()  # the kernel accepts; nobody ever answers
    monkeypatch.setattr(cli, "Client", lambda socket_path: Client(socket_path, timeout=0.3))
    with sock:
        code = await trio.to_thread.run_sync(main, ["--socket", str(path), "--json", "id"])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "") and json.loads(err)["error"]["code"] == "timeout", err


async def test_identity_and_membership_commands(run: Run, tmp_path: Path) -> None:
    shown = await run.ok("id")
    assert run.served.household.device_id in shown and "kitchen" in shown
    cert_file = tmp_path / "kitchen.pem"
    assert "p2psync trust kitchen.pem" in await run.ok("export-cert", "--out", str(cert_file))
    assert cert_file.read_text() == await run.ok("export-cert")
    assert cert_file.read_text().startswith("-----BEGIN")
    await run.ok("trust", str(cert_file), "--name", "attic", "--address", "10.0.0.2:4000")
    assert run.served.household.trusted[-1][1:] == ("attic", "10.0.0.2:4000")
    await run.ok("trust", "-", stdin=cert_file.read_bytes())
    code, _, err = await run("trust", str(tmp_path / "nope.pem"))
    assert code == 2 and "cannot read certificate" in err
    code, _, err = await run("revoke", "ABCDE")
    assert code == 4 and "no device ABCDE" in err
    code, _, err = await run("forget", "ABCDE")
    assert code == 4


async def test_status_and_peers_of_a_daemon_that_says_little(run: Run) -> None:
    device = run.served.household.device_id
    assert (await run.ok("status")).startswith(f"this device ({device})\n")
    found = json.loads(await run.ok("status", "--json"))
    assert found["device"] == device and found["peers"] == [{"device": "PEER", "connected": False}]
    table = (await run.ok("peers")).splitlines()
    assert table[0].split()[:3] == ["NAME", "DEVICE", "STATE"]
    assert "offline" in table[1]
    assert json.loads(await run.ok("peers", "--json")) == [{"device": "PEER", "connected": False}]


async def test_devices_lists_this_device_and_rename_changes_its_name(
    run: Run, tmp_path: Path
) -> None:
    await conflicting_write(run.served, tmp_path)  # a second member: "attic"
    listed = (await run.ok("devices")).splitlines()
    assert listed[0].split() == ["NAME", "ID", "STATE", "LAST", "SEEN", "ADDRESS", "VERSION"]
    (attic,) = [line for line in listed if line.startswith("attic")]
    assert attic.split()[2:] == ["offline", "never", "-", "-"]
    rows = json.loads(await run.ok("devices", "--json"))
    assert [row["name"] for row in rows if not row["this"]] == ["attic"]
    assert "now called Küche (was kitchen)" in await run.ok("rename", "Küche")
    assert run.served.household.device_name == "Küche"


def test_main_is_the_console_script() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "p2psync", "--version-does-not-exist"],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=Path(__file__).parent.parent,
        env={**os.environ, "P2PSYNC_SOCKET": "/nonexistent"},
    )
    assert result.returncode == 2 and "usage: p2psync" in result.stderr


# status, peers, pairing and doctor -------------------------------------------------------------

KITCHEN = "V4TH3-AXRC4-7VFHX-COVCC-WBIP3-642MQ-AWHR7"
ATTIC = "TPSDW-QVCLZ-3WFQ7-ENPPE-JYSJU-YEKOD-6PFNI"
ROOT = Path(__file__).parent.parent
Answer = Callable[[dict[str, Any]], Any]


async def serve_scripted(
    nursery: trio.Nursery,
    path: Path,
    answers: dict[str, Answer],
    events: dict[str, list[dict[str, Any]]] | None = None,
) -> None:
    """A real control socket whose answers come from `answers` (method -> function of the
    request); other methods get `unknown_method`, as from an older daemon. A method in `events`
    is a stream (like `pair`): its answer is followed by those event lines."""
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen()

    async def serve(stream: trio.SocketStream) -> None:
        buffer = b""
        async with stream:
            while chunk := await stream.receive_some():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    request = json.loads(line)
                    answer = answers.get(request["method"])
                    response: dict[str, Any] = {"id": request.get("id"), "ok": answer is not None}
                    if answer is None:
                        response["error"] = {"code": "unknown_method", "message": "unknown method"}
                    else:
                        response["result"] = answer(request)
                    await stream.send_all(json.dumps(response).encode() + b"\n")
                    for event in (events or {}).get(request["method"], []):
                        await stream.send_all(json.dumps(event).encode() + b"\n")

    await nursery.start(trio.serve_listeners, serve, [trio.SocketListener(sock)])


def command_line(socket_path: Path, *argv: str) -> list[str]:
    return [sys.executable, "-m", "p2psync", "--socket", str(socket_path), *argv]


async def run_cli(daemon: DaemonProcess, *argv: str) -> subprocess.CompletedProcess[bytes]:
    """The CLI as a process of its own against `daemon`."""
    with trio.fail_after(60):
        return await trio.run_process(
            command_line(daemon.socket_path, *argv),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
        )


async def read_until(stream: trio.abc.ReceiveStream, done: Callable[[str], bool]) -> str:
    received = b""
    with trio.fail_after(20):
        while not done(received.decode(errors="replace")):
            chunk = await stream.receive_some()
            assert chunk, f"the output ended early: {received!r}"
            received += chunk
    return received.decode()


async def read_all(stream: trio.abc.ReceiveStream | None) -> str:
    assert stream is not None
    received = b""
    with trio.fail_after(20):
        while chunk := await stream.receive_some():
            received += chunk
    return received.decode()


def catching_up(calls: list[int]) -> Answer:
    """Peers answers of a catch-up from attic: 0%, then 50%, then done."""

    def peers(request: dict[str, Any]) -> list[dict[str, Any]]:
        received = min(100, 50 * len(calls))
        calls.append(1)
        return [
            {
                "device": ATTIC,
                "name": "attic ünï",
                "connected": True,
                "address": "10.0.0.2:1",
                "last_seen_seconds_ago": 0.2,
                "we_lack": 100 - received,
                "they_lack": 0,
                "entries_received": received,
            },
        ]

    return peers


STATUS = {
    "device": KITCHEN,
    "name": "kitchen",
    "version": "0.1.0",
    "uptime": 42.0,
    "listen": ["0.0.0.0:47100"],
    "records": 7,
    "conflicts": 3,
    "position": 9,
    "discovery": {"enabled": True, "interfaces": [], "nearby": 1},
    "pairing": None,
}


async def test_status_shows_the_device_its_peers_and_the_catch_up(
    nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.sock"
    await serve_scripted(nursery, path, {"status": lambda _: STATUS, "peers": catching_up([1])})
    code = await trio.to_thread.run_sync(main, ["--socket", str(path), "status"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(f"kitchen ({KITCHEN})\n")
    assert "3 conflicts: run `p2psync conflicts`" in out
    assert "attic ünï  TPSDW   online  10.0.0.2:1" in out
    assert "[##########..........]  50%  50 entries to go, -" in out


@pytest.mark.parametrize("terminal", [False, True], ids=["pipe", "tty"])
async def test_status_watch_redraws_with_rates_until_ctrl_c(
    nursery: trio.Nursery, tmp_path: Path, terminal: bool
) -> None:
    path = tmp_path / "s.sock"
    await serve_scripted(nursery, path, {"status": lambda _: STATUS, "peers": catching_up([])})
    if terminal:
        reader, writer = os.openpty()
        output: trio.abc.ReceiveStream = trio.lowlevel.FdStream(reader)
        stdout: Any = writer
    else:
        stdout = subprocess.PIPE
    process = await trio.lowlevel.open_process(
        command_line(path, "status", "--watch", "--interval", "0.1"), stdout=stdout, cwd=ROOT
    )
    if terminal:
        os.close(writer)
    else:
        assert process.stdout is not None
        output = process.stdout
    try:
        # three headings: the second snapshot is complete
        shown = await read_until(output, lambda text: text.count("Ctrl-C stops") >= 3)
        process.send_signal(signal.SIGINT)
        with trio.fail_after(20):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
        await output.aclose()
    assert (CLEAR_SCREEN in shown) == terminal
    first, second = [s.replace("\r\n", "\n") for s in shown.split("Ctrl-C stops")[1:3]]
    assert "[....................]   0%  100 entries to go" in first
    assert re.search(r"  -\n", first)  # no rate from a single sample
    assert re.search(r"\[#{10}\.{10}\]  50%  50 entries to go, [0-9.]+k?/s, about", second)


async def test_peers_nearby_marks_devices_that_are_not_paired(
    nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.sock"
    nearby = [
        {
            "device": ATTIC,
            "name": "new laptop",
            "addresses": ["10.0.0.9:47100"],
            "member": False,
            "pairing": None,
        },
    ]
    answers: dict[str, Answer] = {
        "peers": lambda _: [],
        "nearby": lambda _: nearby,
        "status": lambda _: {"discovery": {"enabled": False}},
    }
    await serve_scripted(nursery, path, answers)
    code = await trio.to_thread.run_sync(main, ["--socket", str(path), "peers", "--nearby"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("no other devices yet: run `p2psync pair` here")
    assert "new laptop  TPSDW   NOT PAIRED  10.0.0.9:47100" in out
    assert "not paired: run `p2psync pair` here and `p2psync join CODE` there" in out
    code = await trio.to_thread.run_sync(
        main, ["--socket", str(path), "peers", "--nearby", "--json"]
    )
    assert code == 0 and json.loads(capsys.readouterr().out) == {"members": [], "nearby": nearby}
    nearby.clear()
    code = await trio.to_thread.run_sync(main, ["--socket", str(path), "peers", "--nearby"])
    assert code == 0 and "discovery is off" in capsys.readouterr().out


async def test_an_older_daemon_is_told_apart(
    nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.sock"
    await serve_scripted(nursery, path, {"peers": lambda _: []})
    code = await trio.to_thread.run_sync(main, ["--socket", str(path), "peers", "--nearby"])
    assert code == 1 and "older than this command" in capsys.readouterr().err


def other_word(word: str) -> str:
    return next(w for w in WORDS if w != word)


async def test_pair_join_status_and_revoke_between_real_daemons(tmp_path: Path) -> None:
    inviter, joiner = DaemonProcess(tmp_path, "a"), DaemonProcess(tmp_path, "b")

    async def pair() -> tuple[trio.Process, str]:
        process = await trio.lowlevel.open_process(
            command_line(inviter.socket_path, "pair", "--ttl", "60"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        assert process.stdout is not None
        shown = await read_until(process.stdout, lambda text: "Waiting for" in text)
        found = re.search(r"On the other device run:  p2psync join (\S+)\n", shown)
        assert found and f"\n    {found.group(1)}\n" in shown and "one attempt" in shown
        return process, found.group(1)

    with running(inviter, joiner):
        process, code = await pair()
        number, first, second = code.split("-")
        wrong = await run_cli(
            joiner, "join", f"{number}-{other_word(first)}-{second}", "--address", inviter.address
        )
        assert wrong.returncode == 1 and wrong.stderr.startswith(b"p2psync: ")
        with trio.fail_after(20):
            assert await process.wait() == 1
        failed = await read_all(process.stderr)
        assert "pairing failed" in failed and "run `p2psync pair` again" in failed

        process, code = await pair()
        joined = await run_cli(joiner, "join", code, "--address", inviter.address)
        assert joined.returncode == 0, joined.stderr
        assert f"Joined the household of a ({inviter.device_id})" in joined.stdout.decode()
        with trio.fail_after(20):
            assert await process.wait() == 0
        assert f"Paired with b ({joiner.device_id})" in await read_all(process.stdout)

        status = await run_cli(inviter, "status")
        assert status.returncode == 0
        shown = status.stdout.decode()
        assert shown.startswith(f"a ({inviter.device_id})\n")
        assert re.search(rf"\nb +{joiner.device_id[:5]} ", shown)

        unknown = await run_cli(inviter, "revoke", "c")
        assert unknown.returncode == 4 and "a (" in unknown.stderr.decode()
        unknown = await run_cli(inviter, "--json", "revoke", "c")  # one JSON line, from a process
        assert (unknown.returncode, unknown.stdout) == (4, b"")
        (line,) = unknown.stderr.decode().splitlines()
        assert json.loads(line)["error"]["code"] == "not_found"
        revoked = await run_cli(inviter, "revoke", joiner.device_id[:5].lower())  # the short id
        assert revoked.returncode == 0
        assert f"Revoked b ({joiner.device_id})" in revoked.stdout.decode()
        assert "keeps its copy" in revoked.stdout.decode()


async def test_ctrl_c_withdraws_a_pairing_code(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, "a")
    with running(daemon):
        process = await trio.lowlevel.open_process(
            command_line(daemon.socket_path, "pair"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        assert process.stdout is not None
        await read_until(process.stdout, lambda text: "Waiting for" in text)
        assert daemon.call("status")["pairing"]["active"] is True
        process.send_signal(signal.SIGINT)
        with trio.fail_after(20):
            assert await process.wait() == 130
        assert "pairing cancelled" in await read_all(process.stderr)


def test_help_of_the_main_commands_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for command, example in (
        ("status", "p2psync status --watch"),
        ("peers", "p2psync peers --nearby"),
        ("pair", "p2psync pair --ttl 600"),
        ("join", "p2psync join 7-guitar-orbit --address"),
        ("doctor", "p2psync doctor --json"),
        ("revoke", "p2psync revoke TPSDW"),
    ):
        assert main([command, "--help"]) == 0
        shown = capsys.readouterr().out
        assert "examples:" in shown and example in shown, command
    assert main(["--help"]) == 0
    assert "p2psync join 7-guitar-orbit" in capsys.readouterr().out
    for argv in (["status", "--interval", "0"], ["pair", "--ttl", "0"], ["join"]):
        assert main(argv) == 2
        assert "usage:" in capsys.readouterr().err


# shares ----------------------------------------------------------------------------------------

WRITTEN = {"position": 4, "seq": 2, "hlc": 117667372855066624}
RECORD = {
    "collection": "list",
    "key": "milk",
    "origin": ATTIC,
    "hlc": 117667372855066624,
    "deleted": False,
    "value": "2 l",
    "type": None,
    "schema_version": None,
    "conflict": False,
}
# every command that reads or writes records, and the method it calls
DATA_COMMANDS = [
    (["put", "list", "milk", '"2 l"'], "put"),
    (["resolve", "list", "milk", '"2 l"', "--force"], "resolve"),  # --force: no get first
    (["get", "list", "milk"], "get"),
    (["rm", "list", "milk"], "delete"),
    (["ls", "list"], "scan"),
    (["conflicts"], "conflicts"),
    (["watch"], "watch"),
]


def recording(requests: list[dict[str, Any]], result: Any) -> Answer:
    """An answer that keeps the requests it was given."""

    def answer(request: dict[str, Any]) -> Any:
        requests.append(request)
        return result

    return answer


def test_every_data_command_takes_share(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for argv, _ in DATA_COMMANDS:
        assert parser.parse_args(argv).share == "default", argv
        assert parser.parse_args([*argv, "--share", "shopping"]).share == "shopping", argv
        assert main([argv[0], "--help"]) == 0
        shown = " ".join(capsys.readouterr().out.split())
        assert "--share NAME the share whose records to use (default: default" in shown, argv
    assert parser.parse_args(["pair"]).shares is None
    both = parser.parse_args(["pair", "--share", "parents", "--share", "shopping"])
    assert both.shares == ["parents", "shopping"]
    assert main(["pair", "--help"]) == 0
    assert "p2psync pair --share parents --share shopping" in capsys.readouterr().out


async def test_share_reaches_the_daemon_from_every_data_command(
    nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.sock"
    requests: list[dict[str, Any]] = []
    answers = {
        "put": recording(requests, WRITTEN),
        "resolve": recording(requests, WRITTEN),
        "delete": recording(requests, WRITTEN),
        "get": recording(requests, RECORD),
        "scan": recording(requests, {"items": [RECORD], "next": None}),
        "conflicts": recording(requests, {"items": [], "more": False}),
    }
    await serve_scripted(nursery, path, answers)
    for argv, method in DATA_COMMANDS[:-1]:  # watch streams: see the next test
        for extra, share in (([], "default"), (["--share", "shopping"], "shopping")):
            requests.clear()
            code = await trio.to_thread.run_sync(main, ["--socket", str(path), *argv, *extra])
            assert code == 0, capsys.readouterr().err
            assert [(r["method"], r["share"]) for r in requests] == [(method, share)], argv


async def test_watch_of_one_share_asks_the_daemon_for_that_share(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    path = tmp_path / "s.sock"
    requests: list[dict[str, Any]] = []
    await serve_scripted(nursery, path, {"watch": recording(requests, {"position": 7})})
    process = await trio.lowlevel.open_process(
        command_line(path, "watch", "--share", "shopping"), stderr=subprocess.PIPE, cwd=ROOT
    )
    try:
        assert process.stderr is not None
        await read_until(process.stderr, lambda text: "watching from position 7" in text)
    finally:
        process.kill()
        await process.wait()
    assert [(r["method"], r["share"]) for r in requests] == [("watch", "shopping")]


async def test_messages_name_a_share_other_than_default(
    nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.sock"
    sibling = {k: RECORD[k] for k in ("origin", "hlc", "deleted", "value", "type")}
    in_conflict = {**RECORD, "conflict": True, "siblings": [sibling, {**sibling, "value": "1 l"}]}
    answers: dict[str, Answer] = {
        "put": lambda _: WRITTEN,
        "get": lambda _: in_conflict,
        "scan": lambda _: {"items": [], "next": None},
        "conflicts": lambda _: {"items": [], "more": False},
    }
    await serve_scripted(nursery, path, answers)

    async def run(*argv: str) -> tuple[str, str]:
        code = await trio.to_thread.run_sync(main, ["--socket", str(path), *argv])
        out, err = capsys.readouterr()
        assert code == 0, err
        return out, err

    assert (await run("put", "list", "milk", "1"))[0] == "wrote list/milk (position 4)\n"
    out, _ = await run("put", "--share", "shopping", "list", "milk", "1")
    assert out == "wrote list/milk in share shopping (position 4)\n"
    _, err = await run("get", "list", "milk", "--share", "shopping")
    assert "list/milk in share shopping has 2 conflicting versions" in err
    assert "`p2psync get list milk --all --share shopping`" in err
    assert "`p2psync resolve list milk VALUE --share shopping`" in err
    _, err = await run("ls", "list", "--share", "shopping")
    assert err == "p2psync: no records in list in share shopping\n"
    assert (await run("conflicts", "--share", "shopping"))[0] == "no conflicts in share shopping\n"
    assert (await run("conflicts"))[0] == "no conflicts\n"


async def test_pair_puts_the_new_device_in_shares_and_says_so(
    nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.sock"
    requests: list[dict[str, Any]] = []
    shares = ["default", "parents", "shopping"]
    paired = {"event": "paired", "device": ATTIC, "name": "attic", "shares": shares}
    started = {"code": "7-guitar-orbit", "expires_in": 300}
    await serve_scripted(
        nursery, path, {"pair": recording(requests, started)}, events={"pair": [paired]}
    )
    argv = ["--socket", str(path), "pair", "--share", "parents", "--share", "shopping"]
    assert await trio.to_thread.run_sync(main, argv) == 0
    out = capsys.readouterr().out
    assert requests[-1]["shares"] == ["parents", "shopping"]
    assert "It will be put in shares parents, shopping as well as default.\n" in out
    assert out.endswith("It is in shares parents, shopping as well as default.\n")
    assert await trio.to_thread.run_sync(main, ["--socket", str(path), "pair"]) == 0
    assert requests[-1]["shares"] is None  # the daemon's default: only `default`
    assert "It will be put in shares" not in capsys.readouterr().out
    argv = ["--socket", str(path), "pair", "--share", "default"]
    assert await trio.to_thread.run_sync(main, argv) == 0
    assert "It will be put in shares" not in capsys.readouterr().out  # every device is in it anyway


async def test_join_says_which_shares_this_device_was_given(
    nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.sock"
    joined = {"device": KITCHEN, "name": "kitchen", "members": 2, "shares": ["default"]}
    await serve_scripted(nursery, path, {"join": lambda _: joined})
    argv = ["--socket", str(path), "join", "7-guitar-orbit", "--address", "10.0.0.1:47100"]
    assert await trio.to_thread.run_sync(main, argv) == 0
    assert "You were given the default share only" in capsys.readouterr().out
    joined["shares"] = ["default", "family", "shopping"]
    assert await trio.to_thread.run_sync(main, argv) == 0
    assert capsys.readouterr().out.endswith("\nYou were given shares: family, shopping.\n")


async def test_status_shows_the_shares_of_a_daemon_that_has_them(
    nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.sock"
    shares = [
        {"share": "default", "members": 3, "records": 120, "member": True},
        {"share": "parents", "members": 2, "records": 4, "member": True},
    ]
    answers: dict[str, Answer] = {
        "status": lambda _: {**STATUS, "shares": shares},
        "peers": lambda _: [],
    }
    await serve_scripted(nursery, path, answers)
    assert await trio.to_thread.run_sync(main, ["--socket", str(path), "status"]) == 0
    out = capsys.readouterr().out
    assert (
        "\nshares:\n  default  3 members  120 records\n  parents  2 members    4 records\n" in out
    )
    assert await trio.to_thread.run_sync(main, ["--socket", str(path), "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shares"] == shares


# grants ----------------------------------------------------------------------------------------


async def test_grant_grants_and_revoke_grant(run: Run) -> None:
    assert await run.ok("grants") == cli_format.NO_GRANTS + "\n"
    await run.ok("share", "create", "photos")
    code, out, err = await run("grant", "nobody", "--share", "photos", "--read-only")
    assert code == 0, err
    assert out == (
        "The apps of nobody (uid 65534) may now read and watch every collection of share photos.\n"
    )
    assert "note: other users cannot open" in err  # this socket is 0660: apps are not let in
    code, _, err = await run("grant", "4242", "--share", "family", "--collection", "shopping")
    assert code == 4 and "no share 'family'" in err
    await run.ok("share", "create", "family")
    await run.ok("grant", "4242", "--share", "family", "--collection", "shopping")
    rows = [line.split() for line in (await run.ok("grants")).splitlines()]
    assert rows == [
        ["USER", "UID", "SHARE", "COLLECTION", "ACCESS"],
        ["-", "4242", "family", "shopping", "read-write"],
        ["nobody", "65534", "photos", "*", "read"],
    ]
    listed = json.loads(await run.ok("grants", "--json"))
    assert listed["grants"][1] == {
        "uid": 65534,
        "user": "nobody",
        "share": "photos",
        "collection": None,
        "read_only": True,
    }
    assert "note" in listed
    shown = await run.ok("revoke-grant", "nobody", "--share", "photos")
    assert (
        shown
        == "The apps of nobody (uid 65534) may no longer use every collection of share photos.\n"
    )
    code, _, err = await run("revoke-grant", "nobody", "--share", "photos")
    assert code == 4 and "app uid 65534 (nobody) has no grant for share 'photos'" in err
    code, _, err = await run("grant", "no-such-user-x", "--share", "photos")
    assert code == 4 and "no user 'no-such-user-x' on this device" in err
    code, _, err = await run("grant", "nobody")
    assert code == 2 and "--share" in err
    assert main(["grant", "--help"]) == 0
    assert "p2psync grant alice --share photos --read-only" in run.capsys.readouterr().out


@needs_root
def test_an_app_gets_the_daemon_refused_exit_code_outside_its_grant() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as top:  # reachable for the app's uid
        os.chmod(top, 0o755)
        daemon = AppsDaemon(Path(top), "a")
        with running(daemon):
            daemon.call("put", collection="notes", key="a", value=1)
            daemon.call("grant", app=APP_UID, share="default", collection="notes", read_only=True)
            socket_args = ["--socket", str(daemon.socket_path)]
            got = run_cli_as(APP_UID, *socket_args, "get", "notes", "a")
            assert (got.returncode, got.stdout) == (0, "1\n"), got.stderr
            put = run_cli_as(APP_UID, *socket_args, "put", "notes", "a", "2")
            assert put.returncode == 1
            assert f"app uid {APP_UID} may only read collection 'notes'" in put.stderr
            assert "`p2psync grants`" in put.stderr
            status = run_cli_as(APP_UID, *socket_args, "status")
            assert status.returncode == 0, status.stderr
            assert f"you are an app here (uid {APP_UID})" in status.stdout
            assert "notes" in status.stdout
            peers = run_cli_as(APP_UID, *socket_args, "peers")
            assert peers.returncode == 1 and "only admins of this device may" in peers.stderr
            ui = run_cli_as(APP_UID, *socket_args, "ui", "--no-open")
            assert ui.returncode == 1 and "may not use 'ui_link'" in ui.stderr


def test_ui_prints_a_one_time_link_and_opens_no_browser_without_a_display(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    opened: list[str] = []
    monkeypatch.setattr(cli_commands.webbrowser, "open", opened.append)
    daemon = DaemonProcess(tmp_path, "kitchen", ui_port=0)
    with running(daemon):
        socket_args = ["--socket", str(daemon.socket_path)]
        assert main([*socket_args, "ui"]) == 0
        printed = capsys.readouterr().out
        assert re.match(r"http://127\.0\.0\.1:\d+/login\?token=[\w-]+\n\(works once", printed)
        assert "open it in a browser on this device" in printed and not opened
        assert main([*socket_args, "--json", "ui"]) == 0
        link = json.loads(capsys.readouterr().out)
        assert link["url"] not in printed and link["expires_in"] == 120
        monkeypatch.setenv("DISPLAY", ":0")
        assert main([*socket_args, "ui", "--no-open"]) == 0 and not opened


# --version, -q and -v -------------------------------------------------------------------------


def test_version_is_the_packages_one_source(capsys: pytest.CaptureFixture[str]) -> None:
    from p2psync import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"p2psync {__version__}\n"


async def test_quiet_leaves_out_confirmations_but_not_answers(run: Run) -> None:
    assert await run.ok("-q", "put", "notes", "a", "1") == ""
    assert await run.ok("put", "notes", "b", "2", "--quiet") == ""
    assert await run.ok("-q", "get", "notes", "a") == "1\n", "what was asked for is printed"
    assert json.loads(await run.ok("-q", "--json", "rm", "notes", "b"))["position"] > 0
    assert await run.ok("-q", "rm", "notes", "a") == ""
    code, out, err = await run("-q", "get", "notes", "missing")
    assert code == 4 and out == "" and "no record notes/missing" in err, "errors are never left out"


async def test_verbose_names_the_control_socket_and_the_last_of_q_and_v_wins(run: Run) -> None:
    code, out, err = await run("-v", "get", "notes", "missing")
    assert code == 4 and f"p2psync: control socket {run.served.path}\n" in err
    code, out, err = await run("-v", "put", "notes", "a", "1", "-q")
    assert (code, out) == (0, "") and "control socket" not in err
