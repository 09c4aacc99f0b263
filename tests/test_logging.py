"""Structured logs: JSON lines with the bound fields (request_id, workspace_id, execution_id,
attempt), the API's access line (route, status, key prefix, never the key), the worker's line per
attempt, and the readable console format."""

import io
import json
import logging
import subprocess
import sys

import pytest

from core.structured_logs import ConsoleFormatter, ContextFilter, JsonFormatter, bind_context, reset_context
from tests.conftest import REPO_ROOT
from tests.helpers import auth, execute, execution_uuid, stream_agent, wait_for


class Captured:
    """A handler with our filter and a formatter on one logger, its lines in memory."""

    def __init__(self, logger_name: str, formatter=None):
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(formatter or JsonFormatter())
        self.handler.addFilter(ContextFilter())
        self.logger = logging.getLogger(logger_name)

    def __enter__(self):
        self.logger.addHandler(self.handler)
        return self

    def __exit__(self, *exc_info):
        self.logger.removeHandler(self.handler)

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.lines()]  # every line is one JSON object


def test_bound_fields_are_on_every_line_until_reset():
    with Captured("tests.logging") as captured:
        logger = logging.getLogger("tests.logging")
        token = bind_context(execution_id="e1", attempt=2)
        try:
            logger.warning("inside", extra={"outcome": "completed"})
            inner = bind_context(workspace_id="w1")
            logger.warning("deeper")
            reset_context(inner)
        finally:
            reset_context(token)
        logger.warning("outside")
    inside, deeper, outside = captured.records()
    assert inside["message"] == "inside" and inside["level"] == "WARNING" and inside["logger"] == "tests.logging"
    assert inside["execution_id"] == "e1" and inside["attempt"] == 2 and inside["outcome"] == "completed"
    assert "workspace_id" not in inside and inside["time"]
    assert deeper["workspace_id"] == "w1" and deeper["attempt"] == 2
    assert "execution_id" not in outside and "attempt" not in outside


def test_an_exception_stays_inside_its_json_line():
    with Captured("tests.logging") as captured:
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("tests.logging").exception("it failed")
    (record,) = captured.records()
    assert "ValueError: boom" in record["exc_info"]


def test_the_console_format_is_one_readable_line_with_the_fields():
    with Captured("tests.logging", ConsoleFormatter()) as captured:
        token = bind_context(execution_id="e1", attempt=1)
        logging.getLogger("tests.logging").warning("attempt ended", extra={"outcome": "failed"})
        reset_context(token)
    (line,) = captured.lines()
    assert " WARNING tests.logging attempt ended  " in line
    assert line.endswith("outcome=failed execution_id=e1 attempt=1")


@pytest.mark.django_db(transaction=True)
def test_a_request_has_one_access_line_with_route_status_and_key_prefix_never_the_key(api, tenant, agent):
    with Captured("api.access") as access, Captured("workers.runtime") as runtime:
        response = execute(api, agent, tenant, headers={"X-Request-Id": "req-42"})
    assert response.status_code == 200 and response.headers["X-Request-Id"] == "req-42"
    (line,) = access.lines()
    assert tenant.end_user_key.raw_key not in line
    assert tenant.end_user_key.raw_key.removeprefix(tenant.end_user_key.api_key.prefix) not in line  # the secret
    record = json.loads(line)
    assert record["logger"] == "api.access" and record["level"] == "INFO"
    assert record["method"] == "POST" and record["route"] == "agents/<str:agent_id>/execute"
    assert record["status"] == 200 and record["duration_ms"] > 0
    assert record["key_prefix"] == tenant.end_user_key.api_key.prefix
    assert record["workspace_id"] == str(tenant.workspace.id)
    assert record["request_id"] == "req-42"
    # what the request caused logs with its request_id too (here the inline runtime's line)
    (ended,) = runtime.records()
    execution_id = execution_uuid(response.json()["data"]["execution_id"])
    assert ended["request_id"] == "req-42" and ended["execution_id"] == execution_id and ended["attempt"] == 1


@pytest.mark.django_db
def test_a_refused_key_is_logged_without_it_and_a_bad_request_id_is_replaced(client, tenant, agent):
    raw_key = "eak_0123456789ab" + "s" * 40
    with Captured("api.access") as access:
        response = client.post(
            f"/agents/{agent.id}/execute",
            data={"message": "hi"},
            content_type="application/json",
            headers={"X-API-Key": raw_key, "X-Request-Id": "has spaces and is far too long " * 3},
        )
        client.get(f"/executions/{tenant.workspace.id}", headers=auth(tenant))
    assert response.status_code == 401
    refused, other = access.records()
    assert raw_key not in access.stream.getvalue() and "s" * 40 not in access.stream.getvalue()
    assert refused["status"] == 401 and "key_prefix" not in refused
    assert refused["request_id"] == response["X-Request-Id"] and len(refused["request_id"]) == 32
    assert other["route"] == "executions/<str:execution_id>" and other["execution_id"] == str(tenant.workspace.id)
    assert other["status"] == 404 and other["key_prefix"] == tenant.end_user_key.api_key.prefix


@pytest.mark.django_db
def test_an_unmatched_path_is_logged_as_unmatched_not_as_its_path(client):
    with Captured("api.access") as access:
        assert client.get("/files/nowhere/secret-looking-token").status_code == 404
    (record,) = access.records()
    assert record["route"] == "unmatched" and "secret-looking-token" not in access.stream.getvalue()


@pytest.mark.django_db(transaction=True)
def test_the_live_worker_logs_one_json_line_per_attempt_with_execution_id_and_attempt(live, worker, tenant, agent):
    events = stream_agent(live, agent, tenant)
    execution_id = execution_uuid(events[0].data["execution_id"])

    def ended_line():
        for line in worker.log().splitlines():
            if line.startswith("{") and execution_id in line:
                record = json.loads(line)
                if record["message"] == "execution attempt ended":
                    return record
        return None

    record = wait_for(ended_line, timeout=10)
    assert record["logger"] == "workers.runtime" and record["level"] == "INFO"
    assert record["attempt"] == 1 and record["outcome"] == "completed"
    assert record["workspace_id"] == str(tenant.workspace.id)
    assert record["duration_ms"] >= 0
    # Celery's own two lines per task are quieted: the runtime's line replaces them
    assert f"run_execution[{execution_id}" not in worker.log() and "succeeded in" not in worker.log()


def _log_from_a_process(env: dict) -> subprocess.CompletedProcess:
    code = (
        "import django; django.setup(); import logging; from core.structured_logs import bind_context; "
        "bind_context(execution_id='e9', attempt=3); logging.getLogger('probe').warning('hello')"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings_test"},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("log_format", ["", "json", "console", "xml"])
def test_log_format_chooses_json_by_default_off_a_terminal_or_console(services_env, log_format):
    env = {k: v for k, v in services_env.items() if k != "LOG_FORMAT"}
    result = _log_from_a_process({**env, "LOG_FORMAT": log_format} if log_format else env)
    if log_format == "xml":
        assert result.returncode != 0 and "LOG_FORMAT must be json or console" in result.stderr
        return
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "hello" in line]
    if log_format == "console":
        assert " WARNING probe hello  execution_id=e9 attempt=3" in line
    else:  # stderr is a pipe here: JSON unless told otherwise
        assert json.loads(line) | {"time": None} == {
            "time": None,
            "level": "WARNING",
            "logger": "probe",
            "message": "hello",
            "execution_id": "e9",
            "attempt": 3,
        }
