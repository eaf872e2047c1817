"""Time to resume sync after a partition heals (issue 9): two daemons in network namespaces.

Two `p2psync daemon` processes, each in its own namespace on one bridged LAN (tests/netns.py),
find each other by mDNS and trust each other. Then b's cable is pulled for `--partition` seconds
(180 by default); meanwhile a's own host answers a's connects to b with "host unreachable", so
that both dialers back off as they would on a LAN where a router says so (without it a's dialer
spends most of a short partition waiting on neighbour discovery instead). The cable goes back
in, a write is made on each side at once, and the time until each arrives on the other side is
the figure. `--cut drop` instead drops every frame between the two on the switch (nftables),
which neither host can notice: only the dialers' back-off ends that one.

Needs root, iproute2 and nft. Sends nothing on the machine's own interfaces: everything happens
inside namespaces it creates and removes. Ends with one line `RESULT {json}`; asserts nothing.

    .venv/bin/python bench/resume.py                 # one 3-minute partition
    .venv/bin/python bench/resume.py --partition 20 --runs 3
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import as_shipped
from p2psync.liveness import DEFAULT_LIMIT_SECONDS
from tests.daemons import introduce, running, wait_for, wait_for_value
from tests.netns import Host, netns_hosts, netns_unavailable_reason
from tests.test_household import connected_to, cut_between, heal_cuts, lan_daemon
from tests.test_reconnect import heal, partition


def one_run(
    workdir: Path, seconds: float, cut: str, reconnect_max: float, idle_timeout: float
) -> dict[str, Any]:
    with netns_hosts(2) as hosts:
        host_a, host_b = hosts
        a, b = (
            lan_daemon(workdir, host, name, reconnect_max=reconnect_max, idle_timeout=idle_timeout)
            for host, name in ((host_a, "a"), (host_b, "b"))
        )
        with running(a, b):
            introduce(a, b)
            wait_for(lambda: connected_to(a, b.device_id) and connected_to(b, a.device_id), "a-b")
            a.call("put", collection="bench", key="before", value=1)
            wait_for_value(b, "bench", "before", 1)
            cut_at = time.monotonic()
            cut_off(host_a, host_b, cut)
            ended = wait_for(
                lambda: not connected_to(a, b.device_id) and not connected_to(b, a.device_id),
                "the sessions across the cut to end",
                a,
                b,
                timeout=seconds + 120,
            )
            sessions_ended = time.monotonic() - cut_at if ended else None
            time.sleep(max(0.0, cut_at + seconds - time.monotonic()))
            reconnect(host_a, host_b, cut)
            healed_at = time.monotonic()
            a.call("put", collection="bench", key="after-a", value="a")
            b.call("put", collection="bench", key="after-b", value="b")
            timeout = reconnect_max + 60
            wait_for_value(b, "bench", "after-a", "a", timeout=timeout)
            a_to_b = time.monotonic() - healed_at
            wait_for_value(a, "bench", "after-b", "b", timeout=timeout)
            b_to_a = time.monotonic() - healed_at
    return {
        "partition_s": round(healed_at - cut_at, 1),
        "sessions_ended_s": round(sessions_ended or 0.0, 1),
        "a_to_b_s": round(a_to_b, 3),
        "b_to_a_s": round(b_to_a, 3),
        "resume_s": round(max(a_to_b, b_to_a), 3),
    }


def cut_off(host_a: Host, host_b: Host, cut: str) -> None:
    if cut == "link":
        partition(host_a, host_b)
    else:
        cut_between(host_a, host_b)


def reconnect(host_a: Host, host_b: Host, cut: str) -> None:
    if cut == "link":
        heal(host_a, host_b)
    else:
        heal_cuts(host_a)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--partition", type=float, default=180.0, help="seconds (default 180)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--cut", choices=["link", "drop"], default="link")
    parser.add_argument("--reconnect-max", type=float, default=60.0, help="sync.reconnect_max")
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_LIMIT_SECONDS,
        help="sync.idle_timeout (sessions across the cut end this long into it; the daemon's "
        "default unless given)",
    )
    args = parser.parse_args()
    reason = netns_unavailable_reason()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    as_shipped()
    runs = []
    with tempfile.TemporaryDirectory(prefix="p2ps-resume-") as tmp:
        for number in range(args.runs):
            figures = one_run(
                Path(tmp) / f"run{number}",
                args.partition,
                args.cut,
                args.reconnect_max,
                args.idle_timeout,
            )
            runs.append(figures)
            print(
                f"run {number + 1}: partition {figures['partition_s']} s ({args.cut}), sessions "
                f"ended {figures['sessions_ended_s']} s into it; after healing a write on a "
                f"reached b in {figures['a_to_b_s']:.2f} s, one on b reached a in "
                f"{figures['b_to_a_s']:.2f} s",
                flush=True,
            )
    resumes = [run["resume_s"] for run in runs]
    result = {
        "partition_s": args.partition,
        "cut": args.cut,
        "reconnect_max_s": args.reconnect_max,
        "idle_timeout_s": args.idle_timeout,
        "runs": runs,
        "resume_median_s": round(statistics.median(resumes), 3),
        "resume_max_s": round(max(resumes), 3),
        "resume_min_s": round(min(resumes), 3),
    }
    print(
        f"time to resume after healing: median {result['resume_median_s']} s, "
        f"min {result['resume_min_s']} s, max {result['resume_max_s']} s"
    )
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
