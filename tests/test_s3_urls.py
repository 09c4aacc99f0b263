"""Presigned S3 URLs that work from outside a deployment: signed with SigV4 for
AWS_S3_PUBLIC_ENDPOINT_URL (where clients reach S3), while the platform itself talks to
AWS_S3_ENDPOINT_URL (compose: http://minio:9000, a name only its network resolves).

moto's S3 server (the `s3_server` fixture) answers on 127.0.0.1; `localhost` stands for the
public name of the same server."""

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages

BUCKET = "public-urls-test"


@pytest.fixture
def s3_storage(settings, s3_server, monkeypatch):
    endpoint, s3 = s3_server
    s3.create_bucket(Bucket=BUCKET)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    public = endpoint.replace("127.0.0.1", "localhost")

    def make(public_endpoint_url):
        settings.STORAGES = {
            **settings.STORAGES,
            "default": {
                "BACKEND": "files.storage.S3Storage",
                "OPTIONS": {
                    "bucket_name": BUCKET,
                    "endpoint_url": endpoint,
                    "public_endpoint_url": public_endpoint_url,
                    "region_name": "us-east-1",
                    "signature_version": "s3v4",
                    "addressing_style": "path",
                },
            },
        }
        return storages["default"]

    return make, endpoint, public


def test_a_presigned_url_is_signed_with_sigv4_for_the_public_endpoint_and_downloads_from_there(s3_storage):
    make, endpoint, public = s3_storage
    storage = make(public)
    key = storage.save("outputs/report.md", ContentFile(b"# Report\n"))
    url = storage.url(key)

    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == public
    assert parts.path == f"/{BUCKET}/outputs/report.md"  # path style: no DNS name per bucket
    query = parse_qs(parts.query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-SignedHeaders"] == ["host"]  # the signature covers the public host
    assert httpx.get(url, timeout=10).content == b"# Report\n"


def test_without_a_public_endpoint_the_url_is_on_the_endpoint_and_still_sigv4(s3_storage):
    make, endpoint, _ = s3_storage
    storage = make(None)
    key = storage.save("outputs/plain.txt", ContentFile(b"plain"))
    url = storage.url(key)
    assert url.startswith(f"{endpoint}/{BUCKET}/")
    assert parse_qs(urlsplit(url).query)["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert httpx.get(url, timeout=10).content == b"plain"
