"""The Skills API's files (/v1/files/): each principal's personal collection, addressed by filename,
kept through django-storages (the local disk, or S3 via boto3 against a real S3-compatible server)."""

import uuid
from urllib.parse import quote

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.models import ApiKeyKind
from accounts.services import issue_api_key
from files.models import FilePurpose, StoredFile
from files.selectors import personal_file
from tests.helpers import auth

pytestmark = pytest.mark.django_db

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"
EXE = b"MZ\x90\x00\x03" + b"\x00" * 64
ZIP = b"PK\x03\x04" + b"\x00" * 64


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


def upload(client, headers, content, name, content_type="application/octet-stream"):
    return client.post(
        "/v1/files/", {"file": SimpleUploadedFile(name, content, content_type=content_type)}, headers=headers
    )


def file_url(filename):
    return f"/v1/files/{quote(filename)}"


def key_headers(issued, workspace):
    return {"X-API-Key": issued.raw_key, "X-Workspace-Id": f"workspace:{workspace.id}"}


def principal_of(tenant):
    return tenant.end_user_key.api_key.principal


def test_upload_list_get_and_delete(client, tenant, django_capture_on_commit_callbacks):
    headers = auth(tenant)
    response = upload(client, headers, PDF, "report final.v2.pdf", "application/pdf")
    assert response.status_code == 201, response.content
    data = response.json()["data"]
    assert set(data) == {"id", "filename", "size_bytes", "content_type", "created_at"}
    assert data["filename"] == "report final.v2.pdf"
    assert data["size_bytes"] == len(PDF) and data["content_type"] == "application/pdf"
    assert data["created_at"].endswith("Z")
    stored = StoredFile.objects.get(id=uuid.UUID(data["id"]))
    assert stored.purpose == FilePurpose.PERSONAL and stored.principal == principal_of(tenant)
    assert stored.workspace == tenant.workspace
    assert stored.storage_key.startswith(f"files/{tenant.workspace.id}/{principal_of(tenant).id}/")
    assert stored.storage_key.endswith(".pdf")
    with default_storage.open(stored.storage_key) as content:
        assert content.read() == PDF

    assert upload(client, headers, b"# Notes\n", "notes.md").status_code == 201
    listed = client.get("/v1/files/", headers=headers)
    assert listed.status_code == 200
    assert [f["filename"] for f in listed.json()["data"]] == ["notes.md", "report final.v2.pdf"]
    assert listed.json()["data"][1] == data
    paged = client.get("/v1/files/?limit=1&offset=1", headers=headers).json()["data"]
    assert [f["filename"] for f in paged] == ["report final.v2.pdf"]
    assert client.get("/v1/files/?limit=1", headers=headers).json()["data"][0]["filename"] == "notes.md"

    got = client.get(file_url("report final.v2.pdf"), headers=headers)
    assert got.status_code == 200 and got.json() == {"data": data}

    with django_capture_on_commit_callbacks(execute=True):
        deleted = client.delete(file_url("report final.v2.pdf"), headers=headers)
    assert deleted.status_code == 204
    assert not default_storage.exists(stored.storage_key)
    assert not StoredFile.objects.filter(id=stored.id).exists()
    missing = client.get(file_url("report final.v2.pdf"), headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert client.delete(file_url("report final.v2.pdf"), headers=headers).status_code == 404
    assert [f["filename"] for f in client.get("/v1/files/", headers=headers).json()["data"]] == ["notes.md"]


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "limit=abc", "offset=-1", "offset=x"])
def test_bad_list_parameters_are_400(client, tenant, query):
    response = client.get(f"/v1/files/?{query}", headers=auth(tenant))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["field"] == query.split("=")[0]


def test_limit_bounds_are_accepted(client, tenant):
    for name in ("a.txt", "b.txt", "c.txt"):
        upload(client, auth(tenant), b"x", name)
    assert len(client.get("/v1/files/?limit=200", headers=auth(tenant)).json()["data"]) == 3
    assert client.get("/v1/files/?offset=3", headers=auth(tenant)).json() == {"data": []}


