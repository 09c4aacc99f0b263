"""The cross-tenant matrix, generated from the URL conf: every API route with a path parameter, every
method it answers (anything but 405), called by another tenant's workspace key and end-user key and by
a second end user of the victim's workspace, with the victim's ids. A caller who may not see the
resource gets 404 (an end-user key may get the 403 of a route for workspace keys), and every row that
existed before is unchanged afterwards. A new route is covered as soon as it is in the URL conf; a
new kind of path parameter fails here until it is given a victim's value below."""

import json

import httpx
import pytest
from django.apps import apps
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import URLPattern, URLResolver, get_resolver

from accounts.models import ApiKey, ApiKeyKind
from accounts.services import issue_api_key
from agents.models import Skill
from agents.services import publish_skill_version
from conversations.models import Conversation, Message
from conversations.services import remember
from executions.events import append_event
from executions.models import Artifact, Execution, ExecutionSource, ExecutionState
from schedules.services import create_schedule
from webhooks.services import check_create_endpoint

pytestmark = pytest.mark.django_db(transaction=True)

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
PROJECT_APPS = ("accounts", "agents", "executions", "conversations", "files", "webhooks", "schedules")
# Not called with API keys: the admin (staff sessions), capability links that need no key at all
# (/files/download/<token>: tests/test_secrets.py binds them to what they were issued for), and
# webhooks from other services (/inbound/: a workspace's own secret, tests/test_inbound_revenuecat.py).
EXCLUDED_PREFIXES = ("admin/", "files/download/", "inbound/")
# Path parameters that name something the whole workspace shares (its agents, skills, the space
# itself), or a name the caller chooses in its own workspace (external_user_id): a second end user of
# the workspace may use them. Every other parameter names something of the victim alone.
WORKSPACE_SHARED = {"agent_id", "space_id", "slug", "external_user_id"}
SECRET_TEXT = "victim-only-secret-text"


def _routes(patterns=None, prefix=""):
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _routes(entry.url_patterns, route)
        elif isinstance(entry, URLPattern) and "<" in route and not route.startswith(EXCLUDED_PREFIXES):
            yield route


ROUTES = sorted(set(_routes()))


def _parameters(route: str) -> list[str]:
    return [part.split(">")[0].split(":")[-1] for part in route.split("<")[1:]]


@pytest.fixture
def victim(live, tenant, agent):
    """Everything of the tenant's end user that an id-taking route can name."""
    principal = tenant.end_user_key.api_key.principal
    execution = Execution.objects.create(
        tenant=tenant.tenant,
        workspace=tenant.workspace,
        principal=principal,
        source=ExecutionSource.API,
        agent_version=agent.live_version,
        state=ExecutionState.AWAITING_APPROVAL,
        inputs={"message": SECRET_TEXT},
    )
    append_event(execution, "start", {"status": "queued"})
    skill = Skill.objects.create(workspace=tenant.workspace, slug="report", name="report")
    publish_skill_version(skill, {"instructions": "x"})
    skill_execution = Execution.objects.create(
        tenant=tenant.tenant,
        workspace=tenant.workspace,
        principal=principal,
        source=ExecutionSource.CHAT,
        skill_version=skill.live_version,
        chat_tool_call_id="tc_victim",
        state=ExecutionState.AWAITING_APPROVAL,
    )
    key = default_storage.save(f"workspaces/{skill_execution.id}/outputs/r.md", ContentFile(SECRET_TEXT.encode()))
    artifact = Artifact.objects.create(
        execution=skill_execution,
        relpath_in_workspace="outputs/r.md",
        document_type="text/markdown",
        size_bytes=9,
        storage_key=key,
    )
    conversation = Conversation.objects.create(workspace=tenant.workspace, principal=principal, agent=agent)
    message = Message.objects.create(conversation=conversation, role="assistant", content=SECRET_TEXT)
    fact = remember(tenant.workspace.id, "victim-user", SECRET_TEXT)
    webhook = check_create_endpoint(
        workspace=tenant.workspace, url="https://hooks.example.com/victim", events=["execution.completed"]
    ).endpoint
    schedule = create_schedule(
        workspace=tenant.workspace, principal=principal, agent=agent, cron="0 3 * * *", inputs={"message": SECRET_TEXT}
    )
    uploaded = httpx.post(
        f"{live}/v1/files/",
        headers={"X-API-Key": tenant.end_user_key.raw_key},
        files={"file": ("victim.md", SECRET_TEXT.encode(), "text/markdown")},
        timeout=30,
    )
    assert uploaded.status_code == 201
    from api.skills.serializers import artifact_download_url

    token = artifact_download_url(artifact).split("token=")[1]
    values = {
        "agent_id": str(agent.id),
        "space_id": str(tenant.workspace.id),
        "slug": skill.slug,
        "execution_id": str(execution.id),
        "id": str(execution.id),
        "conversation_id": str(conversation.id),
        "message_id": str(message.id),
        "external_user_id": "victim-user",
        "fact_id": str(fact.id),
        "tool_call_id": "tc_victim",
        "artifact_id": str(artifact.id),
        "filename": "victim.md",
        "webhook_id": str(webhook.id),
        "schedule_id": str(schedule.id),
    }
    yield {"values": values, "skill_execution": str(skill_execution.id), "artifact_token": token}
    default_storage.delete(key)


