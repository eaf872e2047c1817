"""Keeping the daemon's threads on one processor (`process.one_cpu`).

The event loop and the database thread take CPython's GIL in turn at every SQLite call. On two
processors each hand-over wakes the other thread across them, which cost more than it saved:
16 concurrent writers 3.8k -> 5.2k puts/s and 285 -> 182 us of CPU per put once the daemon
kept to one (docs/architecture.md, "One processor"). The kernel still moves every other program
off a busy processor. This module only picks and sets the affinity, once at start, before any
thread exists (threads inherit it); it never changes it later and never fails the start. The
processors it keeps off are the control front-end's (control/front_ends.py).
"""

import logging
import os

log = logging.getLogger(__name__)

_left: set[int] = set()  # the processors the daemon may use but keeps off, set once at start

_PROCESSOR_FIELD = 38  # of /proc/<pid>/stat, counting from 0 at the pid


def running_processor(stat: str) -> int:
    """The processor a task last ran on, from its /proc stat line (the name in parentheses may
    hold spaces and parentheses itself, so fields are counted after its last ')')."""
    after_name = stat.rsplit(")", 1)[1].split()
    return int(after_name[_PROCESSOR_FIELD - 2])


def keep_to_one_processor() -> int | None:
    """Confine this thread, and so every thread it starts, to the processor it runs on (or the
    lowest it may use). The processor, or None where there is no choice or no way to make it."""
    try:
        allowed = os.sched_getaffinity(0)
        if len(allowed) < 2:
            return None
        with open("/proc/thread-self/stat") as stat:
            processor = running_processor(stat.read())
        if processor not in allowed:
            processor = min(allowed)
        os.sched_setaffinity(0, {processor})
        _left.update(allowed - {processor})
    except (OSError, ValueError, IndexError) as exc:
        log.info("running on every processor: cannot keep to one (%s)", exc)
        return None
    return processor


def processors_for_helpers() -> frozenset[int] | None:
    """Where a helper process (the control front-end) should run: the processors the daemon
    keeps off; empty: anywhere the daemon may; None: nowhere but the daemon's only one."""
    if _left:
        return frozenset(_left)
    try:
        return frozenset() if len(os.sched_getaffinity(0)) > 1 else None
    except OSError:
        return None
