"""No signed token in any log line: a real uvicorn (as `make run` starts it, with LOG_FILE) is given
stream tokens, download links and artifact links, valid, expired, forged, for missing files, on
unmatched paths and with a bad Host; then every log file and the captured output are searched for
each token. Also: one access line per request (uvicorn's own access log is off), no `color_message`
or ANSI escape in the JSON lines, and a bad Host is a WARNING without a traceback.

Plus the redaction rules themselves (core/log_hygiene.py), in the test process."""

import json
import logging
import subprocess
import sys
import time
from unittest import mock

import httpx
import pytest
from django.core import signing
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from api.skills.serializers import artifact_download_url
from core.log_hygiene import REDACTED, redact_path, redact_text, secret_routes
from executions.models import Artifact
from executions.stream_tokens import SALT as STREAM_TOKEN_SALT
from files.selectors import download_url
from files.services import store_generated_file
from tests.conftest import REPO_ROOT, _stop, start_api_server
from tests.factories import ExecutionFactory
from tests.helpers import auth

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def _issued_in_the_past(make, seconds: float):
    """A token signed `seconds` ago (Django's signer reads time.time())."""
    with mock.patch("time.time", return_value=time.time() - seconds):
        return make()


def _token_of(url: str) -> str:
    return url.rsplit("token=", 1)[-1] if "token=" in url else url.rsplit("/", 1)[-1]


@pytest.fixture
def logged_api(services_env, tmp_path):
    """uvicorn with LOG_FILE (JSON lines at INFO) and its stdout/stderr captured to a file of its own."""
    log_file, output = tmp_path / "api.log", tmp_path / "output.log"
    process, base_url = start_api_server(services_env, output, LOG_FILE=str(log_file), LOG_LEVEL="INFO")
    try:
        yield base_url, tmp_path, process
    finally:
        _stop(process)


def test_no_token_reaches_a_log_and_each_request_has_one_access_line(transactional_db, logged_api, tenant, agent):
    base_url, folder, process = logged_api
    headers = auth(tenant, "workspace")
    execution = ExecutionFactory(agent=agent, finished=True)
    missing = ExecutionFactory(agent=agent, finished=True)

    media = store_generated_file(tenant.workspace, None, PNG, "m.png")
    gone = store_generated_file(tenant.workspace, None, PNG, "gone.png")
    default_storage.delete(gone.storage_key)  # its link is valid, its file is not there: Django's 404
    key = default_storage.save(f"workspaces/{execution.id}/outputs/summary.md", ContentFile(b"# Summary\n"))
    artifact = Artifact.objects.create(
        execution=execution,
        relpath_in_workspace="outputs/summary.md",
        document_type="text/markdown",
        size_bytes=10,
        storage_key=key,
    )

    requests: list[tuple[str, str, dict, int]] = []  # method, URL, headers, expected status
    with httpx.Client(base_url=base_url, timeout=30) as client:

        def call(method, url, expected, extra_headers=None, **kwargs):
            response = client.request(method, url, headers=extra_headers or {}, **kwargs)
            assert response.status_code == expected, (url, response.status_code, response.text[:300])
            requests.append((method, url, extra_headers or {}, expected))
            return response

        stream_token = call("POST", f"/executions/{execution.id}/stream-token", 201, headers).json()["data"]["token"]
        other_token = call("POST", f"/executions/{missing.id}/stream-token", 201, headers).json()["data"]["token"]
        link = download_url(media)
        gone_link = download_url(gone)
        artifact_link = artifact_download_url(artifact)
        expired_link = _issued_in_the_past(lambda: download_url(media), 2 * 86400)
        expired_artifact = _issued_in_the_past(lambda: artifact_download_url(artifact), 2 * 3600)

        expired_token = _issued_in_the_past(
            lambda: signing.dumps({"execution": str(execution.id), "key": "x"}, salt=STREAM_TOKEN_SALT), 3600
        )
        forged_token = stream_token[:-4] + ("AAAA" if not stream_token.endswith("AAAA") else "BBBB")
        forged_link = link[:-4] + ("AAAA" if not link.endswith("AAAA") else "BBBB")

        events = f"/executions/{execution.id}/events?token="
        with client.stream("GET", events + stream_token) as response:  # the stream: logged when its headers go out
            assert response.status_code == 200
        requests.append(("GET", events + stream_token, {}, 200))
        call("GET", events + other_token, 401)  # a token for another execution
        call("GET", events + expired_token, 401)
        call("GET", events + forged_token, 401)
        call("GET", f"/executions/00000000-0000-4000-8000-000000000000/events?token={stream_token}", 401)
        call("GET", f"/executions/{execution.id}/events?token={stream_token}", 400, {"Host": "evil.example"})

        assert call("GET", link, 200).content == PNG
        call("GET", link + "?download=1&token=" + stream_token, 200)
        call("GET", gone_link, 404)
        call("GET", expired_link, 404)
        call("GET", forged_link, 404)
        call("GET", link + "/extra", 404)  # no route: unmatched
        call("GET", link, 400, {"Host": "evil.example"})
        call("HEAD", link, 200)

        assert call("GET", artifact_link, 200, headers).content == b"# Summary\n"
        call("GET", artifact_link, 401)  # no key
        call("GET", expired_artifact, 404, headers)
        call("GET", artifact_link[:-4] + "AAAA", 404, headers)
        call("GET", artifact_link, 400, {**headers, "Host": "evil.example"})
        # a body refused before Django (api/http/request_limits.py) with a token in the query
        call(
            "POST",
            f"/executions/{execution.id}/tool-result?token={stream_token}",
            415,
            {**headers, "Content-Type": "text/plain"},
            content=b"x",
        )

    time.sleep(0.5)
    _stop(process)  # flush and close everything it writes
    tokens = {
        "stream": stream_token,
        "other stream": other_token,
        "expired stream": expired_token,
        "forged stream": forged_token,
        "download": _token_of(link),
        "gone download": _token_of(gone_link),
        "expired download": _token_of(expired_link),
        "forged download": _token_of(forged_link),
        "artifact": _token_of(artifact_link),
        "expired artifact": _token_of(expired_artifact),
    }
    files = sorted(path for path in folder.iterdir() if path.is_file())
    assert {path.name for path in files} >= {"api.log", "output.log"}
    written = {path.name: path.read_text(errors="replace") for path in files}
    for name, text in written.items():
        for what, token in tokens.items():
            assert len(token) > 20 and token not in text, f"the {what} token is in {name}"
        assert "\x1b[" not in text, name  # no ANSI colour

    lines = [json.loads(line) for line in written["api.log"].splitlines()]
    assert not [line for line in lines if line["logger"].startswith("uvicorn.access")]
    assert not [line for line in lines if "color_message" in line]
    access = [line for line in lines if line["logger"] == "api.access"]
    assert len(access) == len(requests), [(line["method"], line["route"], line["status"]) for line in access]
    assert sorted(line["status"] for line in access) == sorted(status for *_, status in requests)
    downloads = [line for line in access if line["route"] == "files/download/<str:token>"]
    assert {line["path"] for line in downloads} == {f"/files/download/{REDACTED}"}
    assert not [line for line in access if "?" in line.get("path", "")]

    # Django's own lines: the path without its query and without the token; a bad Host is a warning
    django_lines = [line for line in lines if line["logger"].startswith("django.")]
    assert any(line["message"] == f"Not Found: /files/download/{REDACTED}" for line in django_lines), django_lines
    bad_host = [line for line in lines if line["logger"] == "django.security.DisallowedHost"]
    assert len(bad_host) == 3 and all(line["level"] == "WARNING" and "exc_info" not in line for line in bad_host)
    assert all("Traceback" not in json.dumps(line) for line in bad_host)
    assert {line["request"] for line in bad_host} >= {f"GET /files/download/{REDACTED}"}
    assert not [line for line in lines if line["level"] == "ERROR"]