@pytest.mark.parametrize(
    "content, name, declared, expected",
    [
        (PDF, "a.pdf", "application/pdf", "application/pdf"),
        (EXE, "tool.exe", "application/octet-stream", "application/x-msdownload"),
        (ZIP, "archive.zip", "application/zip", "application/zip"),
        # markup is text, whatever the client declares: never served as a document of our origin
        (b"<svg/>", "logo.svg", "image/svg+xml", "text/plain"),
        (b"<html><script>1</script>", "r.html", "text/html", "text/plain"),
        (b"# Title\n<b>bold</b>", "notes.md", "text/markdown", "text/plain"),
        (PDF, "a.html", "text/html", "application/pdf"),
        (b"# Title\n", "notes.md", "application/octet-stream", "text/markdown"),
        (b'{"a": 1}', "data.json", "application/json", "application/json"),
        (b"plain words", "README", "application/octet-stream", "text/plain"),
        (b"\x00\x01\x02binary", "blob", "application/octet-stream", "application/octet-stream"),
    ],
)
def test_any_content_type_is_accepted(client, tenant, content, name, declared, expected):
    response = upload(client, auth(tenant), content, name, declared)
    assert response.status_code == 201, response.content
    assert response.json()["data"]["content_type"] == expected


def test_the_same_filename_replaces_the_earlier_file(client, tenant, django_capture_on_commit_callbacks):
    headers = auth(tenant)
    first = upload(client, headers, b"one", "data.csv", "text/csv").json()["data"]
    first_key = StoredFile.objects.get(id=first["id"]).storage_key
    with django_capture_on_commit_callbacks(execute=True):
        second = upload(client, headers, b"two!!", "data.csv", "text/csv")
    assert second.status_code == 201
    second = second.json()["data"]
    assert second["id"] != first["id"] and second["size_bytes"] == 5
    rows = StoredFile.objects.filter(principal=principal_of(tenant), filename="data.csv")
    assert rows.count() == 1 and str(rows.get().id) == second["id"]
    assert not default_storage.exists(first_key)
    with default_storage.open(rows.get().storage_key) as content:
        assert content.read() == b"two!!"
    assert client.get(file_url("data.csv"), headers=headers).json()["data"] == second
    assert len(client.get("/v1/files/", headers=headers).json()["data"]) == 1


def test_size_limit_exactly_at_the_limit_passes_one_byte_more_fails(client, tenant, settings):
    settings.FILE_UPLOAD_MAX_BYTES = 1000
    over = upload(client, auth(tenant), b"a" * 1001, "big.txt")
    assert over.status_code == 413
    assert over.json()["error"]["code"] == "file_too_large" and over.json()["error"]["field"] == "file"
    assert StoredFile.objects.count() == 0
    at_limit = upload(client, auth(tenant), b"a" * 1000, "big.txt")
    assert at_limit.status_code == 201 and at_limit.json()["data"]["size_bytes"] == 1000


def test_a_body_far_over_the_limit_is_refused_before_it_is_read(client, tenant):
    response = client.post(
        "/v1/files/",
        data=b"x",
        content_type="multipart/form-data; boundary=x",
        headers=auth(tenant),
        CONTENT_LENGTH=str(200 * 1024 * 1024),
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "file_too_large"


def test_filenames_are_sanitised(client, tenant):
    response = upload(client, auth(tenant), b"root:x:0:0", "../../etc/passwd")
    assert response.status_code == 201
    assert response.json()["data"]["filename"] == "passwd"
    stored = personal_file(principal_of(tenant), "passwd")
    assert stored is not None and ".." not in stored.storage_key
    assert client.get("/v1/files/passwd", headers=auth(tenant)).status_code == 200


def test_missing_file_empty_file_and_no_key(client, tenant):
    response = client.post("/v1/files/", {"other": "x"}, headers=auth(tenant))
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "file_required",
        "message": response.json()["error"]["message"],
        "field": "file",
    }
    empty = upload(client, auth(tenant), b"", "e.txt")
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "empty_file"
    assert StoredFile.objects.count() == 0


