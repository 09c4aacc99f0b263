"""A worker stopped with SIGTERM (a deploy) hands its runs back (workers/shutdown.py): it claims
nothing more, lets its runs go on for WORKER_SHUTDOWN_GRACE_SECONDS, then each one still running is
queued again from its checkpoint and another worker resumes it at once, not after its lease.

Live: real Celery worker processes (A and B) on the test database, the session's API server for the
streams; the session's own worker is stopped meanwhile so that A and B alone take executions. Their
lease is 30 s, so a resume by the reaper (after the lease) cannot pass for a hand-back. The races of
the hand-back's transition are driven in-process at the end."""

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.conf import settings

from accounts.credits import account_for, do_grant_credits
from accounts.models import ApiKeyKind, CreditAccount, CreditEntryKind, Customer
from accounts.services import issue_api_key
from agents.credit_rules import actual_cost
from config import celery_app
from executions import services
from executions.models import Execution, ExecutionEvent, ExecutionSource, ExecutionState
from executions.services import RUN_EXECUTION_TASK
from ops import processes
from tests.conftest import CeleryProcess, _celery_flags
from tests.factories import AgentFactory
from tests.helpers import execution_uuid, read_stream, wait_for
from workers import runtime, shutdown
from workers.leases import HeldLease
from workers.outcomes import Cancelled, HandBack
from workers.run import ExecutionRun

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

LEASE_SECONDS = 30
REPLY = " ".join(f"w{i}" for i in range(10))  # 10 words 100 ms apart: about 1 s per node
RULES = {"base": 10, "per_1k_tokens": 2, "max_tokens": 4000}


def workflow(nodes: int) -> dict:
    model = {"provider": "builtin", "reply": REPLY, "chunk_delay_ms": 100}
    return {"nodes": [{"id": f"n{i}", "type": "ai", "model": model} for i in range(nodes)]}


@pytest.fixture(scope="module")
def without_session_worker(worker):
    """The session's worker (lease 4 s) takes no execution while this module's workers run."""
    worker.stop()
    yield
    worker.ensure_running()


@pytest.fixture
def start_workers(services_env, without_session_worker, tmp_path):
    """start_workers(grace): two worker processes (started together) with a 30 s lease and this
    shutdown grace; every one started is stopped at the end of the test, whatever happened."""
    started = []

    def start_one(name: str, grace: float) -> CeleryProcess:
        env = {
            **services_env,
            "EXECUTION_LEASE_SECONDS": str(LEASE_SECONDS),
            "WORKER_SHUTDOWN_GRACE_SECONDS": str(grace),
        }
        command = processes.worker(8, ",".join(settings.EXECUTION_QUEUES), *_celery_flags(name))
        process = CeleryProcess(command, env, tmp_path / f"{name}.log")
        started.append(process)
        return process

    def start(grace: float) -> list[CeleryProcess]:
        with ThreadPoolExecutor(2) as executor:
            return list(executor.map(start_one, ["shutdown-a", "shutdown-b"], [grace, grace]))

    yield start
    for process in started:
        process.stop()


def holder(workers: list[CeleryProcess], execution_id) -> tuple[CeleryProcess, CeleryProcess]:
    """(the worker that runs the execution, the other one), once one does."""
    wait_for(lambda: any(runs_on(w, execution_id) for w in workers), timeout=20)
    first, second = workers
    return (first, second) if runs_on(first, execution_id) else (second, first)


@pytest.fixture
def paid_caller(tenant):
    """An end user's key of a customer with credits, for an agent with credit rules."""
    customer = Customer.objects.create(workspace=tenant.workspace, external_id="cus_shutdown")
    issued = issue_api_key(tenant.workspace, ApiKeyKind.END_USER, name="shutdown", customer=customer)
    do_grant_credits(account_for(tenant.workspace, issued.api_key.principal), Decimal(1000))
    return {"X-API-Key": issued.raw_key, "X-Workspace-Id": f"workspace:{tenant.workspace.id}"}


