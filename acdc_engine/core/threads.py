"""How many CPU threads a run's tensor work uses.

torch's default (one thread per core of the machine) is slow on a shared machine: threads that wait
for a core another process holds stall every parallel operation. The policy (``thread_count``):

1. A count the user gave (``threads=N``, or ``OMP_NUM_THREADS`` in the environment) is used as is.
2. Otherwise: the CPUs this process may use (``usable_cpus``: its CPU affinity, capped by its
   cgroup's CPU quota), less the CPUs other processes keep busy (``busy_cpus``: sampled from
   ``/proc/stat`` over ``SAMPLE_SECONDS`` on those CPUs, this process's own time taken out), and at
   most one thread per ``ELEMENTS_PER_THREAD`` elements of the work (a pass over n_prompts x
   n_tokens x d_model): small work stays on one thread, where more threads only add overhead.
   Never fewer than one.

Results do not depend on the count: the patched pass's values are the same bits for every thread
count (``tests/test_threads.py``), so the policy changes time only. ``using_threads`` applies a count
for the duration of a run and restores the previous one.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from acdc_engine.core.errors import AcdcError

ELEMENTS_PER_THREAD = 1 << 20
"""Elements of one pass (n_prompts x n_tokens x d_model) below which one more thread does not pay."""
SAMPLE_SECONDS = 0.05
"""How long ``busy_cpus`` watches the CPUs."""


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity set, capped by its cgroup v2 CPU quota (``cpu.max``)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota()
    return max(1, min(count, math.ceil(quota)) if quota is not None else count)


def _cgroup_quota() -> float | None:
    """The cgroup v2 CPU quota in CPUs (``cpu.max``: "quota period"), None when unlimited or unreadable."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def busy_cpus(seconds: float = SAMPLE_SECONDS) -> float | None:
    """How many of this process's usable CPUs other processes keep busy, from ``/proc/stat`` over
    ``seconds`` (this process's own CPU time taken out); None where ``/proc/stat`` cannot be read."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    before, own_before, start = _cpu_times(cpus), time.process_time(), time.monotonic()
    if before is None:
        return None
    time.sleep(seconds)
    after, own_after, elapsed = _cpu_times(cpus), time.process_time(), time.monotonic() - start
    if after is None or elapsed <= 0:
        return None
    busy = (after[0] - before[0]) / _ticks_per_second() - (own_after - own_before)
    return max(0.0, busy / elapsed)


def _cpu_times(cpus: set[int] | None) -> tuple[int, int] | None:
    """(busy ticks, idle ticks) summed over ``cpus`` (None: every CPU) from ``/proc/stat``."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    busy = idle = 0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or (cpus is not None and int(name[3:]) not in cpus):
            continue
        ticks = [int(f) for f in fields[:8]]
        idle_ticks = ticks[3] + ticks[4]  # idle, iowait
        busy += sum(ticks) - idle_ticks
        idle += idle_ticks
    return busy, idle


def _ticks_per_second() -> int:
    return os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def thread_count(work_elements: int, requested: int | None = None) -> int:
    """The thread count for work of ``work_elements`` elements per pass (module docstring):
    ``requested`` or ``OMP_NUM_THREADS`` when given, else the free usable CPUs, at most one per
    ``ELEMENTS_PER_THREAD`` elements, at least 1."""
    if requested is not None:
        if requested < 1:
            raise AcdcError(f"threads must be at least 1 (or None: chosen from the work and the free CPUs), got {requested}")
        return requested
    from_environment = os.environ.get("OMP_NUM_THREADS", "").strip()
    if from_environment.isdigit() and int(from_environment) > 0:
        return int(from_environment)
    wanted = max(1, work_elements // ELEMENTS_PER_THREAD)
    if wanted == 1:
        return 1
    usable = usable_cpus()
    busy = busy_cpus()
    free = usable if busy is None else usable - round(busy)
    return max(1, min(wanted, free))


@contextmanager
def using_threads(count: int) -> Iterator[int]:
    """torch uses ``count`` threads inside the block; the previous count is restored after it."""
    import torch

    previous = torch.get_num_threads()
    if count != previous:
        torch.set_num_threads(count)
    try:
        yield count
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
