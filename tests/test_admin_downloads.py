"""The admin's download views (artifacts, stored files, workspace archives) need the model's view
permission, as the admin's own pages do; being staff is not enough."""

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from executions.models import Artifact, Execution, ExecutionSource
from files.models import FilePurpose
from files.services import store_generated_file

pytestmark = pytest.mark.django_db


@pytest.fixture
def files(tenant, agent):
    execution = Execution.objects.create(
        tenant=tenant.tenant, workspace=tenant.workspace, source=ExecutionSource.API, agent_version=agent.live_version
    )
    key = default_storage.save(f"workspaces/{execution.id}/outputs/r.md", ContentFile(b"# report"))
    artifact = Artifact.objects.create(
        execution=execution,
        relpath_in_workspace="outputs/r.md",
        document_type="text/markdown",
        size_bytes=8,
        storage_key=key,
    )
    archive = store_generated_file(tenant.workspace, None, b"zip bytes", "w.zip", purpose=FilePurpose.WORKSPACE_ARCHIVE)
    media = store_generated_file(tenant.workspace, None, b"png bytes", "m.png")
    yield {
        f"/admin/executions/execution/artifact/{artifact.id}/download/": b"# report",
        f"/admin/files/storedfile/{archive.id}/download/": b"zip bytes",
        f"/admin/files/storedfile/{media.id}/download/": b"png bytes",
    }
    default_storage.delete(key)


def _staff(client, *codenames):
    user = User.objects.create_user("staff", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client.login(username="staff", password="pw")
    return client


def test_staff_without_view_permission_downloads_nothing(client, files):
    _staff(client)
    for url in [*files, "/admin/files/storedfile/00000000-0000-4000-8000-000000000000/download/"]:
        assert client.get(url).status_code == 403, url  # an unknown id too: nothing to learn from a 404


def test_view_permission_of_the_model_allows_its_downloads(client, files):
    _staff(client, "view_storedfile")
    for url, content in files.items():
        response = client.get(url)
        if "/files/" in url:
            assert b"".join(response.streaming_content) == content
        else:
            assert response.status_code == 403  # executions and artifacts are another permission


def test_artifacts_need_the_execution_and_artifact_view_permissions(client, files):
    _staff(client, "view_execution", "view_artifact")
    artifact_url = next(url for url in files if "artifact" in url)
    assert b"".join(client.get(artifact_url).streaming_content) == b"# report"
    assert client.get(next(url for url in files if "storedfile" in url)).status_code == 403


def test_without_the_artifact_permission_the_execution_permission_is_not_enough(client, files):
    _staff(client, "view_execution")
    assert client.get(next(url for url in files if "artifact" in url)).status_code == 403


def test_a_superuser_downloads_everything(client, files):
    User.objects.create_superuser("root", "r@example.com", "pw")
    client.login(username="root", password="pw")
    for url, content in files.items():
        assert b"".join(client.get(url).streaming_content) == content