def paid_agent(tenant, nodes: int):
    agent = AgentFactory(workspace=tenant.workspace, name="slow", workflow=workflow(nodes))
    agent.credit_rules = RULES
    agent.save(update_fields=["credit_rules"])
    return agent


class StreamingClient:
    """`POST /agents/{id}/execute/stream` read to its end on a thread of its own."""

    def __init__(self, base_url: str, agent, headers: dict):
        self.events, self.error = [], None
        url = f"{base_url}/agents/{agent.id}/execute/stream"

        def observe(events) -> bool:
            self.events = events  # the list read_stream fills, seen while it reads
            return False

        def read():
            try:
                read_stream("POST", url, headers, {"message": "hi"}, stop=observe, timeout=90)
            except Exception as exc:  # reported by the test, not lost on the thread
                self.error = exc

        self.thread = threading.Thread(target=read, daemon=True)
        self.thread.start()

    def execution_id(self) -> str:
        """Its execution, from its first event."""
        wait_for(lambda: self.events or self.error, timeout=20)
        assert self.error is None, self.error
        return execution_uuid(self.events[0].data["execution_id"])

    def finish(self, timeout: float = 60) -> list[dict]:
        self.thread.join(timeout)
        assert not self.thread.is_alive() and self.error is None, self.error
        return [event.data for event in self.events]


def owner(execution_id) -> tuple:
    return Execution.objects.values_list("state", "attempt", "lease_owner").get(id=execution_id)


def runs_on(process: CeleryProcess, execution_id) -> bool:
    state, _, lease_owner = owner(execution_id)
    return state == ExecutionState.RUNNING and lease_owner.endswith(f":{process.pid}")


def nodes_completed(execution_id) -> int:
    return ExecutionEvent.objects.filter(execution_id=execution_id, type="node_complete").count()


def sigterm(process: CeleryProcess) -> float:
    """SIGTERM to the worker's main process, as an orchestrator sends it; returns when (time.time())."""
    os.kill(process.pid, signal.SIGTERM)
    return time.time()


def exit_after(process: CeleryProcess, since: float, timeout: float) -> float:
    """Seconds from `since` to the process's exit."""
    process.process.wait(timeout)
    return time.time() - since


def logged(execution_id) -> list[dict]:
    return list(ExecutionEvent.objects.filter(execution_id=execution_id).order_by("seq").values_list("data", flat=True))


def assert_ran_exactly_once(execution_id, streamed: list[dict], nodes: int, reply: str = REPLY) -> Execution:
    """Completed, one final, seq 1..N with no gap or double, the client's stream the whole log, and
    each node's text streamed once."""
    execution = Execution.objects.get(id=execution_id)
    assert execution.state == ExecutionState.COMPLETED, (execution.state, execution.error)
    events = logged(execution_id)
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert streamed == events
    kinds = [event["type"] for event in events]
    assert kinds.count("start") == 1 and kinds.count("final") == 1 and kinds[-1] == "final"
    for index in range(nodes):
        text = "".join(e["text"] for e in events if e["type"] == "text" and e["node_id"] == f"n{index}")
        assert text == reply, (index, text)
    assert execution.lease_owner == "" and execution.lease_expires_at is None
    return execution


def assert_charged_once(execution: Execution, nodes: int) -> None:
    """One hold, its release, one charge: the usage of every node counted once."""
    assert execution.output_tokens == len(REPLY.split()) * nodes
    expected = actual_cost(RULES, execution.inputs, execution.input_tokens + execution.output_tokens)
    assert execution.credits == expected
    account = CreditAccount.objects.get(customer__external_id="cus_shutdown")
    entries = [(e.kind, e.amount) for e in account.entries.filter(execution_id=execution.id).order_by("id")]
    assert [kind for kind, _ in entries] == [CreditEntryKind.HOLD, CreditEntryKind.RELEASE, CreditEntryKind.CHARGE]
    assert entries[2][1] == -expected


