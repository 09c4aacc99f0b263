"""Schedules: the API and the admin, and the tick under a controlled clock (no real waiting):
exactly once per due time (two concurrent ticks included), skip or queue on overlap, source=schedule."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection

from agents.services import publish_skill_version
from config import celery_app
from executions.models import Execution, ExecutionState
from schedules import cron, services
from schedules.models import Schedule
from tests.factories import AgentFactory, SkillFactory
from tests.helpers import ANSWERING_SKILL_MANIFEST, auth

# A Monday, 30 s past 12:00, years ahead: whatever the real clock, a schedule made for it is not due.
T0 = datetime(2030, 1, 7, 12, 0, 30, tzinfo=UTC)


def ws(tenant) -> dict:
    return auth(tenant, "workspace")


def post(client, tenant, body, headers=None):
    return client.post("/schedules", data=body, content_type="application/json", headers=headers or ws(tenant))


def make_schedule(tenant, *, agent=None, skill=None, cron_expression="*/5 * * * *", now=T0, **fields):
    return services.create_schedule(
        workspace=tenant.workspace,
        principal=tenant.workspace_key.api_key.principal,
        agent=agent,
        skill=skill,
        cron=cron_expression,
        inputs=fields.pop("inputs", {"message": "scheduled hello"} if agent else {"topic": "news"}),
        now=now,
        **fields,
    )


@pytest.fixture
def queued_only(monkeypatch):
    """Executions are created and dispatched but nothing runs them: a started run stays active."""
    sent = []
    monkeypatch.setattr(celery_app, "send_task", lambda name, args=(), **kw: sent.append(args[0]))
    return sent


def executions_of(schedule):
    kind = {"agent_version__agent": schedule.agent} if schedule.agent_id else {"skill_version__skill": schedule.skill}
    return list(Execution.objects.filter(workspace=schedule.workspace, **kind).order_by("created_at"))


# --- the API ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_list_get_delete(client, tenant, agent):
    created = post(
        client,
        tenant,
        {
            "agent_id": f"agent:{agent.id}",
            "cron": "0 9 * * 1-5",
            "timezone": "Europe/Paris",
            "inputs": {"message": "Morning report", "variables": {"team": "ops"}},
        },
    )
    assert created.status_code == 201, created.json()
    data = created.json()["data"]
    assert data["id"].startswith("schedule:")
    assert data["agent_id"] == f"agent:{agent.id}" and data["skill"] is None
    assert data["cron"] == "0 9 * * 1-5" and data["timezone"] == "Europe/Paris"
    assert data["inputs"] == {"message": "Morning report", "variables": {"team": "ops"}}
    assert data["overlap"] == settings.SCHEDULE_OVERLAP_DEFAULT == "skip"
    assert data["enabled"] is True and data["last_execution_id"] is None and data["queued_runs"] == 0
    next_run = datetime.fromisoformat(data["next_run_at"])
    paris = next_run.astimezone(cron.check_timezone("Europe/Paris"))
    assert (paris.hour, paris.minute) == (9, 0) and paris.weekday() < 5 and next_run > datetime.now(UTC)

    listed = client.get("/schedules", headers=ws(tenant)).json()["data"]
    assert [s["id"] for s in listed] == [data["id"]]
    assert client.get(f"/schedules/{data['id']}", headers=ws(tenant)).json()["data"] == data
    assert client.delete(f"/schedules/{data['id']}", headers=ws(tenant)).status_code == 204
    assert client.get(f"/schedules/{data['id']}", headers=ws(tenant)).status_code == 404
    assert client.get("/schedules", headers=ws(tenant)).json()["data"] == []


@pytest.mark.django_db
def test_a_skill_schedule_and_the_queue_overlap(client, tenant):
    skill = SkillFactory(workspace=tenant.workspace, manifest=ANSWERING_SKILL_MANIFEST)
    created = post(
        client, tenant, {"skill": skill.slug, "cron": "@hourly", "inputs": {"topic": "x"}, "overlap": "queue"}
    )
    assert created.status_code == 201, created.json()
    data = created.json()["data"]
    assert (data["skill"], data["agent_id"], data["overlap"], data["cron"]) == (skill.slug, None, "queue", "@hourly")
    assert datetime.fromisoformat(data["next_run_at"]).minute == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"cron": "61 * * * *"}, 400, "invalid_cron", "cron"),
        ({"cron": "every day"}, 400, "invalid_cron", "cron"),
        ({"cron": "* * * * * *"}, 400, "invalid_cron", "cron"),  # a seconds field: the tick cannot keep it
        ({"cron": "0 0 30 2 *"}, 400, "invalid_cron", "cron"),  # never fires
        ({"cron": "*/5 * * * *", "timezone": "Mars/Olympus"}, 400, "invalid_timezone", "timezone"),
        ({"cron": None}, 400, "invalid_cron", "cron"),
        ({"timezone": "UTC"}, 400, "cron_required", "cron"),
        ({"cron": "@daily", "overlap": "sometimes"}, 400, "invalid_overlap", "overlap"),
        ({"cron": "@daily", "inputs": {"message": 5}}, 400, "invalid_message", "inputs.message"),
        ({"cron": "@daily", "inputs": {"message": ""}}, 400, "invalid_message", "inputs.message"),
    ],
)
def test_bad_input_is_a_coded_400(client, tenant, agent, body, status, code, field):
    response = post(client, tenant, {"agent_id": str(agent.id), **body})
    assert response.status_code == status, response.json()
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["field"] == field
    assert not Schedule.objects.exists()


@pytest.mark.django_db
def test_target_errors(client, tenant, agent):
    skill = SkillFactory(
        workspace=tenant.workspace,
        manifest={
            **ANSWERING_SKILL_MANIFEST,
            "inputs_schema": {"type": "object", "properties": {"topic": {"type": "string"}}, "required": ["topic"]},
        },
    )
    neither = post(client, tenant, {"cron": "@daily"})
    assert (neither.status_code, neither.json()["error"]["code"]) == (400, "target_required")
    both = post(client, tenant, {"cron": "@daily", "agent_id": str(agent.id), "skill": skill.slug})
    assert (both.status_code, both.json()["error"]["code"]) == (400, "invalid_target")
    unknown = post(client, tenant, {"cron": "@daily", "skill": "nope"})
    assert unknown.status_code == 404
    bad_inputs = post(client, tenant, {"cron": "@daily", "skill": skill.slug, "inputs": {}})
    assert bad_inputs.status_code == 422
    assert (bad_inputs.json()["error"]["code"], bad_inputs.json()["error"]["field"]) == (
        "invalid_inputs",
        "inputs.topic",
    )
    assert not Schedule.objects.exists()


@pytest.mark.django_db
def test_workspace_keys_only_and_tenants_apart(client, tenant, other_tenant, agent):
    end_user = post(
        client, tenant, {"agent_id": str(agent.id), "cron": "@daily", "inputs": {"message": "hi"}}, headers=auth(tenant)
    )
    assert (end_user.status_code, end_user.json()["error"]["code"]) == (403, "forbidden")
    assert client.get("/schedules", headers=auth(tenant)).status_code == 403
    assert client.get("/schedules").status_code == 401

    schedule = make_schedule(tenant, agent=agent)
    # another tenant's key: our agent is not there, our schedule is not there
    assert (
        post(
            client, other_tenant, {"agent_id": str(agent.id), "cron": "@daily", "inputs": {"message": "hi"}}
        ).status_code
        == 404
    )
    assert client.get("/schedules", headers=ws(other_tenant)).json()["data"] == []
    assert client.get(f"/schedules/{schedule.public_id}", headers=ws(other_tenant)).status_code == 404
    assert client.delete(f"/schedules/{schedule.id}", headers=ws(other_tenant)).status_code == 404
    assert Schedule.objects.filter(id=schedule.id).exists()
    assert client.get("/schedules/not-an-id", headers=ws(tenant)).status_code == 404


@pytest.mark.django_db
def test_schedules_per_workspace_limit(client, tenant, other_tenant, agent, settings):
    settings.SCHEDULE_MAX_PER_WORKSPACE = 2
    for _ in range(2):
        assert (
            post(client, tenant, {"agent_id": str(agent.id), "cron": "@daily", "inputs": {"message": "hi"}}).status_code
            == 201
        )
    third = post(client, tenant, {"agent_id": str(agent.id), "cron": "@daily", "inputs": {"message": "hi"}})
    assert (third.status_code, third.json()["error"]["code"]) == (409, "too_many_schedules")
    other_agent = AgentFactory(workspace=other_tenant.workspace)
    assert (
        post(
            client, other_tenant, {"agent_id": str(other_agent.id), "cron": "@daily", "inputs": {"message": "hi"}}
        ).status_code
        == 201
    )


# --- the tick ---------------------------------------------------------------------------------------


def test_fires_once_per_due_time_under_a_controlled_clock(inline_runtime, tenant, agent):
    schedule = make_schedule(tenant, agent=agent)
    due = datetime(2030, 1, 7, 12, 5, tzinfo=UTC)
    assert schedule.next_run_at == due

    assert services.fire_due_schedules(now=due - timedelta(seconds=1)) == {}
    assert executions_of(schedule) == []

    assert services.fire_due_schedules(now=due + timedelta(seconds=3)) == {str(schedule.id): "started"}
    [execution] = executions_of(schedule)
    assert execution.source == "schedule"
    assert execution.state == ExecutionState.COMPLETED  # the inline runtime ran it on commit
    assert execution.inputs["message"] == "scheduled hello"
    assert execution.principal == tenant.workspace_key.api_key.principal
    schedule.refresh_from_db()
    assert schedule.next_run_at == due + timedelta(minutes=5) and schedule.last_run_at == due
    assert schedule.last_execution_id == execution.id and schedule.last_error is None

    # the same moment again (a second tick, a restarted beat): nothing more
    assert services.fire_due_schedules(now=due + timedelta(seconds=9)) == {}
    assert len(executions_of(schedule)) == 1
    assert services.fire_due_schedules(now=due + timedelta(minutes=5)) == {str(schedule.id): "started"}
    assert len(executions_of(schedule)) == 2


def test_missed_due_times_fire_once_then_continue_from_now(inline_runtime, tenant, agent):
    schedule = make_schedule(tenant, agent=agent)
    later = T0 + timedelta(hours=2, seconds=10)  # housekeeping was down for 24 due times
    assert services.fire_due_schedules(now=later) == {str(schedule.id): "started"}
    assert services.fire_due_schedules(now=later) == {}
    schedule.refresh_from_db()
    assert len(executions_of(schedule)) == 1
    assert schedule.next_run_at == datetime(2030, 1, 7, 14, 5, tzinfo=UTC)


def test_the_time_zone_decides_the_due_time(inline_runtime, tenant, agent):
    winter = make_schedule(tenant, agent=agent, cron_expression="0 9 * * *", timezone_name="Europe/Paris")
    summer = make_schedule(
        tenant,
        agent=agent,
        cron_expression="0 9 * * *",
        timezone_name="Europe/Paris",
        now=datetime(2030, 7, 1, tzinfo=UTC),
    )
    assert winter.next_run_at == datetime(2030, 1, 8, 8, 0, tzinfo=UTC)  # 09:00 CET
    assert summer.next_run_at == datetime(2030, 7, 1, 7, 0, tzinfo=UTC)  # 09:00 CEST


def test_a_skill_schedule_runs_with_source_schedule(inline_runtime, tenant):
    skill = SkillFactory(workspace=tenant.workspace, manifest=ANSWERING_SKILL_MANIFEST)
    schedule = make_schedule(tenant, skill=skill)
    assert services.fire_due_schedules(now=schedule.next_run_at) == {str(schedule.id): "started"}
    [execution] = executions_of(schedule)
    assert (execution.source, execution.state, execution.inputs) == (
        "schedule",
        ExecutionState.COMPLETED,
        {"topic": "news"},
    )


def test_a_refused_start_is_recorded_and_the_due_time_handled(inline_runtime, tenant):
    skill = SkillFactory(workspace=tenant.workspace, manifest=ANSWERING_SKILL_MANIFEST)
    schedule = make_schedule(tenant, skill=skill, inputs={"topic": "fine"})
    # the skill's next version requires an input the schedule does not give
    publish_skill_version(
        skill, {**ANSWERING_SKILL_MANIFEST, "inputs_schema": {"type": "object", "required": ["audience"]}}
    )
    due = schedule.next_run_at
    assert services.fire_due_schedules(now=due) == {str(schedule.id): "failed"}
    schedule.refresh_from_db()
    assert executions_of(schedule) == []
    assert schedule.last_error["code"] == "invalid_inputs"
    assert schedule.next_run_at == due + timedelta(minutes=5)  # no retry storm: the next due time
    assert services.fire_due_schedules(now=due) == {}


def test_two_concurrent_ticks_start_one_execution(transactional_db, queued_only, tenant, agent, monkeypatch):
    """Both ticks read the due row, then both try to claim it (a barrier holds each between its read
    and its UPDATE): one execution, one 'started'."""
    schedules = [make_schedule(tenant, agent=AgentFactory(workspace=tenant.workspace)) for _ in range(3)]
    barrier = threading.Barrier(2, timeout=10)
    real_next_due, waited = services.next_due, set()

    def next_due_after_both_read(*args):
        if threading.get_ident() not in waited:  # once per thread: at its first claim
            waited.add(threading.get_ident())
            barrier.wait()
        return real_next_due(*args)

    monkeypatch.setattr(services, "next_due", next_due_after_both_read)
    results, errors = [], []

    def tick():
        try:
            results.append(services.fire_due_schedules(now=T0 + timedelta(minutes=5)))
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    for schedule in schedules:
        assert len(executions_of(schedule)) == 1
        assert sorted(outcome for r in results for sid, outcome in r.items() if sid == str(schedule.id)) == ["started"]
    assert len(queued_only) == 3  # one task message per execution


def test_overlap_skip_drops_the_run_while_the_previous_is_active(transactional_db, queued_only, tenant, agent):
    schedule = make_schedule(tenant, agent=agent, overlap="skip")
    first_due = schedule.next_run_at
    assert services.fire_due_schedules(now=first_due) == {str(schedule.id): "started"}
    assert services.fire_due_schedules(now=first_due + timedelta(minutes=5)) == {str(schedule.id): "skipped"}
    schedule.refresh_from_db()
    assert (len(executions_of(schedule)), schedule.skipped_runs, schedule.queued_runs) == (1, 1, 0)
    assert schedule.last_error is None  # a skip is the setting at work, not an error

    Execution.objects.filter(id=schedule.last_execution_id).update(state=ExecutionState.AWAITING_APPROVAL)
    assert services.fire_due_schedules(now=first_due + timedelta(minutes=10)) == {str(schedule.id): "skipped"}
    Execution.objects.filter(id=schedule.last_execution_id).update(state=ExecutionState.COMPLETED)
    assert services.fire_due_schedules(now=first_due + timedelta(minutes=15)) == {str(schedule.id): "started"}
    assert len(executions_of(schedule)) == 2


def test_overlap_queue_starts_the_run_when_the_previous_ends(transactional_db, queued_only, tenant, agent, settings):
    settings.SCHEDULE_MAX_QUEUED_RUNS = 2
    schedule = make_schedule(tenant, agent=agent, overlap="queue")
    due = schedule.next_run_at
    assert services.fire_due_schedules(now=due) == {str(schedule.id): "started"}
    for n in (1, 2):
        assert services.fire_due_schedules(now=due + timedelta(minutes=5 * n)) == {str(schedule.id): "queued"}
    # the limit: a third waiting run is skipped, and says why
    assert services.fire_due_schedules(now=due + timedelta(minutes=15)) == {str(schedule.id): "skipped"}
    schedule.refresh_from_db()
    assert (schedule.queued_runs, schedule.skipped_runs, schedule.last_error["code"]) == (2, 1, "queue_full")
    assert len(executions_of(schedule)) == 1

    not_due = due + timedelta(minutes=16)
    assert services.fire_due_schedules(now=not_due) == {}  # still running: they wait
    first = schedule.last_execution_id
    Execution.objects.filter(id=first).update(state=ExecutionState.FAILED)
    assert services.fire_due_schedules(now=not_due) == {str(schedule.id): "started"}
    assert services.fire_due_schedules(now=not_due) == {}  # one at a time: the new one is active
    schedule.refresh_from_db()
    assert schedule.queued_runs == 1 and schedule.last_execution_id != first and schedule.last_error is None
    Execution.objects.filter(id=schedule.last_execution_id).update(state=ExecutionState.COMPLETED)
    assert services.fire_due_schedules(now=not_due) == {str(schedule.id): "started"}
    schedule.refresh_from_db()
    assert schedule.queued_runs == 0 and len(executions_of(schedule)) == 3
    assert {e.source for e in executions_of(schedule)} == {"schedule"}


def test_a_disabled_or_deleted_schedule_does_not_fire(transactional_db, queued_only, tenant, agent):
    disabled = make_schedule(tenant, agent=agent, enabled=False)
    deleted = make_schedule(tenant, agent=agent)
    services.delete_schedule(schedule=deleted)
    assert services.fire_due_schedules(now=T0 + timedelta(days=1)) == {}
    assert executions_of(disabled) == [] and queued_only == []


def test_beat_runs_the_tick_on_its_own_queue_consumed_by_housekeeping():
    from ops import processes
    from workers import tasks

    entry = settings.CELERY_BEAT_SCHEDULE["fire-due-schedules"]
    assert entry["task"] == tasks.fire_due_schedules.name
    assert entry["schedule"] == settings.SCHEDULE_TICK_SECONDS
    assert settings.CELERY_TASK_ROUTES[entry["task"]]["queue"] == settings.SCHEDULES_QUEUE
    command, _ = processes.housekeeping("/tmp/schedule")
    assert settings.SCHEDULES_QUEUE in command[command.index("--queues") + 1].split(",")


# --- the admin --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_admin_creates_and_validates_schedules(client, tenant, agent):
    User.objects.create_superuser("ops", "ops@example.com", "pw")
    client.login(username="ops", password="pw")
    form = {
        "workspace": tenant.workspace.id,
        "agent": agent.id,
        "cron": "*/10 * * * *",
        "timezone": "UTC",
        "inputs": '{"message": "hi"}',
        "overlap": "queue",
        "enabled": "on",
    }
    bad = client.post("/admin/schedules/schedule/add/", {**form, "cron": "*/10 * * *"})
    assert bad.status_code == 200 and b"five fields" in bad.content
    assert not Schedule.objects.exists()
    created = client.post("/admin/schedules/schedule/add/", form)
    assert created.status_code == 302, created.content[:2000]
    schedule = Schedule.objects.get()
    assert schedule.tenant_id == tenant.tenant.id and schedule.next_run_at.minute % 10 == 0
    page = client.get(f"/admin/schedules/schedule/{schedule.id}/change/")
    assert page.status_code == 200 and b"*/10 * * * *" in page.content
    # a changed expression is due next from now, by the new expression
    Schedule.objects.filter(id=schedule.id).update(next_run_at=schedule.next_run_at - timedelta(days=30))
    changed = client.post(f"/admin/schedules/schedule/{schedule.id}/change/", {**form, "cron": "0 3 * * *"})
    assert changed.status_code == 302
    schedule.refresh_from_db()
    assert (schedule.next_run_at.hour, schedule.next_run_at.minute) == (3, 0)
    assert timedelta(0) < schedule.next_run_at - datetime.now(UTC) <= timedelta(days=1)
