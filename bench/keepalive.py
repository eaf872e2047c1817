"""What idle sessions cost: bytes, packets and CPU per idle session and minute, this code against
the keep-alive of an older commit, in the same run (issue 13: liveness).

Three households of `--devices` real daemons (a full mesh of static peers, discovery off), each
household on its own bridged LAN of network namespaces (tests/netns.py), run side by side:
- `none`: the daemons do not trust each other, so there is no session: what daemons and kernels
  cost with nothing to say (the baseline subtracted from the other two);
- `old`: the code of `--old-ref` (default: the commit before the liveness change, which pinged
  every idle_timeout/3 = 20 s and answered every ping with a pong; gone after 60 s);
- `new`: this checkout (ping every 3 s when nothing else was sent, no pongs; gone after 8 s).
Once every session is up and has settled, the figures are taken over `--seconds`: the frames on
every host's cable (the sum of each host's eth0 transmit counters: every frame, TCP/IP headers
and acknowledgements included, counted once), the daemons' application bytes (`peers`), and the
daemons' CPU time (/proc, all threads). Per session = (household - baseline) / sessions.

Needs root and iproute2. Sends nothing on the machine's own interfaces: everything happens
inside namespaces it creates and removes. Ends with one line `RESULT {json}`; asserts nothing.

    .venv/bin/python bench/keepalive.py                 # 60 s of idling, 4 devices each
    .venv/bin/python bench/keepalive.py --seconds 300 --devices 2
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import as_shipped
from bench.sync import cpu_seconds, pid_of
from tests.daemons import DaemonProcess, introduce, running, wait_for
from tests.netns import Host, netns_hosts, netns_unavailable_reason

REPO = Path(__file__).resolve().parent.parent
# The last commit before the keep-alive of issue 13: its pings went every idle_timeout / 3
# (60 s by default, so 20 s) and each was answered with a pong.
OLD_REF = "85fd3b52d1d0adde134fec38849be33c189db800"
SETTLE_SECONDS = 5.0
VARIANTS = ("none", "old", "new")


class CodeDaemon(DaemonProcess):
    """A daemon running the p2psync package found in `code` (a checkout or an exported tree),
    whatever the current directory or the installed package is."""

    def __init__(self, *args: Any, code: Path, **kwargs: Any) -> None:
        self.code = code
        super().__init__(*args, **kwargs)

    def ui_config(self) -> list[str]:
        # code from before the web UI refuses a [ui] section, and has no UI to switch off
        return super().ui_config() if self.code == REPO else []

    def command(self) -> list[str]:
        # -P: the current directory does not come first on sys.path, PYTHONPATH does
        command = [
            sys.executable,
            "-P",
            "-m",
            "p2psync",
            "daemon",
            "--config",
            str(self.config_path),
        ]
        assert self.netns is not None
        return ["ip", "netns", "exec", self.netns, *command]

    def start(self, wait: bool = True, env: dict[str, str] | None = None) -> "CodeDaemon":
        super().start(wait, {"PYTHONPATH": str(self.code), **(env or {})})
        return self


def export_old_code(ref: str, target: Path) -> Path:
    target.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "p2psync"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def cable_counters(hosts: list[Host]) -> tuple[int, int]:
    """Bytes and packets that all hosts put on their cables (each frame counted once)."""
    total_bytes = total_packets = 0
    for host in hosts:
        shown = subprocess.run(
            ["ip", "-j", "-s", "-n", host.namespace, "link", "show", host.iface],
            capture_output=True,
            text=True,
            check=True,
        )
        sent = json.loads(shown.stdout)[0]["stats64"]["tx"]
        total_bytes += sent["bytes"]
        total_packets += sent["packets"]
    return total_bytes, total_packets


def app_bytes(daemons: list[CodeDaemon]) -> int:
    return sum(peer["bytes_sent"] for daemon in daemons for peer in daemon.call("peers"))


def all_connected(daemons: list[CodeDaemon]) -> bool:
    return all(
        sum(peer["connected"] for peer in daemon.call("peers")) == len(daemons) - 1
        for daemon in daemons
    )


def household(stack: ExitStack, workdir: Path, variant: str, devices: int, code: Path):
    hosts = stack.enter_context(netns_hosts(devices))
    daemons = [
        CodeDaemon(
            workdir / variant, f"{variant}{i}", netns=host.namespace, host=host.ip, code=code
        )
        for i, host in enumerate(hosts)
    ]
    if variant != "none":  # the baseline must not even dial: strangers' refusals cost too
        for daemon in daemons:
            daemon.peers = [other.address for other in daemons if other is not daemon]
            daemon.write_config()
    return hosts, daemons


def snapshot(hosts: list[Host], daemons: list[CodeDaemon], sessions: bool) -> dict[str, float]:
    wire_bytes, packets = cable_counters(hosts)
    return {
        "at": time.monotonic(),
        "cpu_s": sum(cpu_seconds(pid_of(daemon)) for daemon in daemons),
        "wire_bytes": wire_bytes,
        "packets": packets,
        "app_bytes": app_bytes(daemons) if sessions else 0,
    }


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    old_code = export_old_code(args.old_ref, workdir / "old-code")
    codes = {"none": REPO, "old": old_code, "new": REPO}
    sessions = args.devices * (args.devices - 1) // 2
    with ExitStack() as stack:
        houses = {
            variant: household(stack, workdir, variant, args.devices, codes[variant])
            for variant in VARIANTS
        }
        every = [daemon for _, daemons in houses.values() for daemon in daemons]
        stack.enter_context(running(*every))
        for variant in ("old", "new"):
            daemons = houses[variant][1]
            introduce(*daemons)
            wait_for(lambda d=daemons: all_connected(d), f"the {variant} mesh", *daemons)
        time.sleep(SETTLE_SECONDS)  # hellos, caught_up, the first haves: not idle cost
        before = {v: snapshot(*houses[v], sessions=v != "none") for v in VARIANTS}
        time.sleep(args.seconds)
        after = {v: snapshot(*houses[v], sessions=v != "none") for v in VARIANTS}
        for variant in ("old", "new"):
            if not all_connected(houses[variant][1]):
                raise RuntimeError(f"a session of the {variant} mesh ended while idle")
    minutes = {v: (after[v]["at"] - before[v]["at"]) / 60 for v in VARIANTS}
    rate = {
        v: {k: (after[v][k] - before[v][k]) / minutes[v] for k in before[v] if k != "at"}
        for v in VARIANTS
    }
    per_session = {
        v: {
            "wire_bytes_per_min": round(
                (rate[v]["wire_bytes"] - rate["none"]["wire_bytes"]) / sessions
            ),
            "packets_per_min": round((rate[v]["packets"] - rate["none"]["packets"]) / sessions, 1),
            "app_bytes_per_min": round(rate[v]["app_bytes"] / sessions),
            "cpu_ms_per_min": round(
                (rate[v]["cpu_s"] - rate["none"]["cpu_s"]) * 1000 / sessions, 1
            ),
        }
        for v in ("old", "new")
    }
    return {
        "seconds": args.seconds,
        "devices": args.devices,
        "sessions_per_household": sessions,
        "old_ref": args.old_ref,
        "baseline_cpu_ms_per_min_per_daemon": round(rate["none"]["cpu_s"] * 1000 / args.devices, 1),
        "baseline_wire_bytes_per_min": round(rate["none"]["wire_bytes"]),
        "per_session": per_session,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="idle time measured")
    parser.add_argument("--devices", type=int, default=4, help="daemons per household (>= 2)")
    parser.add_argument("--old-ref", default=OLD_REF, help="the git commit to compare with")
    args = parser.parse_args()
    reason = netns_unavailable_reason()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    as_shipped()
    if args.devices < 2:
        parser.error("--devices must be at least 2")
    with tempfile.TemporaryDirectory(prefix="p2ps-keepalive-") as tmp:
        result = measure(args, Path(tmp))
    for variant, figures in result["per_session"].items():
        print(
            f"{variant}: per idle session and minute (both ends): "
            f"{figures['wire_bytes_per_min']} bytes on the wire in {figures['packets_per_min']} "
            f"packets ({figures['app_bytes_per_min']} bytes of frames), "
            f"{figures['cpu_ms_per_min']} ms CPU"
        )
    print(
        f"baseline (no session): {result['baseline_cpu_ms_per_min_per_daemon']} ms CPU per daemon "
        f"and minute, {result['baseline_wire_bytes_per_min']} bytes on the wire per minute"
    )
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
