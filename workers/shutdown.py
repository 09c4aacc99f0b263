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
Celery's wait for its threads ends and the process exits. A run inside a step with no safe point
that outlasts the grace (a long tool call) is handed back when that step ends; if the orchestrator
kills the process first, it is resumed after its lease, as before.

Only this module's state is touched from the signal handler: a float, no lock, no log line.
"""

import time

from django.conf import settings

MAX_MARGIN_SECONDS = 2.0

_hand_back_at: float | None = None  # time.monotonic() from which the runs in flight hand back


def begin() -> None:
    """The worker shuts down: claim nothing more, hand the runs back once their grace has passed.
    Called from Celery's signal handler; a second signal changes nothing."""
    global _hand_back_at
    if _hand_back_at is None:
        grace = settings.WORKER_SHUTDOWN_GRACE_SECONDS
        _hand_back_at = time.monotonic() + grace - min(MAX_MARGIN_SECONDS, grace / 4)


def stopping() -> bool:
    """No claim: the worker is shutting down."""
    return _hand_back_at is not None


def hand_back_due() -> bool:
    """A run in flight stops at this safe point and is handed back."""
    return _hand_back_at is not None and time.monotonic() >= _hand_back_at
