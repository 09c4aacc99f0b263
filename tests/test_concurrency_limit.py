"""A workspace's maximum of running executions (executions/concurrency.py): more wait queued, in
order, woken as slots free; other workspaces never wait; a parent waiting for its child holds no slot."""

import re
import threading
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from prometheus_client import REGISTRY

from config import celery_app
from core.ids import uuid7
from executions import services
from executions.checkpoints import Checkpoint
from executions.concurrency import LimitsCollector
from executions.models import Execution, ExecutionState
from tests.factories import ExecutionFactory, WorkspaceFactory
from tests.helpers import auth, data_of, execute, execution_uuid, wait_for

ASYNC = {"Prefer": "respond-async"}


@pytest.fixture
def published(monkeypatch):
    """The task messages published (no worker runs them)."""
    sent = []
    monkeypatch.setattr(celery_app, "send_task", lambda name, args=(), **kw: sent.append(args[0]))
    return sent


def queued_rows(workspace, count: int) -> list[Execution]:
    """`count` queued executions, oldest first (uuid7 ids increase, so their order is their age)."""
    return [ExecutionFactory(workspace=workspace, dispatched=True) for _ in range(count)]


def test_execution_ids_increase_also_within_a_millisecond():
    """The queue of a capped workspace is FIFO by id: ids made in one millisecond keep their order."""
    ids = [uuid7() for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {value.version for value in ids} == {7}


def claim(execution):
    return services.do_claim_execution(execution.id, "test-worker")


def deferred_count(workspace_id) -> float | None:
    return REGISTRY.get_sample_value("skillrun_executions_deferred_total", {"workspace_id": str(workspace_id)})


def test_claims_over_the_cap_stay_queued_and_the_oldest_runs_when_a_slot_frees(transactional_db, published):
    workspace = WorkspaceFactory(max_running_executions=2)
    a, b, c, d = queued_rows(workspace, 4)
    before = deferred_count(workspace.id) or 0
    assert claim(a) and claim(b)
    assert claim(d) is None and claim(c) is None  # d's message came first: still not before c
    for row in (c, d):
        row.refresh_from_db()
        assert row.state == ExecutionState.QUEUED and row.deferred_at is not None
    assert deferred_count(workspace.id) == before + 2
    assert published == []  # deferred: no task message out, no worker slot held

    running_a = Execution.objects.get(id=a.id)
    assert services.do_fail_execution(running_a, running_a.attempt, "boom", "failed")
    assert published == [str(c.id)]  # the oldest deferred one, once the failure committed
    c.refresh_from_db()
    assert c.deferred_at is None
    assert claim(c) is not None
    assert claim(d) is None  # b and c run: d waits on

    running_b = Execution.objects.get(id=b.id)
    assert services.do_cancel_running_execution(running_b, running_b.attempt)
    assert published[-1] == str(d.id) and claim(d) is not None
    assert Execution.objects.filter(workspace=workspace, state=ExecutionState.RUNNING).count() == 2


def test_an_older_queued_execution_takes_the_slot_before_a_younger_one(transactional_db, published):
    """FIFO: the younger one may not take the one free slot while an older one is queued (its
    message is on its way), even though nothing runs."""
    workspace = WorkspaceFactory(max_running_executions=1)
    older, younger = queued_rows(workspace, 2)
    assert claim(younger) is None
    assert claim(older) is not None
    running = Execution.objects.get(id=older.id)
    services.do_complete_execution(running, running.attempt, {"text": ""}, {}, Checkpoint())
    assert published == [str(younger.id)] and claim(younger) is not None


def test_suspension_and_the_cancel_of_a_queued_execution_free_their_slot(transactional_db, published):
    workspace = WorkspaceFactory(max_running_executions=1)
    first, second, third = queued_rows(workspace, 3)
    running = claim(first)
    assert claim(second) is None and claim(third) is None
    assert services.do_suspend_execution(
        running, running.attempt, ExecutionState.AWAITING_APPROVAL, Checkpoint(), {"waiting_for": "approval"}
    )
    assert published == [str(second.id)]  # a suspended execution holds no slot
    services.do_request_cancel(Execution.objects.get(id=second.id))  # cancelled before its message arrived
    assert published == [str(second.id), str(third.id)]
    assert claim(third) is not None


def test_a_slot_freed_while_a_claim_defers_itself_is_not_missed(transactional_db, published, monkeypatch):
    """The race: the run ends (and looks for deferred executions to wake) after the claim counted the
    slots but before its deferral mark is committed, so the waker finds no mark. The claim tries once
    more after committing its mark, sees the free slot and runs."""
    from executions import concurrency

    workspace = WorkspaceFactory(max_running_executions=1)
    first, second = queued_rows(workspace, 2)
    running = claim(first)

    class FreeTheSlotMeanwhile:
        def labels(self, **_):
            return self

        def inc(self):
            def end_the_run():
                from django.db import connection

                try:
                    assert services.do_fail_execution(running, running.attempt, "boom", "failed")
                finally:
                    connection.close()

            thread = threading.Thread(target=end_the_run)
            thread.start()
            thread.join(10)

    monkeypatch.setattr(concurrency, "EXECUTIONS_DEFERRED", FreeTheSlotMeanwhile())
    assert claim(second) is not None
    assert published == []  # the waker found nothing to wake: the second try took the slot
    assert Execution.objects.get(id=second.id).state == ExecutionState.RUNNING


def test_the_workspace_field_beats_the_environment_default(transactional_db, published, settings):
    settings.WORKSPACE_MAX_RUNNING_EXECUTIONS = 1
    by_default, raised, unlimited = (
        WorkspaceFactory(),
        WorkspaceFactory(max_running_executions=2),
        WorkspaceFactory(max_running_executions=0),
    )
    rows = {workspace: queued_rows(workspace, 3) for workspace in (by_default, raised, unlimited)}
    claimed = {workspace: [claim(row) is not None for row in rows[workspace]] for workspace in rows}
    assert claimed == {by_default: [True, False, False], raised: [True, True, False], unlimited: [True, True, True]}


def test_the_reaper_releases_deferred_executions_when_the_cap_is_raised(transactional_db, published):
    """No transition wakes them then: the reaper's sweep does, up to the slots free."""
    workspace = WorkspaceFactory(max_running_executions=1)
    rows = queued_rows(workspace, 4)
    assert claim(rows[0]) and not any(claim(row) for row in rows[1:])
    assert services.release_deferred() == []  # the one slot is taken
    workspace.max_running_executions = 3
    workspace.save()
    assert services.release_deferred() == [rows[1].id, rows[2].id]
    assert published == [str(rows[1].id), str(rows[2].id)]
    assert services.redispatch_stale_queued() == []  # a deferred row is no lost message


def test_running_and_deferred_gauges(transactional_db, published):
    workspace, other = WorkspaceFactory(max_running_executions=1), WorkspaceFactory()
    rows = queued_rows(workspace, 3)
    claim(rows[0]), claim(rows[1]), claim(rows[2])
    claim(queued_rows(other, 1)[0])
    samples = {
        (metric.name, sample.labels["workspace_id"]): sample.value
        for metric in LimitsCollector().collect()
        for sample in metric.samples
    }
    assert samples[("skillrun_executions_running", str(workspace.id))] == 1
    assert samples[("skillrun_executions_deferred", str(workspace.id))] == 2
    assert samples[("skillrun_executions_running", str(other.id))] == 1
    assert ("skillrun_executions_deferred", str(other.id)) not in samples


def test_a_parent_waiting_for_its_child_holds_no_slot(api, tenant, workflow_agent):
    """A cap of 1: parent, child, parent again; the child is never held back by its waiting parent."""
    tenant.workspace.max_running_executions = 1
    tenant.workspace.save()
    child_agent = workflow_agent({"id": "child", "type": "ai", "model": {"provider": "builtin", "reply": "inner"}})
    parent_agent = workflow_agent({"id": "delegate", "type": "agent", "agent_id": str(child_agent.id)})
    data = data_of(execute(api, parent_agent, tenant, "go"))
    assert data["status"] == "completed" and data["output"]["text"] == "inner"
    assert "not_claimed" not in api.runtime.outcomes


def test_a_batch_runs_its_items_under_a_cap_of_one(api, tenant, agent):
    tenant.workspace.max_running_executions = 1
    tenant.workspace.save()
    items = [{"key": f"k{i}", "message": f"item {i}"} for i in range(3)]
    response = api.post(f"/agents/{agent.id}/execute/batch", json={"items": items}, headers=auth(tenant))
    assert response.status_code == 200
    batch = Execution.objects.get(workspace=tenant.workspace, source="batch")
    assert batch.state == ExecutionState.COMPLETED
    assert set(Execution.objects.filter(parent=batch).values_list("state", flat=True)) == {ExecutionState.COMPLETED}


def inline_management_forms(page: str) -> dict:
    """The management forms of the page's inlines, as the page sets them (no inline row changed)."""
    return dict(re.findall(r'name="([\w-]+-(?:TOTAL|INITIAL|MIN_NUM|MAX_NUM)_FORMS)"[^>]*value="(\d*)"', page))


def test_the_admin_sets_the_cap(client, tenant):
    User.objects.create_superuser("ops", "ops@example.com", "pw")
    client.login(username="ops", password="pw")
    workspace = tenant.workspace
    page = client.get(f"/admin/accounts/workspace/{workspace.id}/change/").content.decode()
    assert 'name="max_running_executions"' in page
    response = client.post(
        f"/admin/accounts/workspace/{workspace.id}/change/",
        {
            "tenant": str(workspace.tenant_id),
            "name": workspace.name,
            "default_model_alias": "",
            "execution_retention_days": "",
            "max_running_executions": "2",
            **inline_management_forms(page),
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    workspace.refresh_from_db()
    assert workspace.max_running_executions == 2


# --- live: a real worker with 64 slots ----------------------------------------------------------------


class RunningSampler:
    """Samples the running rows of each workspace every 10 ms while the executions run."""

    def __init__(self, workspaces):
        self.workspaces = workspaces
        self.max_running = {w.id: 0 for w in workspaces}
        self.overlap = 0  # samples where the second workspace ran while the first had some queued
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        from django.db import connection

        try:
            while not self.stop.is_set():
                counts = {w.id: {"running": 0, "queued": 0} for w in self.workspaces}
                for workspace_id, state in Execution.objects.filter(
                    workspace__in=self.workspaces, state__in=[ExecutionState.RUNNING, ExecutionState.QUEUED]
                ).values_list("workspace_id", "state"):
                    counts[workspace_id][state] += 1
                for workspace_id, count in counts.items():
                    self.max_running[workspace_id] = max(self.max_running[workspace_id], count["running"])
                first, second = (counts[w.id] for w in self.workspaces)
                if first["queued"] and second["running"]:
                    self.overlap += 1
                time.sleep(0.01)
        finally:
            connection.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)


def start_async(live, agent, tenant) -> str:
    response = execute(live, agent, tenant, "go", headers=ASYNC)
    assert response.status_code == 202, response.text
    return execution_uuid(data_of(response)["execution_id"])


def finished(ids) -> bool:
    return Execution.objects.filter(
        id__in=ids, state__in=[ExecutionState.COMPLETED, ExecutionState.FAILED]
    ).count() == len(ids)


def test_ten_started_with_a_cap_of_two_never_run_more_than_two_and_all_finish(
    live, tenant, other_tenant, streaming_agent, make_agent
):
    tenant.workspace.max_running_executions = 2
    tenant.workspace.save()
    other_agent = make_agent(other_tenant.workspace, chunk_delay_ms=50, reply=" ".join(["w"] * 20))
    with RunningSampler([tenant.workspace, other_tenant.workspace]) as sampler:
        capped = [start_async(live, streaming_agent, tenant) for _ in range(10)]
        time.sleep(0.5)  # the capped workspace has a queue now
        others = [start_async(live, other_agent, other_tenant) for _ in range(3)]
        wait_for(lambda: finished(others), timeout=30)
        capped_done_when_others_done = Execution.objects.filter(id__in=capped, state=ExecutionState.COMPLETED).count()
        wait_for(lambda: finished(capped), timeout=60)
    rows = list(Execution.objects.filter(id__in=capped).order_by("id"))
    assert [row.state for row in rows] == [ExecutionState.COMPLETED] * 10
    assert sampler.max_running[tenant.workspace.id] == 2  # the cap was reached and never passed
    assert sampler.max_running[other_tenant.workspace.id] >= 2  # the other workspace ran several at once...
    assert capped_done_when_others_done < 10 and sampler.overlap > 0  # ...while the capped one still queued
    # FIFO: claimed in the order they were created (a claim's timestamp is taken before it waits for the
    # workspace's lock, so two claims a moment apart may carry their times a few ms out of order)
    starts = [row.started_at for row in rows]
    assert all(later >= earlier - timedelta(milliseconds=100) for earlier, later in zip(starts, starts[1:])), starts


def test_a_killed_worker_frees_its_slot_through_the_reaper(live, worker, tenant, make_agent):
    """The killed run holds its slot until the reaper takes its lease back; then both run, one at a time."""
    tenant.workspace.max_running_executions = 1
    tenant.workspace.save()
    slow = make_agent(tenant.workspace, chunk_delay_ms=100, reply=" ".join(["w"] * 20))  # ~2 s
    with RunningSampler([tenant.workspace, WorkspaceFactory()]) as sampler:
        first = start_async(live, slow, tenant)
        wait_for(lambda: Execution.objects.get(id=first).state == ExecutionState.RUNNING, timeout=15)
        second = start_async(live, slow, tenant)
        wait_for(lambda: Execution.objects.get(id=second).deferred_at is not None, timeout=15)
        worker.kill_and_restart()
        wait_for(lambda: finished([first, second]), timeout=60)
    first_row, second_row = Execution.objects.get(id=first), Execution.objects.get(id=second)
    assert first_row.state == second_row.state == ExecutionState.COMPLETED
    assert first_row.recoveries == 1 and second_row.recoveries == 0
    assert sampler.max_running[tenant.workspace.id] == 1