def test_sigterm_hands_a_long_run_back_and_another_worker_resumes_it_at_once(
    api_server, start_workers, tenant, paid_caller
):
    nodes = 8
    agent = paid_agent(tenant, nodes)
    workers = start_workers(grace=2)
    client = StreamingClient(api_server, agent, paid_caller)
    execution_id = client.execution_id()
    a, b = holder(workers, execution_id)  # A runs it, B is the other worker
    wait_for(lambda: nodes_completed(execution_id) >= 1, timeout=20)

    sent = sigterm(a)
    resumed_at = wait_for(lambda: runs_on(b, execution_id) and time.time(), timeout=15, interval=0.01)
    a_exit = exit_after(a, sent, timeout=10)

    handed_back = ExecutionEvent.objects.get(execution_id=execution_id, type="resumed")
    assert handed_back.data["from_state"] == "running" and handed_back.data["status"] == "queued"
    gap = resumed_at - handed_back.created_at.timestamp()
    after_sigterm = handed_back.created_at.timestamp() - sent
    print(
        f"\nhand-back {after_sigterm:.2f} s after SIGTERM (grace 2 s); B resumed it {gap * 1000:.0f} ms after "
        f"the hand-back (lease {LEASE_SECONDS} s); A exited {a_exit:.2f} s after SIGTERM"
    )
    assert gap < 2, f"B resumed {gap:.2f} s after the hand-back"  # not the lease (30 s), nor the reaper
    assert after_sigterm < 2 + 0.5, f"handed back {after_sigterm:.2f} s after SIGTERM, past the grace"
    assert a_exit < 2 + 5, f"A exited {a_exit:.2f} s after SIGTERM"
    assert "handed back" in a.log() and "Unrecoverable error" not in a.log()

    streamed = client.finish()
    execution = assert_ran_exactly_once(execution_id, streamed, nodes)
    assert streamed.index(handed_back.data) < len(streamed) - 1  # the stream went on across it
    assert (execution.attempt, execution.recoveries) == (2, 0)  # not a lost lease: no recovery counted
    assert_charged_once(execution, nodes)


def test_a_run_that_ends_within_the_grace_is_finished_by_the_stopping_worker(
    api_server, start_workers, tenant, paid_caller
):
    nodes = 3
    agent = paid_agent(tenant, nodes)
    workers = start_workers(grace=8)
    client = StreamingClient(api_server, agent, paid_caller)
    execution_id = client.execution_id()
    a, _ = holder(workers, execution_id)

    sent = sigterm(a)
    a_exit = exit_after(a, sent, timeout=15)

    streamed = client.finish()
    execution = assert_ran_exactly_once(execution_id, streamed, nodes)
    assert (execution.attempt, execution.recoveries) == (1, 0)
    assert "resumed" not in [event["type"] for event in streamed]
    assert a_exit < 8 - 2, f"A exited {a_exit:.2f} s after SIGTERM: it waited for nothing"
    assert_charged_once(execution, nodes)


