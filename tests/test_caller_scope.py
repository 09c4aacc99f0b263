"""Scope per caller: an end-user key attaches only its own uploads (a workspace key any of the
workspace), stages only its own files, and its Idempotency-Keys are its own."""

import httpx
import pytest

from accounts.models import ApiKeyKind
from accounts.services import issue_api_key
from agents.models import Skill
from agents.services import publish_skill_version
from executions.models import Execution, IdempotencyKey
from files.models import FilePurpose, StoredFile
from tests.helpers import auth, read_stream

pytestmark = pytest.mark.django_db


def _headers(tenant, issued) -> dict:
    return {"X-API-Key": issued.raw_key, "X-Workspace-Id": f"workspace:{tenant.workspace.id}"}


@pytest.fixture
def second_user(tenant):
    """Another end user of the same workspace."""
    return issue_api_key(tenant.workspace, ApiKeyKind.END_USER, name="second end user")


def _upload(tenant, principal, name: str) -> StoredFile:
    return StoredFile.objects.create(
        workspace=tenant.workspace,
        principal=principal,
        purpose=FilePurpose.ATTACHMENT,
        storage_key=f"attachments/{tenant.workspace.id}/{name}",
        filename=name,
        content_type="application/pdf",
        size_bytes=10,
    )


def _execute(client, agent, headers, keys, **extra):
    """The stream endpoint: it answers once the execution is queued (no worker needed)."""
    body = {"message": "hi", "attachments": [{"storage_key": key} for key in keys]}
    return client.post(
        f"/agents/{agent.id}/execute/stream", data=body, content_type="application/json", headers={**headers, **extra}
    )


def test_an_end_user_attaches_only_its_own_uploads(client, tenant, second_user, agent):
    mine = _upload(tenant, tenant.end_user_key.api_key.principal, "mine.pdf")
    theirs = _upload(tenant, second_user.api_key.principal, "theirs.pdf")
    refused = _execute(client, agent, auth(tenant), [mine.storage_key, theirs.storage_key])
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "attachment_not_found"
    assert refused.json()["error"]["field"] == "attachments[1].storage_key"
    assert not Execution.objects.exists()
    assert _execute(client, agent, auth(tenant), [mine.storage_key]).status_code == 200


def test_a_workspace_key_attaches_any_upload_of_the_workspace(client, tenant, second_user, agent, other_tenant):
    theirs = _upload(tenant, second_user.api_key.principal, "theirs.pdf")
    mine = _upload(tenant, tenant.end_user_key.api_key.principal, "mine.pdf")
    response = _execute(client, agent, auth(tenant, "workspace"), [theirs.storage_key, mine.storage_key])
    assert response.status_code == 200, response.content
    foreign = _upload(other_tenant, other_tenant.end_user_key.api_key.principal, "foreign.pdf")
    refused = _execute(client, agent, auth(tenant, "workspace"), [foreign.storage_key])
    assert refused.json()["error"]["code"] == "attachment_not_found"


def test_only_attachment_uploads_can_be_attached(client, tenant, agent):
    personal = _upload(tenant, tenant.end_user_key.api_key.principal, "p.pdf")
    StoredFile.objects.filter(id=personal.id).update(purpose=FilePurpose.GENERATED)
    assert _execute(client, agent, auth(tenant), [personal.storage_key]).json()["error"]["code"] == (
        "attachment_not_found"
    )


def test_idempotency_keys_are_per_principal(client, tenant, second_user, agent):
    first = _execute(client, agent, auth(tenant), [], **{"Idempotency-Key": "shared-key"})
    assert first.status_code == 200
    original = Execution.objects.get()
    # the same key from another end user: a new execution, never the first one's id
    other = _execute(client, agent, _headers(tenant, second_user), [], **{"Idempotency-Key": "shared-key"})
    assert other.status_code == 200, other.content
    assert Execution.objects.filter(principal=second_user.api_key.principal).exists()
    # a workspace key is a principal of its own
    service = _execute(client, agent, auth(tenant, "workspace"), [], **{"Idempotency-Key": "shared-key"})
    assert service.status_code == 200
    # the same principal again: 409 naming its own execution
    again = _execute(client, agent, auth(tenant), [], **{"Idempotency-Key": "shared-key"})
    assert again.status_code == 409
    assert again.json()["error"]["execution_id"] == original.public_id
    assert IdempotencyKey.objects.filter(key="shared-key").count() == 3
    assert Execution.objects.count() == 3


def test_skill_idempotency_keys_are_per_principal(client, tenant, second_user):
    skill = Skill.objects.create(workspace=tenant.workspace, slug="report", name="report")
    publish_skill_version(skill, {"instructions": "x"})
    url = f"/v1/spaces/{tenant.workspace.id}/skills/report/executions"

    def start(headers):
        return client.post(
            url, data={"inputs": {}}, content_type="application/json", headers={**headers, "Idempotency-Key": "k1"}
        )

    original = start(auth(tenant)).json()["data"]["id"]
    other = start(_headers(tenant, second_user))
    assert other.status_code == 201 and other.json()["data"]["id"] != original
    again = start(auth(tenant))
    assert again.status_code == 409 and again.json()["error"]["execution_id"] == original


@pytest.mark.django_db(transaction=True)
def test_file_source_ids_stage_only_the_callers_own_files(live, tenant, second_user):
    skill = Skill.objects.create(workspace=tenant.workspace, slug="report", name="report")
    publish_skill_version(skill, {"instructions": "x"})
    theirs = httpx.post(
        f"{live}/v1/files/",
        headers=_headers(tenant, second_user),
        files={"file": ("notes.md", b"their secret notes", "text/markdown")},
        timeout=30,
    )
    assert theirs.status_code == 201
    started = httpx.post(
        f"{live}/v1/spaces/{tenant.workspace.id}/skills/report/executions",
        headers=auth(tenant),
        json={"inputs": {}, "file_source_ids": ["notes.md"]},
        timeout=30,
    )
    execution_id = started.json()["data"]["id"]
    events = read_stream(
        "GET", f"{live}/v1/spaces/{tenant.workspace.id}/skills/executions/{execution_id}/events", auth(tenant)
    )
    staged = next(e.data for e in events if e.data["type"] == "materials_staged")
    assert staged["staged"] == [] and staged["missing"] == ["notes.md"]
    assert "their secret notes" not in str([e.data for e in events])
