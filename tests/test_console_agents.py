"""The console's agent and skill pages: version history with diffs, the last 24 h of their
executions (success rate, p50/p95 from PostgreSQL), and "run now"."""

from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from agents.services import publish_agent_version
from executions.models import Execution, ExecutionSource, ExecutionState
from executions.responder_stats import agent_executions, responder_stats, skill_executions
from tests.factories import ExecutionFactory, SkillFactory
from tests.helpers import ANSWERING_SKILL_MANIFEST, builtin_workflow

AGENT_PAGE = "/admin/agents/agent/{}/change/"
SKILL_PAGE = "/admin/agents/skill/{}/change/"


@pytest.fixture
def admin_client(client, db):
    User.objects.create_superuser("ops", "ops@example.com", "pw")
    client.login(username="ops", password="pw")
    return client


def finished(responder, state, seconds: float, *, ago=timedelta(minutes=5), **fields):
    key = "agent" if hasattr(responder, "requires_user_message") else "skill"
    execution = ExecutionFactory(**{key: responder}, state=state, **fields)
    end = timezone.now() - ago
    Execution.objects.filter(id=execution.id).update(finished_at=end, started_at=end - timedelta(seconds=seconds))
    return execution


def percentile(values: list[float], fraction: float) -> float:
    """percentile_cont's definition: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def test_agent_stats_over_the_last_24_hours(agent):
    runs = [
        (ExecutionState.COMPLETED, 1),
        (ExecutionState.COMPLETED, 2),
        (ExecutionState.COMPLETED, 3),
        (ExecutionState.COMPLETED, 4.5),
        (ExecutionState.FAILED, 10),
        (ExecutionState.CANCELLED, 5),
    ]
    for state, seconds in runs:
        finished(agent, state, seconds)
    finished(agent, ExecutionState.FAILED, 100, ago=timedelta(hours=30))  # before the window
    finished(agent, ExecutionState.COMPLETED, 100, source=ExecutionSource.BATCH)  # a batch: its items count
    ExecutionFactory(agent=agent, state=ExecutionState.RUNNING)  # not finished
    stats = responder_stats(agent_executions(agent))
    durations = [seconds for _, seconds in runs]
    assert (stats.finished, stats.completed, stats.failed, stats.cancelled) == (6, 4, 1, 1)
    assert stats.success_rate == pytest.approx(4 / 5)
    assert stats.p50.total_seconds() == pytest.approx(percentile(durations, 0.5))
    assert stats.p95.total_seconds() == pytest.approx(percentile(durations, 0.95))
    assert stats.p95.total_seconds() == pytest.approx(8.75)


def test_no_executions_no_figures(tenant):
    stats = responder_stats(skill_executions(SkillFactory(workspace=tenant.workspace)))
    assert stats.finished == 0 and stats.success_rate is None and stats.p50 is None
    assert stats.success_percent == "-"


def test_the_agent_page_shows_versions_with_diffs_stats_and_latest_executions(admin_client, agent):
    publish_agent_version(agent, builtin_workflow(reply="second answer"))
    finished(agent, ExecutionState.COMPLETED, 2)
    failed = finished(agent, ExecutionState.FAILED, 4, failure_reason="provider_error")
    page = admin_client.get(AGENT_PAGE.format(agent.id)).content.decode()
    assert 'id="sr-version-2"' in page and 'id="sr-version-1"' in page
    assert '<span class="sr-add">+' in page and "second answer" in page
    assert '<span class="sr-file">--- v1</span>' in page
    assert '<td class="sr-stat-success">50.0%</td>' in page
    assert '<td class="sr-stat-p50">3.00 s</td>' in page
    assert f"/admin/executions/execution/{failed.id}/change/" in page
    assert f"?agent={agent.id}&amp;level=all" in page
    compared = admin_client.get(AGENT_PAGE.format(agent.id), {"diff_from": "2", "diff_to": "1"}).content.decode()
    assert 'id="sr-compare"' in compared and '<span class="sr-file">--- v2</span>' in compared
    # the list link filters by this agent
    listing = admin_client.get("/admin/executions/execution/", {"agent": str(agent.id), "level": "all"})
    assert len(listing.context["cl"].result_list) == 2


def test_run_now_starts_an_execution_and_opens_its_page(admin_client, agent, inline_runtime):
    response = admin_client.post(f"/admin/agents/agent/{agent.id}/run/", {"message": "from the console"})
    assert response.status_code == 302
    execution = Execution.objects.get(agent_version__agent=agent)
    assert response["Location"] == f"/admin/executions/execution/{execution.id}/change/"
    assert execution.source == ExecutionSource.STANDALONE and execution.principal is None
    assert execution.inputs == {"message": "from the console"}
    assert execution.state == ExecutionState.COMPLETED  # the inline runtime ran it
    assert LogEntry.objects.filter(object_id=str(execution.id), user__username="ops").exists()
    page = admin_client.get(response["Location"]).content.decode()
    assert "operator ops (run now)" in page


def test_run_now_refuses_what_the_api_would(admin_client, agent, tenant, inline_runtime):
    missing = admin_client.post(f"/admin/agents/agent/{agent.id}/run/", {"message": ""}, follow=True)
    assert "This agent requires a message." in missing.content.decode()
    bad = admin_client.post(f"/admin/agents/agent/{agent.id}/run/", {"message": "x", "variables": "[1]"}, follow=True)
    assert "variables must be a JSON object." in bad.content.decode()
    assert not Execution.objects.exists()
    assert admin_client.get(f"/admin/agents/agent/{agent.id}/run/").status_code == 405

    skill = SkillFactory(
        workspace=tenant.workspace,
        manifest={**ANSWERING_SKILL_MANIFEST, "inputs_schema": {"type": "object", "required": ["topic"]}},
    )
    refused = admin_client.post(f"/admin/agents/skill/{skill.id}/run/", {"inputs": "{}"}, follow=True)
    assert "invalid_inputs" in refused.content.decode()
    assert not Execution.objects.exists()
    started = admin_client.post(f"/admin/agents/skill/{skill.id}/run/", {"inputs": '{"topic": "x"}'})
    execution = Execution.objects.get(skill_version__skill=skill)
    assert started["Location"] == f"/admin/executions/execution/{execution.id}/change/"
    assert execution.source == ExecutionSource.STANDALONE and execution.state == ExecutionState.COMPLETED
    page = admin_client.get(SKILL_PAGE.format(skill.id)).content.decode()
    assert '<td class="sr-stat-completed">1</td>' in page


def test_run_now_needs_the_change_permission(client, agent):
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename__in=["view_agent", "view_execution"]))
    client.force_login(viewer)
    assert client.get(AGENT_PAGE.format(agent.id)).status_code == 200
    assert client.post(f"/admin/agents/agent/{agent.id}/run/", {"message": "hi"}).status_code == 403
    assert not Execution.objects.exists()
