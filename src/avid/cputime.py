"""CPU time of this process and the processes it started: the black box runs in its own worker
process (``avid.blackbox.worker``, forked by a forkserver this process started), so
``time.process_time()`` alone misses every base-model call of a method that queries it.

``cpu_seconds()`` adds the user + system time of this process's children that exited, and of its
live descendants with the children they reaped (a worker that exited is counted by the forkserver
that reaped it), read from Linux's ``/proc``; elsewhere it is this process's own time and its
reaped children's. Take differences of it around a piece of work."""

from __future__ import annotations

import os
import time
from pathlib import Path


def _proc_stats() -> dict[int, tuple[int, float]]:
    """``{pid: (parent pid, user + system seconds of it and of its reaped children)}`` of every process
    ``/proc`` shows."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # exited meanwhile, or not ours to read
            continue
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
        stats[int(entry.name)] = (int(fields[1]), sum(int(v) for v in fields[11:15]) / tick)  # utime..cstime
    return stats


def descendants_cpu_seconds(pid: int | None = None) -> float:
    """User + system seconds of the live descendants of ``pid`` (default: this process) and of the
    children they reaped; 0 where there is no ``/proc``."""
    if not Path("/proc/self/stat").exists():
        return 0.0
    root, stats = pid or os.getpid(), _proc_stats()
    children: dict[int, list[int]] = {}
    for p, (parent, _) in stats.items():
        children.setdefault(parent, []).append(p)
    total, todo = 0.0, list(children.get(root, []))
    while todo:
        p = todo.pop()
        total += stats[p][1]
        todo += children.get(p, [])
    return total


def cpu_seconds() -> float:
    """This process's CPU seconds (all threads) plus those of its reaped children and its live
    descendants (``descendants_cpu_seconds``)."""
    reaped = os.times()
    return time.process_time() + reaped.children_user + reaped.children_system + descendants_cpu_seconds()
