"""How busy the machine was while a block of steps ran: CPU steal and other processes' CPU use, from ``/proc``.

A block is bracketed by two :class:`Snapshot` s. From ``/proc/stat``'s ``cpu`` line (all CPUs) and this process's
``/proc/self/stat`` (fields 14-15, utime and stime of all its threads), both in clock ticks:

* ``steal``: time the hypervisor ran other guests on our vCPUs, as a fraction of the block's CPU time
  (wall time x CPUs);
* ``others_cores``: CPU time of everything but this process (user, nice, system, irq, softirq of the machine
  minus our own utime + stime), divided by the wall time: the number of cores other processes kept busy on
  average.

The clock tick is 10 ms on Linux, so a block must last a few hundred milliseconds for a useful reading
(:data:`MIN_BLOCK_SECONDS`); the paired rounds of :mod:`benchmarks.paired` time their steps in blocks of at least
that long. Off Linux nothing is read and blocks are never flagged (``available`` is False).

A block is **contaminated** when steal exceeds :data:`MAX_STEAL` or other processes used more than
:data:`MAX_OTHERS_CORES` cores: on a 2-core machine one busy neighbour process is enough to make a framework whose
threads meet at barriers wait whole scheduler time slices, so a small step can take many times its usual time
(measurements in docs/performance.md).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

#: Steal above this fraction of the block's CPU time contaminates it.
MAX_STEAL = 0.10
#: Other processes keeping more than this many cores busy (on average over the block) contaminate it.
MAX_OTHERS_CORES = 0.25
#: Blocks shorter than this are too short for clock-tick accounting (10 ms ticks: 5 % of a core at 0.2 s).
MIN_BLOCK_SECONDS = 0.2

_PROC_STAT = Path("/proc/stat")
_SELF_STAT = Path("/proc/self/stat")


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Machine and process CPU counters at one instant (clock ticks), and the monotonic time."""

    wall: float
    busy: int  # user + nice + system + irq + softirq of all CPUs
    steal: int
    own: int  # utime + stime of this process
    cpus: int
    available: bool = True


def snapshot() -> Snapshot:
    """Read the counters now (a Snapshot with ``available=False`` where /proc is missing)."""
    now = time.monotonic()
    try:
        fields = _PROC_STAT.read_text().splitlines()[0].split()
        own_fields = _SELF_STAT.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return Snapshot(now, 0, 0, 0, os.cpu_count() or 1, available=False)
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    # /proc/self/stat after "(comm)": field 3 is state, so utime (field 14) and stime (15) are at 11 and 12.
    own = int(own_fields[11]) + int(own_fields[12])
    return Snapshot(now, user + nice + system + irq + softirq, steal, own, os.cpu_count() or 1)


def usage(start: Snapshot, end: Snapshot) -> dict[str, Any]:
    """Steal fraction, other processes' cores and this process's cores between two snapshots, with the verdict.

    ``{"seconds", "steal", "others_cores", "own_cores", "contaminated", "reason"}``; the fractions are None and
    ``contaminated`` False when the counters are not available."""
    seconds = max(end.wall - start.wall, 1e-9)
    if not (start.available and end.available):
        return {"seconds": seconds, "steal": None, "others_cores": None, "own_cores": None,
                "contaminated": False, "reason": "no /proc counters on this platform"}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = (end.busy - start.busy) / tick
    own = (end.own - start.own) / tick
    steal = (end.steal - start.steal) / tick / (seconds * end.cpus)
    others = max(0.0, busy - own) / seconds
    reasons = []
    if steal > MAX_STEAL:
        reasons.append(f"steal {steal:.0%} > {MAX_STEAL:.0%}")
    if others > MAX_OTHERS_CORES:
        reasons.append(f"other processes used {others:.2f} cores > {MAX_OTHERS_CORES}")
    return {"seconds": seconds, "steal": steal, "others_cores": others, "own_cores": own / seconds,
            "contaminated": bool(reasons), "reason": "; ".join(reasons)}
