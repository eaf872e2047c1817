"""`python -m tests.frame_tap daemon --config ...`: the real `p2psync` command, with every byte
its sync sessions receive recorded, per peer (not a test module itself).

Sessions are mutual TLS 1.3, so nothing outside the daemon can read them. This tap sits where
the daemon itself first sees the plaintext: `SyncConnection.receive_data`, which the receiver
of every session calls with exactly the bytes TLS delivered (hellos, vectors, entries, haves,
directs, pings, byes). It appends them, unchanged, to `<peer device id>.bin` in the directory
named by $P2PSYNC_FRAME_TAP and changes nothing else; it also writes where the package was
imported from to `origin` there, so a test can check the daemon ran this tree's code.
"""

import os
import sys
from pathlib import Path

import p2psync
from p2psync.session import SyncConnection

TAP_VARIABLE = "P2PSYNC_FRAME_TAP"


def install(directory: Path) -> None:
    receive = SyncConnection.receive_data

    def recording_receive_data(self: SyncConnection, data: bytes) -> None:
        with open(directory / f"{self.expected_peer_id}.bin", "ab") as tap:
            tap.write(data)
        receive(self, data)

    directory.mkdir(parents=True, exist_ok=True)
    SyncConnection.receive_data = recording_receive_data  # type: ignore[method-assign]
    (directory / "origin").write_text(p2psync.__file__)


if __name__ == "__main__":
    install(Path(os.environ[TAP_VARIABLE]))
    from p2psync.cli import main

    if os.environ.get("P2PSYNC_SCHEMA_CHECK") == "1":  # the control lines checked as well
        from tests.schema_check import install as check_control_lines
        from tests.schema_daemon import _append

        check_control_lines(_append)
    sys.exit(main(sys.argv[1:]))