def test_a_stopping_worker_claims_nothing_more(api_server, start_workers, tenant, paid_caller):
    """A holds a long run through its grace; an execution queued meanwhile runs on B, not on A; a
    suspended one (waiting for an approval, no worker) is left as it is."""
    agent = paid_agent(tenant, 8)
    quick = paid_agent(tenant, 1)
    gate = AgentFactory(workspace=tenant.workspace, workflow={"nodes": [{"id": "gate", "type": "human_gate"}]})
    workers = start_workers(grace=4)
    gated = StreamingClient(api_server, gate, paid_caller).finish()  # the stream ends at the suspension
    gated_id = execution_uuid(gated[0]["execution_id"])
    assert gated[-1]["type"] == "suspended" and owner(gated_id)[0] == ExecutionState.AWAITING_APPROVAL
    long_run = StreamingClient(api_server, agent, paid_caller)
    long_id = long_run.execution_id()
    a, b = holder(workers, long_id)

    sigterm(a)
    time.sleep(0.2)  # the shutdown has begun
    assert a.process.poll() is None  # A is still running its long run
    new_run = StreamingClient(api_server, quick, paid_caller)
    new_id = new_run.execution_id()
    wait_for(lambda: runs_on(b, new_id) or owner(new_id)[0] == ExecutionState.COMPLETED, timeout=10, interval=0.01)
    assert a.process.poll() is None  # still in its grace: it could have claimed it

    assert_ran_exactly_once(new_id, new_run.finish(), 1)
    assert owner(new_id)[1] == 1  # claimed once, by B
    a_lines = [line for line in a.log().splitlines() if new_id in line]
    assert all("left to another worker" in line for line in a_lines), a_lines  # never claimed by A
    assert new_id in b.log()
    assert_ran_exactly_once(long_id, long_run.finish(), 8)  # handed back at the end of the grace, finished by B
    a.process.wait(10)
    assert owner(gated_id) == (ExecutionState.AWAITING_APPROVAL, 1, "") and logged(gated_id) == gated


def test_a_run_inside_a_step_longer_than_the_grace_is_handed_back_from_outside(
    api_server, start_workers, tenant, paid_caller
):
    """Its model sends a word every 4 s: no safe point between 1.5 s (the runs stop) and 2 s (the
    grace's end), so the watchdog hands it back at 2 s, before A's run wakes up."""
    reply = "s0 s1 s2"
    model = {"provider": "builtin", "reply": reply, "chunk_delay_ms": 4000}
    agent = AgentFactory(workspace=tenant.workspace, workflow={"nodes": [{"id": "n0", "type": "ai", "model": model}]})
    workers = start_workers(grace=2)
    client = StreamingClient(api_server, agent, paid_caller)
    execution_id = client.execution_id()
    a, b = holder(workers, execution_id)
    wait_for(lambda: ExecutionEvent.objects.filter(execution_id=execution_id, type="text").exists(), timeout=20)

    sent = sigterm(a)
    wait_for(lambda: runs_on(b, execution_id), timeout=10, interval=0.01)
    resumed_at = time.time() - sent
    # A's run wakes at its next word (4 s), finds its lease lost and ends; then A exits
    a_exit = exit_after(a, sent, timeout=12)

    handed_back = ExecutionEvent.objects.get(execution_id=execution_id, type="resumed")
    after_sigterm = handed_back.created_at.timestamp() - sent
    print(
        f"\nstuck run handed back {after_sigterm:.2f} s after SIGTERM, resumed by B at {resumed_at:.2f} s; "
        f"A exited at {a_exit:.2f} s"
    )
    assert after_sigterm < 3, after_sigterm  # at the grace's end (2 s), not at A's next word (4 s)
    assert "still inside a step at the grace's end" in a.log()  # by the watchdog
    execution = assert_ran_exactly_once(execution_id, client.finish(), 1, reply)
    assert (execution.attempt, execution.recoveries) == (2, 0)


# --- in-process: the message delivered after SIGTERM, the hand-back's races -----------------------


@pytest.fixture
def published(monkeypatch) -> list:
    """Task messages are recorded, not sent (no worker of the session may take these rows)."""
    sent = []
    monkeypatch.setattr(celery_app, "send_task", lambda name, args=(), **kwargs: sent.append((name, *args)))
    return sent


@pytest.fixture
def shutting_down(monkeypatch):
    """This process as a worker whose grace is over (workers/shutdown.py's state, put back after)."""
    monkeypatch.setattr(shutdown, "_hand_back_at", time.monotonic())