@pytest.fixture
def attackers(tenant, other_tenant):
    second = issue_api_key(tenant.workspace, ApiKeyKind.END_USER, name="second end user")
    return {
        "other tenant's workspace key": (other_tenant.workspace_key.raw_key, other_tenant, False),
        "other tenant's end-user key": (other_tenant.end_user_key.raw_key, other_tenant, False),
        "second end user of the workspace": (second.raw_key, tenant, True),
    }


def _url(route: str, victim: dict, space_id: str | None = None) -> str:
    values = dict(victim["values"])
    if route.startswith("v1/spaces/"):  # the skills API names the skill execution
        values["execution_id"] = victim["skill_execution"]
    if space_id:
        values["space_id"] = space_id
    path = route
    for name in _parameters(route):
        start = path.index("<")
        path = path[:start] + values[name] + path[path.index(">", start) + 1 :]
    if "artifact_id" in _parameters(route):
        path += f"?token={victim['artifact_token']}"
    return "/" + path


def _snapshot() -> dict:
    """Every row of the project's tables (an API key's last use changes with every call)."""
    rows = {}
    for model in apps.get_models():
        if model._meta.app_label in PROJECT_APPS:
            for row in model.objects.values():
                if model is ApiKey:
                    row.pop("last_used_at")
                rows[(model._meta.label, str(row[model._meta.pk.attname]))] = json.dumps(row, default=str)
    return rows


def test_every_id_taking_route_is_known():
    unknown = {name for route in ROUTES for name in _parameters(route)} - {
        "agent_id", "space_id", "slug", "execution_id", "id", "conversation_id", "message_id",
        "external_user_id", "fact_id", "tool_call_id", "artifact_id", "filename", "webhook_id",
        "schedule_id",
    }  # fmt: skip
    assert not unknown, f"give the victim's value for {unknown} in the victim fixture"
    assert len(ROUTES) >= 25


def test_another_tenant_or_end_user_cannot_reach_the_victims_rows(live, victim, attackers):
    before = _snapshot()
    answered, failures = set(), []
    with httpx.Client(base_url=live, timeout=30) as client:
        for route in ROUTES:
            shared_only = set(_parameters(route)) <= WORKSPACE_SHARED
            for name, (raw_key, attacker_tenant, same_workspace) in attackers.items():
                urls = [_url(route, victim)]
                if "space_id" in _parameters(route) and not same_workspace and not shared_only:
                    # its own space with the victim's ids
                    urls.append(_url(route, victim, str(attacker_tenant.workspace.id)))
                headers = {"X-API-Key": raw_key, "Accept": "application/json"}
                for url in urls:
                    for method in METHODS:
                        response = client.request(method, url, headers=headers, json={})
                        if response.status_code == 405:
                            continue
                        answered.add(route)
                        body = (
                            response.text if "text/event-stream" not in response.headers.get("content-type", "") else ""
                        )
                        if SECRET_TEXT in body:
                            failures.append(f"{method} {url} ({name}): leaked the victim's data")
                        if response.status_code >= 500:
                            failures.append(f"{method} {url} ({name}): {response.status_code}")
                        elif same_workspace and shared_only:
                            continue  # the workspace's own agents and skills: theirs to use too
                        elif route.startswith("users/") and "fact_id" not in route:
                            continue  # a name in the caller's own workspace: its own (empty) memory
                        elif response.status_code not in (
                            {404, 403} if "end-user" in name or same_workspace else {404}
                        ):
                            failures.append(f"{method} {url} ({name}): {response.status_code} {response.text[:200]}")
    assert not failures, "\n".join(failures)
    assert answered == set(ROUTES), f"routes that answered no method: {set(ROUTES) - answered}"
    after = _snapshot()
    changed = [key for key, row in before.items() if after.get(key) != row]
    assert not changed, f"the victim's rows changed: {changed}"