# --- the rules, in the test process -------------------------------------------------------------


def test_the_url_conf_walk_finds_the_download_route():
    sources = [regex.pattern for regex in secret_routes()]
    assert any(source.startswith("/files/download/(?P<token>") for source in sources), sources


@pytest.mark.parametrize(
    "text, expected",
    [
        ("/files/download/abc:def-1_2", f"/files/download/{REDACTED}"),
        ("Not Found: /files/download/abc:def/more", f"Not Found: /files/download/{REDACTED}/more"),
        ("/executions/1/events?token=a:b&last_event_id=3", f"/executions/1/events?token={REDACTED}&last_event_id=3"),
        (
            "<ASGIRequest: GET '/v1/artifacts/1/download?token=x.y:z'>",
            f"<ASGIRequest: GET '/v1/artifacts/1/download?token={REDACTED}'>",
        ),
        ("GET /executions/1 200", "GET /executions/1 200"),
        (f"/files/download/{REDACTED}", f"/files/download/{REDACTED}"),
    ],
)
def test_redact_text(text, expected):
    assert redact_text(text) == expected


def test_redact_path_drops_the_query():
    assert redact_path("/executions/1/events?token=abc") == "/executions/1/events"
    assert redact_path("/files/download/abc?x=1") == f"/files/download/{REDACTED}"


def test_the_hygiene_filter_rewrites_djangos_request_and_drops_color_message(rf):
    from core.log_hygiene import DisallowedHostFilter, LogHygieneFilter

    request = rf.get("/files/download/abc:def?token=ghi")
    record = logging.LogRecord("django.request", logging.WARNING, "", 0, "Not Found: %s", (request.path,), None)
    record.request, record.color_message = request, "\x1b[1mNot Found\x1b[0m"
    assert LogHygieneFilter().filter(record)
    assert record.request == f"GET /files/download/{REDACTED}" and not hasattr(record, "color_message")

    try:
        raise ValueError("bad host")
    except ValueError:
        error = logging.LogRecord("django.security.DisallowedHost", logging.ERROR, "", 0, "bad", (), sys.exc_info())
    assert DisallowedHostFilter().filter(error)
    assert error.levelno == logging.WARNING and error.levelname == "WARNING" and error.exc_info is None


def test_uvicorns_access_log_is_off_even_when_uvicorn_turns_it_on(services_env):
    """uvicorn writes its access line only while `uvicorn.access` has a handler (its parents'
    included): started without --no-access-log (compose, an operator's command line), it adds one;
    Django's setup, which comes after, takes it away."""
    code = (
        "import logging, django, uvicorn.config;"
        "uvicorn.config.Config('config.asgi:application', access_log=True).configure_logging();"
        "assert logging.getLogger('uvicorn.access').hasHandlers();"
        "django.setup();"
        "print(logging.getLogger('uvicorn.access').hasHandlers())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=services_env, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "False", result.stderr[-2000:]
