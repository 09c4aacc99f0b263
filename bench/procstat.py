"""CPU and memory of the machine and of process trees, read from /proc (Linux only).

- machine CPU busy: /proc/stat deltas (everything but idle and iowait), as a % of all cores;
- a process tree's CPU: utime + stime + cutime + cstime of the root and its live descendants (a
  child that exited and was reaped is in its parent's cutime/cstime, so nothing is lost or
  counted twice);
- a process tree's RSS: the sum of VmRSS of the root and its descendants.
"""

import os
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user/nice
    return total - idle, total


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, CPU ticks incl. reaped children) of every visible process."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
        ppid = int(fields[1])
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        table[int(entry.name)] = (ppid, utime + stime + cutime + cstime)
    return table


def _tree(root: int, table: dict, include_children: bool = True) -> list[int]:
    if root not in table:
        return []
    if not include_children:
        return [root]
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, []))
    return pids


def tree_rss_mb(root: int | None) -> float:
    if root is None:
        return 0.0
    total_kb = 0
    for pid in _tree(root, _process_table()):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
                    break
        except OSError:
            continue
    return total_kb / 1024


def tree_size(root: int | None) -> int:
    return len(_tree(root, _process_table())) if root else 0


class CpuMeter:
    """CPU used between start() and stop(): machine busy % and CPU seconds per process kind.

    `kinds` maps a name to (root pid, include its descendants); pids may be None (not known)."""

    def __init__(self, kinds: dict[str, tuple[int | None, bool]]):
        self.kinds = {name: spec for name, spec in kinds.items() if spec[0]}

    def _snapshot(self):
        table = _process_table()
        per_kind = {
            name: sum(table[pid][1] for pid in _tree(root, table, children) if pid in table)
            for name, (root, children) in self.kinds.items()
        }
        return time.perf_counter(), _machine_ticks(), per_kind

    def start(self) -> "CpuMeter":
        self._start = self._snapshot()
        return self

    def stop(self) -> dict:
        end = self._snapshot()
        (t0, (busy0, total0), kinds0), (t1, (busy1, total1), kinds1) = self._start, end
        return {
            "seconds": t1 - t0,
            "machine_busy_pct": 100.0 * (busy1 - busy0) / max(1, total1 - total0),
            "cpu_seconds": {name: (kinds1[name] - kinds0.get(name, 0)) / CLOCK_TICKS for name in kinds1},
        }
