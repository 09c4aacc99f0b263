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

from ops import local_services, processes
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
        command,
        cwd=REPO_ROOT,
        env={**services_env, **process_env},
        stdout=log,
        stderr=subprocess.STDOUT,
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


class CeleryProcess:
    """A Celery process started from ops/processes.py; restartable (tests kill workers)."""

    def __init__(self, command_and_env, env, log_path: Path):
        self.command, self.process_env = command_and_env
        self.env, self.log_path = env, log_path
        self.start()

    def start(self):
        self.log_path.write_text("")
        self.process = subprocess.Popen(
            self.command,
            cwd=REPO_ROOT,
            env={**self.env, **self.process_env},
            stdout=open(self.log_path, "a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while "ready." not in self.log_path.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"celery did not start: {self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill_and_restart(self):
        """SIGKILL, as a crash would, and start a fresh process: what the killed one ran is left to the reaper."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.start()

    def ensure_running(self):
        if self.process.poll() is not None:
            self.start()

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self):
        _stop(self.process)


def _celery_flags(name: str) -> tuple[str, ...]:
    return "--without-mingle", "--without-gossip", "--hostname", f"{name}-{os.getpid()}@%h"


@pytest.fixture(scope="session")
def worker(services_env, tmp_path_factory):
    """The executions worker: Celery's threads pool, 64 runs in flight in one process."""
    folder = tmp_path_factory.mktemp("worker")
    process = CeleryProcess(
        processes.worker(64, "executions", *_celery_flags("executions")), services_env, folder / "worker.log"
    )
    yield process
    process.stop()


@pytest.fixture(scope="session")
def housekeeping(services_env, tmp_path_factory):
    """Beat and the housekeeping queue (the reaper every REAPER_INTERVAL_SECONDS), in their own process."""
    folder = tmp_path_factory.mktemp("housekeeping")
    process = CeleryProcess(
        processes.housekeeping(str(folder / "beat-schedule"), *_celery_flags("housekeeping")),
        services_env,
        folder / "housekeeping.log",
    )
    yield process
    process.stop()


@pytest.fixture
def live(transactional_db, api_server, worker, housekeeping):
    """Everything running: committed test data, the HTTP server, the worker and housekeeping."""
    worker.ensure_running()  # a test before may have killed it
    housekeeping.ensure_running()
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
        from executions.services import do_request_cancel

        do_request_cancel(execution)


@pytest.fixture(scope="session")
def s3_server():
    """moto's standalone S3-compatible server, as a separate process, over HTTP; yields (endpoint, boto3 client).

    The bucket `attachments-test` exists; tests may create others with the client.
    """
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )
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
