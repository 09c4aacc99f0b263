"""POST /attachments/upload: content type checked by the bytes, 50 MiB limit, storage through
django-storages: the local disk by default, S3 via boto3 against a real S3-compatible server
(the `s3_server` fixture of conftest.py)."""

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from files.models import StoredFile
from tests.helpers import auth

pytestmark = pytest.mark.django_db

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 64
GIF = b"GIF89a" + b"\x00" * 64
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 64
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"
EXE = b"MZ\x90\x00\x03" + b"\x00" * 64
ZIP = b"PK\x03\x04" + b"\x00" * 64


def upload(client, tenant, content, name, content_type):
    return client.post(
        "/attachments/upload",
        {"file": SimpleUploadedFile(name, content, content_type=content_type)},
        headers=auth(tenant),
    )


@pytest.mark.parametrize(
    "content, name, declared, expected",
    [
        (PNG, "a.png", "image/png", "image/png"),
        (JPEG, "a.jpg", "image/jpeg", "image/jpeg"),
        (GIF, "a.gif", "image/gif", "image/gif"),
        (WEBP, "a.webp", "image/webp", "image/webp"),
        (PDF, "a.pdf", "application/pdf", "application/pdf"),
        (b"a,b\n1,2\n", "a.csv", "text/csv", "text/csv"),
        ("# Titre é\n".encode(), "notes.md", "application/octet-stream", "text/markdown"),
        (b"plain words", "notes.txt", "text/plain", "text/plain"),
        (PNG, "no-type", "application/octet-stream", "image/png"),
    ],
)
def test_allowed_types_are_stored(client, tenant, content, name, declared, expected):
    response = upload(client, tenant, content, name, declared)
    assert response.status_code == 201, response.content
    data = response.json()["data"]
    assert data["content_type"] == expected
    assert data["size_bytes"] == len(content)
    assert data["storage_key"].startswith(f"attachments/{tenant.workspace.id}/")
    with default_storage.open(data["storage_key"]) as stored:
        assert stored.read() == content
    assert StoredFile.objects.get(storage_key=data["storage_key"]).workspace == tenant.workspace


@pytest.mark.parametrize(
    "content, declared",
    [
        (PNG, "application/pdf"),  # the header lies
        (b"just text", "image/png"),
        (EXE, "application/pdf"),
        (ZIP, "application/zip"),
        (b"\x00\x01binary\x00", "text/plain"),
        (b"<svg/>", "image/svg+xml"),
    ],
)
def test_bytes_that_are_not_an_allowed_type_or_not_the_declared_one_are_415(client, tenant, content, declared):
    response = upload(client, tenant, content, "file.bin", declared)
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert StoredFile.objects.count() == 0


def test_exactly_50_mib_passes_one_byte_more_fails(client, tenant):
    limit = 50 * 1024 * 1024
    over = upload(client, tenant, b"a" * (limit + 1), "big.txt", "text/plain")
    assert over.status_code == 413 and over.json()["error"]["code"] == "file_too_large"
    assert upload(client, tenant, b"a" * limit, "big.txt", "text/plain").status_code == 201


def test_a_body_far_over_the_limit_is_refused_before_it_is_read(client, tenant):
    response = client.post(
        "/attachments/upload",
        data=b"x",
        content_type="multipart/form-data; boundary=x",
        headers=auth(tenant),
        CONTENT_LENGTH=str(200 * 1024 * 1024),
    )
    assert response.status_code == 413


def test_filenames_are_sanitised(client, tenant):
    response = upload(client, tenant, b"hello", "../../etc/pass\x01wd.txt", "text/plain")
    assert response.json()["data"]["filename"] == "passwd.txt"
    assert ".." not in response.json()["data"]["storage_key"]


def test_missing_file_empty_file_and_no_key(client, tenant):
    response = client.post("/attachments/upload", {"other": "x"}, headers=auth(tenant))
    assert response.status_code == 400 and response.json()["error"]["code"] == "file_required"
    assert upload(client, tenant, b"", "e.txt", "text/plain").json()["error"]["code"] == "empty_file"
    assert client.post("/attachments/upload", {"file": SimpleUploadedFile("a.txt", b"x")}).status_code == 401


def test_uploads_go_to_s3_through_boto3_when_configured(client, tenant, settings, s3_server, monkeypatch):
    endpoint, s3 = s3_server
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {"bucket_name": "attachments-test", "endpoint_url": endpoint, "region_name": "us-east-1"},
        },
    }
    response = upload(client, tenant, PDF, "report.pdf", "application/pdf")
    assert response.status_code == 201
    key = response.json()["data"]["storage_key"]
    stored = s3.get_object(Bucket="attachments-test", Key=key)
    assert stored["Body"].read() == PDF
