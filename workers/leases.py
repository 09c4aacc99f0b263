"""The leases of every run in flight in a worker process, renewed by one thread, and their time limits.

One thread per process renews all its runs' leases in one UPDATE every third of the lease length
(a thread per run costed a thread start and a statement per run per renewal). The same statement
reports `cancel_requested` (a run that writes no events, e.g. waiting on media, learns of a cancel)
and which leases were lost (the run stops at its next check; its writes are fenced anyway).

Time limits: Celery's threads pool applies none, so they are ours. Past the soft limit a run fails
itself with `time_limit_exceeded` at its next step or chunk (`ExecutionRun.check_cancel`); past the
hard limit this thread fails it in the database (a fenced transition), so its thread, even if stuck
in a call that never returns, can no longer write anything, and the client gets its `error` event.

Like the event writer, the thread is started in worker processes only (workers/tasks.py, on `worker_init`); a run
elsewhere (a test process) holds its lease for the claim's length without renewal.
"""

import logging
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import connection

from executions import services

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class HeldLease:
    execution: object
    attempt: int
    hard_deadline: float  # time.time() past which the run is failed from here
    lost: bool = False
    cancel_requested: bool = False


class LeaseRenewer(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True, name="lease-renewer")
        self._held: set[HeldLease] = set()
        self._lock = threading.Lock()

    def hold(self, lease: HeldLease) -> None:
        with self._lock:
            self._held.add(lease)

    def release(self, lease: HeldLease) -> None:
        with self._lock:
            self._held.discard(lease)

    def held(self) -> list[HeldLease]:
        with self._lock:
            return list(self._held)

    def run(self) -> None:
        while True:
            time.sleep(settings.EXECUTION_LEASE_SECONDS / 3)
            try:
                self.renew()
            except Exception:  # e.g. PostgreSQL is down: try again next time, leases may expire meanwhile
                logger.exception("could not renew the leases")
                connection.close()

    def renew(self) -> None:
        with self._lock:
            held = list(self._held)
        now = time.time()
        for lease in [lease for lease in held if now > lease.hard_deadline]:
            self._fail_at_hard_limit(lease)
        held = [lease for lease in held if not lease.lost]
        renewed = services.renew_leases([(lease.execution.id, lease.attempt) for lease in held])
        for lease in held:
            if lease.execution.id in renewed:
                lease.cancel_requested = lease.cancel_requested or renewed[lease.execution.id]
            else:
                lease.lost = True
                self.release(lease)

    def _fail_at_hard_limit(self, lease: HeldLease) -> None:
        lease.lost = True
        self.release(lease)
        limit = settings.EXECUTION_HARD_TIME_LIMIT_SECONDS
        if services.do_fail_execution(
            lease.execution,
            lease.attempt,
            "time_limit_exceeded",
            f"The execution ran longer than the hard time limit of {limit} s.",
        ):
            logger.warning("execution %s: failed at the hard time limit (%s s)", lease.execution.id, limit)


_renewer: LeaseRenewer | None = None


def start_renewer() -> None:
    global _renewer
    if _renewer is None:
        _renewer = LeaseRenewer()
        _renewer.start()


def hold_lease(execution, attempt: int) -> HeldLease:
    """Register a claimed run: its lease is renewed until `release_lease`, its hard limit enforced."""
    lease = HeldLease(execution, attempt, time.time() + settings.EXECUTION_HARD_TIME_LIMIT_SECONDS)
    if _renewer is not None:
        _renewer.hold(lease)
    return lease


def release_lease(lease: HeldLease) -> None:
    if _renewer is not None:
        _renewer.release(lease)


def held_leases() -> list[HeldLease]:
    """The leases of the runs in flight in this process (none outside a worker process)."""
    return _renewer.held() if _renewer is not None else []