def test_unauthenticated_requests_are_401(client, tenant):
    upload(client, auth(tenant), b"x", "a.txt")
    assert client.post("/v1/files/", {"file": SimpleUploadedFile("a.txt", b"x")}).status_code == 401
    assert client.get("/v1/files/").status_code == 401
    assert client.get("/v1/files/a.txt").status_code == 401
    assert client.delete("/v1/files/a.txt").status_code == 401
    assert client.get("/v1/files/", headers={"X-API-Key": "eak_forged"}).status_code == 401
    assert StoredFile.objects.count() == 1


def test_other_principals_and_tenants_never_see_a_file(client, tenant, other_tenant):
    upload(client, auth(tenant), b"mine", "secret.txt")
    second_user = key_headers(issue_api_key(tenant.workspace, ApiKeyKind.END_USER), tenant.workspace)
    for headers in (auth(other_tenant), second_user, auth(tenant, "workspace")):
        got = client.get("/v1/files/secret.txt", headers=headers)
        assert got.status_code == 404 and got.json()["error"]["code"] == "not_found"
        assert client.delete("/v1/files/secret.txt", headers=headers).status_code == 404
        assert client.get("/v1/files/", headers=headers).json() == {"data": []}
    # the same name in another principal's collection is another file, not a replacement
    assert upload(client, second_user, b"theirs", "secret.txt").status_code == 201
    assert StoredFile.objects.filter(filename="secret.txt", purpose=FilePurpose.PERSONAL).count() == 2
    assert client.get("/v1/files/secret.txt", headers=auth(tenant)).json()["data"]["size_bytes"] == 4
    # another key of the same principal reaches the same collection
    same_principal = issue_api_key(tenant.workspace, ApiKeyKind.END_USER, principal=principal_of(tenant))
    assert client.get("/v1/files/secret.txt", headers=key_headers(same_principal, tenant.workspace)).status_code == 200


def test_personal_file_selector(client, tenant, other_tenant):
    upload(client, auth(tenant), b"hello", "hello.txt")
    principal = principal_of(tenant)
    stored = personal_file(principal, "hello.txt")
    assert stored is not None and stored.size_bytes == 5 and stored.purpose == FilePurpose.PERSONAL
    assert personal_file(principal.id, "hello.txt") == stored
    assert personal_file(principal, "other.txt") is None
    assert personal_file(principal_of(other_tenant), "hello.txt") is None
    assert personal_file(None, "hello.txt") is None
    # files of other purposes are not part of the collection
    client.post(
        "/attachments/upload",
        {"file": SimpleUploadedFile("note.txt", b"x", content_type="text/plain")},
        headers=auth(tenant),
    )
    assert personal_file(principal, "note.txt") is None


def test_uploads_go_to_s3_through_boto3_when_configured(
    client, tenant, settings, s3_server, monkeypatch, django_capture_on_commit_callbacks
):
    endpoint, s3 = s3_server
    bucket = f"personal-files-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {"bucket_name": bucket, "endpoint_url": endpoint, "region_name": "us-east-1"},
        },
    }
    headers = auth(tenant)
    principal = principal_of(tenant)

    response = upload(client, headers, b"a,b\n1,2\n", "data set.csv", "text/csv")
    assert response.status_code == 201, response.content
    stored = personal_file(principal, "data set.csv")
    assert stored is not None and str(stored.id) == response.json()["data"]["id"]
    assert stored.storage_key.startswith(f"files/{tenant.workspace.id}/{principal.id}/")
    assert s3.get_object(Bucket=bucket, Key=stored.storage_key)["Body"].read() == b"a,b\n1,2\n"

    with django_capture_on_commit_callbacks(execute=True):
        assert upload(client, headers, b"a,b\n3,4\n", "data set.csv", "text/csv").status_code == 201
    replaced = personal_file(principal, "data set.csv")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == [replaced.storage_key]
    assert s3.get_object(Bucket=bucket, Key=replaced.storage_key)["Body"].read() == b"a,b\n3,4\n"

    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete(file_url("data set.csv"), headers=headers).status_code == 204
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert personal_file(principal, "data set.csv") is None
