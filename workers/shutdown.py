"""A worker process told to stop (SIGTERM: a deploy, a scale-down) hands its runs back instead of
holding them to the end.

Why: Celery's warm shutdown waits for every task in flight with no limit (the threads pool's
`executor.shutdown(wait=True)`, celery/concurrency/thread.py), and the orchestrator kills the
process after its own grace period (Kubernetes: 30 s); the executions of a killed worker then wait
for their leases to expire (15-25 s) before the reaper re-queues them.

So, from `begin()` (workers/tasks.py, on Celery's `worker_shutting_down`, sent from its SIGTERM
handler before the shutdown starts):
- the worker claims nothing more: a message it receives after it (prefetched, or delivered before
  Celery cancels its consumer) is published again for another worker and acked, its row untouched
  (workers/runtime.py);
- its runs in flight go on for WORKER_SHUTDOWN_GRACE_SECONDS less a margin, then each one still
  running stops at its next step or chunk, as for a cancel or a lost lease (`ExecutionRun.check_cancel`
  raises HandBack), and is handed back in one fenced transition: queued again from its last
  checkpoint, its lease cleared, a `resumed` event, its task published after commit
  (executions/services.py, `do_hand_back_execution`). Another worker claims it within a second.
The margin (a quarter of the grace, at most 2 s) is for the runs to reach their next safe point and
for the hand-backs' transactions and publishes, so that all is handed back within the grace, before
Celery's wait for its threads ends and the process exits.

A run inside a step with no safe point that outlasts the grace (a model that sends nothing for a
while, a long tool call) cannot stop itself: at the end of the grace the watchdog thread hands it
back from outside, by the same fenced transition, and marks its lease lost, as the lease renewer
does at the hard time limit (workers/leases.py). The other worker resumes it at once; this run's
writes are fenced from then on, and it stops at its next check (or with the process). Its step
may then run twice, as after a lost lease (server tools get the same Idempotency-Key).

From the signal handler only this module's state is touched: a float and an Event that no other
code of the main thread holds, no log line.
"""

import logging
import threading
import time

from django.conf import settings

from executions import services
from workers.leases import held_leases

logger = logging.getLogger(__name__)

MAX_MARGIN_SECONDS = 2.0

_hand_back_at: float | None = None  # time.monotonic() from which the runs in flight hand back
_grace_ends_at: float | None = None  # ... and from which the watchdog hands back what is left
_begun = threading.Event()


def begin() -> None:
    """The worker shuts down: claim nothing more, hand the runs back once their grace has passed.
    Called from Celery's signal handler; a second signal changes nothing."""
    global _hand_back_at, _grace_ends_at
    if _hand_back_at is None:
        grace = settings.WORKER_SHUTDOWN_GRACE_SECONDS
        _grace_ends_at = time.monotonic() + grace
        _hand_back_at = _grace_ends_at - min(MAX_MARGIN_SECONDS, grace / 4)
        _begun.set()


def stopping() -> bool:
    """No claim: the worker is shutting down."""
    return _hand_back_at is not None


def hand_back_due() -> bool:
    """A run in flight stops at this safe point and is handed back."""
    return _hand_back_at is not None and time.monotonic() >= _hand_back_at


def hand_back_stuck_runs() -> list:
    """At the end of the grace: hand back, from outside, the runs still holding their lease (stuck
    in a step); their threads stop at their next check. Returns their execution ids."""
    handed_back = []
    for lease in held_leases():
        if not lease.lost and services.do_hand_back_execution(lease.execution, lease.attempt):
            lease.lost = True
            handed_back.append(lease.execution.id)
    if handed_back:
        logger.warning("worker shutting down: handed back %s, still inside a step at the grace's end", handed_back)
    return handed_back


class Watchdog(threading.Thread):
    """Waits for `begin()`, then for the grace's end, then hands back the stuck runs, once."""

    def __init__(self):
        super().__init__(daemon=True, name="shutdown-watchdog")

    def run(self) -> None:
        _begun.wait()
        time.sleep(max(0.0, _grace_ends_at - time.monotonic()))
        try:
            hand_back_stuck_runs()
        except Exception:  # e.g. PostgreSQL is down: the leases expire and the reaper re-queues them
            logger.exception("could not hand back the runs still in flight")


_watchdog: Watchdog | None = None


def start_watchdog() -> None:
    """In a worker process (workers/tasks.py, on `worker_init`), once."""
    global _watchdog
    if _watchdog is None:
        _watchdog = Watchdog()
        _watchdog.start()