def queued(tenant, agent) -> Execution:
    return services.create_execution(
        workspace=tenant.workspace,
        principal=tenant.end_user_key.api_key.principal,
        source=ExecutionSource.API,
        inputs={"message": "hi"},
        agent_version=agent.live_version,
    )


def test_a_message_delivered_after_sigterm_is_published_again_not_claimed(tenant, published, shutting_down):
    agent = AgentFactory(workspace=tenant.workspace, workflow=workflow(1))
    execution = queued(tenant, agent)
    published.clear()

    assert runtime.run_execution(execution.id) == "not_claimed"

    assert owner(execution.id) == (ExecutionState.QUEUED, 0, "")
    assert published == [(RUN_EXECUTION_TASK, str(execution.id))]  # then the task ends and its message is acked


def claimed_run(tenant, agent) -> ExecutionRun:
    execution = services.do_claim_execution(queued(tenant, agent).id, "test-worker:1")
    lease = HeldLease(execution, execution.attempt, time.time() + 3600)
    return ExecutionRun(execution, execution.attempt, lease)


def test_the_hand_back_queues_from_the_checkpoint_and_publishes(tenant, published):
    run = claimed_run(tenant, AgentFactory(workspace=tenant.workspace, workflow=workflow(2)))
    checkpoint = Execution.objects.get(id=run.execution.id).checkpoint
    published.clear()

    assert run.hand_back() == "handed_back"

    execution = Execution.objects.get(id=run.execution.id)
    assert (execution.state, execution.attempt, execution.recoveries) == (ExecutionState.QUEUED, 1, 0)
    assert execution.lease_owner == "" and execution.lease_expires_at is None
    assert execution.checkpoint == checkpoint
    assert [e["type"] for e in logged(execution.id)] == ["start", "resumed"]
    assert published == [(RUN_EXECUTION_TASK, str(execution.id))]
    assert runtime.run_execution(execution.id) == "completed"  # the next claim resumes it
    assert Execution.objects.get(id=execution.id).attempt == 2


def test_a_hand_back_after_the_reaper_took_the_row_back_does_nothing(tenant, published):
    run = claimed_run(tenant, AgentFactory(workspace=tenant.workspace, workflow=workflow(1)))
    Execution.objects.filter(id=run.execution.id).update(lease_expires_at=run.execution.started_at)
    assert services.reap_expired_leases()["requeued"] == [run.execution.id]
    published.clear()

    assert run.hand_back() == "lease_lost"

    assert owner(run.execution.id) == (ExecutionState.QUEUED, 1, "")
    assert Execution.objects.get(id=run.execution.id).recoveries == 1  # the reaper's, once
    assert "resumed" not in [e["type"] for e in logged(run.execution.id)]
    assert published == []  # the reaper published it; nothing twice


def test_a_cancel_requested_before_the_hand_back_wins(tenant, published):
    run = claimed_run(tenant, AgentFactory(workspace=tenant.workspace, workflow=workflow(1)))
    services.do_request_cancel(run.execution)  # 202: the running worker is asked to stop
    published.clear()

    assert run.hand_back() == "cancelled"

    assert owner(run.execution.id)[0] == ExecutionState.CANCELLED
    assert [e["type"] for e in logged(run.execution.id)] == ["start", "error"]
    assert published == []


def test_past_the_grace_a_run_stops_at_its_next_safe_point_and_a_cancel_goes_first(tenant, published, monkeypatch):
    run = claimed_run(tenant, AgentFactory(workspace=tenant.workspace, workflow=workflow(1)))
    run.check_cancel()  # no shutdown: the run goes on
    monkeypatch.setattr(shutdown, "_hand_back_at", time.monotonic() + 60)
    run.check_cancel()  # within the grace: it goes on too
    monkeypatch.setattr(shutdown, "_hand_back_at", time.monotonic())
    with pytest.raises(HandBack):
        run.check_cancel()
    run.lease.cancel_requested = True
    with pytest.raises(Cancelled):
        run.check_cancel()
