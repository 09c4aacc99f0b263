"""Shared fixtures: real PostgreSQL and Redis, a real uvicorn server and a real Celery worker.

With no DATABASE_URL / REDIS_URL the embedded servers are started for the session. The API server
and the worker run as subprocesses on pytest-django's test database, so tests that use them need
committed data (`transactional_db`).
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import httpx
import pytest
import redis

from config import local_services, processes
from tests.helpers import WORDS_20, builtin_workflow

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    if local_services.uses_local_services():
        local_services.ensure_started()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _database_url(settings_dict) -> str:
    user = settings_dict["USER"] or "postgres"
    password = f":{settings_dict['PASSWORD']}" if settings_dict["PASSWORD"] else ""
    port = settings_dict["PORT"] or 5432
    return f"postgres://{user}{password}@{settings_dict['HOST'] or '127.0.0.1'}:{port}/{settings_dict['NAME']}"


@pytest.fixture(scope="session")
def services_env(django_db_setup, django_db_blocker):
    """The environment that points a subprocess at the test database and the test Redis."""
    from django.conf import settings
    from django.db import connection

    redis.Redis.from_url(settings.REDIS_URL).flushdb()  # no stale task messages from earlier runs
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "DATABASE_URL": _database_url(connection.settings_dict),
        "REDIS_URL": settings.REDIS_URL,
        "TEST_REDIS_URL": settings.REDIS_URL,
        "PYTHONUNBUFFERED": "1",
    }


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def api_server(services_env, tmp_path_factory):
    """A real uvicorn serving config.asgi; yields its base URL."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("api") / "api.log", "w")
    command, process_env = processes.api("127.0.0.1", port)
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env={**services_env, **process_env}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start: {Path(log.name).read_text()[-3000:]}")
        time.sleep(0.2)
    yield base_url
    _stop(process)


class WorkerProcess:
    """A Celery worker (prefork, 2 children) with beat embedded, so the reaper runs too."""

    def __init__(self, env, log_path: Path, schedule_path: Path):
        self.log_path = log_path
        command, process_env = processes.worker(
            2, "executions", "-B", "--schedule", str(schedule_path), "--without-mingle", "--without-gossip",
            "--hostname", f"test-worker-{os.getpid()}@%h",
        )
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, env={**env, **process_env}, stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while "ready." not in log_path.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"celery worker did not start: {log_path.read_text()[-3000:]}")
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self):
        _stop(self.process)


@pytest.fixture(scope="session")
def worker(services_env, tmp_path_factory):
    folder = tmp_path_factory.mktemp("worker")
    process = WorkerProcess(services_env, folder / "worker.log", folder / "beat-schedule")
    yield process
    process.stop()


@pytest.fixture
def live(transactional_db, api_server, worker):
    """Everything running: committed test data, the HTTP server and the worker."""
    yield api_server
    _wait_until_idle()


def _wait_until_idle(timeout: float = 30.0) -> None:
    """Let the worker finish what a test started before the tables are truncated."""
    from executions.models import Execution, ExecutionState

    deadline = time.monotonic() + timeout
    active = [ExecutionState.QUEUED, ExecutionState.RUNNING]
    while Execution.objects.filter(state__in=active).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    for execution in Execution.objects.filter(state__in=active):
        from executions.services import request_cancel

        request_cancel(execution)


@pytest.fixture(scope="session")
def s3_server():
    """moto's standalone S3-compatible server, as a separate process, over HTTP; yields (endpoint, boto3 client).

    The bucket `attachments-test` exists; tests may create others with the client.
    """
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    s3.create_bucket(Bucket="attachments-test")
    yield endpoint, s3
    process.terminate()
    process.wait(10)


# --- tenants, keys, agents -----------------------------------------------------------------------


@pytest.fixture
def tenant(db):
    from accounts.services import create_tenant

    return create_tenant("Acme")


@pytest.fixture
def other_tenant(db):
    from accounts.services import create_tenant

    return create_tenant("Globex")


@pytest.fixture
def make_agent(db):
    from agents.models import Agent
    from agents.services import publish_agent_version

    def make(workspace, **model_options):
        agent = Agent.objects.create(workspace=workspace, name="Test agent")
        publish_agent_version(agent, builtin_workflow(**model_options))
        return agent

    return make


@pytest.fixture
def workflow_agent(tenant):
    """An agent whose live version runs these workflow nodes (in the tenant's workspace by default)."""
    from agents.models import Agent
    from agents.services import publish_agent_version

    def make(*nodes, workspace=None):
        agent = Agent.objects.create(workspace=workspace or tenant.workspace, name="workflow")
        publish_agent_version(agent, {"nodes": list(nodes)})
        return agent

    return make


@pytest.fixture
def agent(tenant, make_agent):
    """A one-node agent on the built-in model: 20 words, 50 ms apart (about 1 s of streaming)."""
    return make_agent(tenant.workspace, chunk_delay_ms=50, reply=WORDS_20)

