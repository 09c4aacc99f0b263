"""`make run`'s process supervisor: a child that exits is started again, with backoff, and logged.

Without it one child's death (`worker exited with code -9`) stopped the whole platform. A child
that dies is restarted after a pause that doubles with each quick death (from MIN_BACKOFF up to
MAX_BACKOFF), so one that cannot start does not spin; a child that ran HEALTHY_AFTER seconds
starts over at MIN_BACKOFF. Each child is its own session (process group), so a stop or a kill
reaches its own children too (Celery's threads, uvicorn's).
"""

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

MIN_BACKOFF = 1.0
MAX_BACKOFF = 30.0
HEALTHY_AFTER = 60.0


@dataclass
class Child:
    name: str
    command: list[str]
    env: dict
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    backoff: float = MIN_BACKOFF
    restart_at: float | None = None  # set while it waits to be started again
    restarts: int = 0


class Supervisor:
    def __init__(
        self,
        commands: dict[str, tuple[list[str], dict]],
        log: Callable[[str], None],
        on_exit: Callable[[int], None] | None = None,
        **timings,
    ):
        """`on_exit(pid)` is called for each child that exited (e.g. to drop its live metrics)."""
        self.children = {name: Child(name, command, env) for name, (command, env) in commands.items()}
        self.log = log
        self.on_exit = on_exit
        self.min_backoff = timings.get("min_backoff", MIN_BACKOFF)
        self.max_backoff = timings.get("max_backoff", MAX_BACKOFF)
        self.healthy_after = timings.get("healthy_after", HEALTHY_AFTER)
        for child in self.children.values():
            child.backoff = self.min_backoff

    def start(self) -> None:
        for child in self.children.values():
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        child.process = subprocess.Popen(child.command, env=child.env, start_new_session=True)
        child.started_at, child.restart_at = time.monotonic(), None
        self.log(f"{child.name} started (pid {child.process.pid})")

    def pid(self, name: str) -> int:
        return self.children[name].process.pid

    def poll(self) -> None:
        """One round: note the children that exited, start again those whose pause is over."""
        now = time.monotonic()
        for child in self.children.values():
            if child.restart_at is None and child.process.poll() is not None:
                if now - child.started_at >= self.healthy_after:
                    child.backoff = self.min_backoff
                child.restart_at = now + child.backoff
                self.log(
                    f"{child.name} (pid {child.process.pid}) exited with code {child.process.returncode}; "
                    f"restarting in {child.backoff:g} s"
                )
                child.backoff = min(child.backoff * 2, self.max_backoff)
                if self.on_exit is not None:
                    self.on_exit(child.process.pid)
            if child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self._spawn(child)

    def run(self, stopping: Callable[[], bool], interval: float = 0.2) -> None:
        while not stopping():
            self.poll()
            time.sleep(interval)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to every child's process group, SIGKILL to what is left after `timeout`."""
        running = [c.process for c in self.children.values() if c.process and c.process.poll() is None]
        for process in running:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass
