"""Fault drills on the running stack (marker `drill`, part of `make test`, each bounded): the worker
killed with SIGKILL, Redis restarted with streams open, PostgreSQL restarted, each during 50
executions in flight. Afterwards: every execution completed, exactly once (one `final`, its text
streamed once, seq 1..N without gap or double), nothing stuck, the credit ledger exact."""

import json
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest
from django.db import connection

from accounts.credits import account_for, do_grant_credits
from accounts.models import ApiKeyKind, CreditAccount, CreditEntryKind, Customer
from accounts.services import issue_api_key
from executions.models import Execution, ExecutionEvent, ExecutionState
from ops import local_services
from tests.helpers import execution_uuid, wait_for
from tests.test_stream_scale import Streams

pytestmark = [
    pytest.mark.drill,
    pytest.mark.timeout(120),
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not local_services.uses_local_services(), reason="restarts the embedded servers"),
]

COUNT = 50
REPLY = " ".join(f"w{i:02d}" for i in range(20))
RULES = {"base": 10, "per_1k_tokens": 2, "max_tokens": 4000}  # hold 18, a short run costs 12
GRANT = Decimal(10_000)


@pytest.fixture
def drill(tenant, make_agent):
    """A paid agent streaming 20 words 150 ms apart (3 s), and a customer's key with credits."""
    agent = make_agent(tenant.workspace, chunk_delay_ms=150, reply=REPLY)
    agent.credit_rules = RULES
    agent.save(update_fields=["credit_rules"])
    customer = Customer.objects.create(workspace=tenant.workspace, external_id="cus_drill")
    issued = issue_api_key(tenant.workspace, ApiKeyKind.END_USER, name="drill", customer=customer)
    do_grant_credits(account_for(tenant.workspace, issued.api_key.principal), GRANT)
    headers = {"X-API-Key": issued.raw_key, "X-Workspace-Id": f"workspace:{tenant.workspace.id}"}
    return agent, headers


def start(live, agent, headers) -> str:
    """One execution through the API (execute/stream, closed after its `start` event)."""
    url = f"{live}/agents/{agent.id}/execute/stream"
    with httpx.stream("POST", url, headers=headers, json={"message": "hi"}, timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                return execution_uuid(json.loads(line.removeprefix("data: "))["execution_id"])
    raise AssertionError("no start event")


def start_many(live, agent, headers) -> list[str]:
    with ThreadPoolExecutor(10) as executor:
        return list(executor.map(lambda _: start(live, agent, headers), range(COUNT)))


def wait_all_streaming(ids) -> None:
    wait_for(
        lambda: (
            ExecutionEvent.objects.filter(execution_id__in=ids, type="text").values("execution_id").distinct().count()
            == len(ids)
        ),
        timeout=60,
    )


def wait_all_ended(ids, timeout: float = 60) -> None:
    active = [ExecutionState.QUEUED, ExecutionState.RUNNING]
    wait_for(lambda: not Execution.objects.filter(id__in=ids, state__in=active).exists(), timeout=timeout)


def assert_each_ran_exactly_once(ids) -> None:
    for execution_id in ids:
        execution = Execution.objects.get(id=execution_id)
        assert execution.state == ExecutionState.COMPLETED, (execution.state, execution.error)
        events = list(ExecutionEvent.objects.filter(execution_id=execution_id).order_by("seq"))
        assert [e.seq for e in events] == list(range(1, len(events) + 1))  # none lost, none doubled
        kinds = [e.type for e in events]
        assert kinds.count("start") == 1 and kinds.count("final") == 1 and kinds[-1] == "final"
        assert "".join(e.data["text"] for e in events if e.type == "text") == REPLY  # streamed once
        assert execution.lease_owner == ""


def assert_ledger_exact(ids) -> None:
    """Per execution one hold, its release and one charge; the balance is the grant less the charges."""
    account = CreditAccount.objects.get(customer__external_id="cus_drill")
    entries = list(account.entries.order_by("id"))
    assert sum((entry.amount for entry in entries), Decimal(0)) == account.balance
    assert all(entry.balance_after >= 0 for entry in entries)
    per_execution = {}
    for entry in entries:
        if entry.kind != CreditEntryKind.GRANT:
            per_execution.setdefault(str(entry.execution_id), []).append((entry.kind, entry.amount))
    assert set(per_execution) == set(ids)
    charges = Decimal(0)
    for kinds in per_execution.values():
        assert [kind for kind, _ in kinds] == [CreditEntryKind.HOLD, CreditEntryKind.RELEASE, CreditEntryKind.CHARGE]
        assert kinds[0][1] == -kinds[1][1] == Decimal(-18) and kinds[2][1] == Decimal(-12)
        charges += -kinds[2][1]
    assert account.balance == GRANT - charges


def test_drill_worker_killed_with_sigkill_during_fifty_running_executions(live, worker, drill):
    agent, headers = drill
    ids = start_many(live, agent, headers)
    wait_all_streaming(ids)
    assert Execution.objects.filter(id__in=ids, state=ExecutionState.RUNNING).count() == COUNT

    worker.kill_and_restart()  # the reaper re-queues them once their leases expire

    wait_all_ended(ids)
    assert_each_ran_exactly_once(ids)
    assert set(Execution.objects.filter(id__in=ids).values_list("attempt", flat=True)) == {2}
    assert_ledger_exact(ids)


def test_drill_redis_restarted_with_fifty_streams_open(live, worker, drill, tenant):
    agent, headers = drill
    ids = start_many(live, agent, headers)
    worker_pid = worker.pid
    with Streams("http", ids, live, headers) as streams:
        streams.wait_all_at(2, timeout=40)
        local_services._stop_redis()
        wait_for(lambda: not local_services._port_open(local_services.REDIS_PORT), timeout=10)
        time.sleep(1)
        local_services._start_redis()
        results = streams.finish(timeout=60)

    wait_all_ended(ids)
    assert_each_ran_exactly_once(ids)
    for execution_id, events in zip(ids, results):  # each stream: the whole log, once, in order
        logged = list(
            ExecutionEvent.objects.filter(execution_id=execution_id).order_by("seq").values_list("data", flat=True)
        )
        assert events == logged
    # the worker lived through it (Celery/kombu 5.7 ended it when its runs acked after the restart)
    after = start(live, agent, headers)
    wait_all_ended([after], timeout=30)
    assert_each_ran_exactly_once([after])
    assert_ledger_exact([*ids, after])
    assert worker.process.poll() is None and worker.pid == worker_pid
    assert "Unrecoverable error" not in worker.log()


def restart_postgres() -> None:
    local_services._stop_postgres()
    connection.close()  # this process's connection died with the server
    local_services._start_postgres()


def test_drill_postgres_restarted_under_load(live, worker, housekeeping, drill):
    agent, headers = drill
    ids = start_many(live, agent, headers)
    wait_all_streaming(ids)

    restart_postgres()

    wait_all_ended(ids, timeout=80)
    assert_each_ran_exactly_once(ids)
    assert_ledger_exact(ids)
    assert worker.process.poll() is None and housekeeping.process.poll() is None
