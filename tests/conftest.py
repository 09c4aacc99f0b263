"""Shared fixtures: real PostgreSQL and Redis, a real uvicorn server and a real Celery worker.

With no DATABASE_URL / REDIS_URL the embedded servers are started for the session. The API server
and the worker run as subprocesses on pytest-django's test database, so tests that use them need
committed data (`transactional_db`).
"""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import boto3
import httpx
import pytest
import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from django.test import AsyncClient
from django.utils import timezone

from config import celery_app
from executions import services
from executions.models import Execution
from executions.services import RUN_EXECUTION_TASK
from executions.streaming import close_loop_resources
from ops import local_services, processes
from tests.factories import AgentFactory, TenantFactory
from tests.helpers import WORDS_20, missing_tool
from workers import runtime

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKOUT_BEFORE = pytest.StashKey[set[str] | None]()


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


LIVE_FIXTURES = {"live", "api_server", "worker", "housekeeping", "services_env"}


def pytest_configure(config):
    # SIGTERM (a CI timeout, `kill`) ends the session as Ctrl-C does: pytest then tears the session's
    # fixtures down (the uvicorn and Celery processes they started) and atexit stops the embedded
    # servers this session started. The default action would kill pytest alone and leave them running.
    signal.signal(signal.SIGTERM, _interrupt)
    config.addinivalue_line("markers", "live: needs the running stack (a real uvicorn, Celery processes)")
    # The suite's embedded PostgreSQL runs without fsync, for speed: its test databases are thrown
    # away (`make run`'s server is durable). Set before the server starts, and inherited by every
    # server a test starts again (tests/test_drills.py). A server already running (this checkout's
    # `make run`) is reused as it is, durable; `make run` warns when it finds one the suite left.
    os.environ.setdefault("LOCAL_POSTGRES_FSYNC", "off")
    if local_services.uses_local_services():
        local_services.ensure_started()


def pytest_collection_modifyitems(config, items):
    """`live` on every test that uses the running stack, so that `pytest -m "not live"` is a fast loop."""
    for item in items:
        if LIVE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.live)


def _checkout_changes() -> set[str] | None:
    """`git status --porcelain` of the checkout (untracked files included), or None outside a git checkout."""
    result = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    return set(result.stdout.splitlines()) if result.returncode == 0 else None


def pytest_sessionstart(session):
    session.config.stash[CHECKOUT_BEFORE] = _checkout_changes()


def pytest_sessionfinish(session, exitstatus):
    """The suite leaves the checkout as it found it: a file a test (or a server it started) wrote
    into the repository fails the run, even when every test passed."""
    before = session.config.stash.get(CHECKOUT_BEFORE, None)
    after = _checkout_changes()
    if before is None or after is None or session.config.option.collectonly:
        return
    left = sorted(after - before)
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "the tests left these changes in the checkout (git status --porcelain):\n  " + "\n  ".join(left)
        if reporter is not None:
            reporter.write_sep("=", "checkout not clean", red=True)
            reporter.write_line(message)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _database_url(settings_dict) -> str:
    user = settings_dict["USER"] or "postgres"
    password = f":{settings_dict['PASSWORD']}" if settings_dict["PASSWORD"] else ""
    port = settings_dict["PORT"] or 5432
    return f"postgres://{user}{password}@{settings_dict['HOST'] or '127.0.0.1'}:{port}/{settings_dict['NAME']}"


# The live servers' /metrics token (tests/test_metrics.py).
LIVE_METRICS_TOKEN = "live-metrics-token"


@pytest.fixture(scope="session")
def services_env(django_db_setup, django_db_blocker, tmp_path_factory):
    """The environment that points a subprocess at the test database and the test Redis; the
    servers share their metrics through one fresh multiprocess directory, as under `make run`, and
    log JSON lines."""
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
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path_factory.mktemp("prometheus")),
        "METRICS_TOKEN": LIVE_METRICS_TOKEN,
        "LOG_FORMAT": "json",
    }


# Every server process a fixture starts, so that an interrupt that comes before its fixture's
# teardown is registered (during the wait for it to answer) still stops it (pytest_unconfigure).
_started: list[subprocess.Popen] = []


def spawn(command: list[str], **options) -> subprocess.Popen:
    """A server process in a session of its own (stopped as a group), stopped at the latest when pytest ends."""
    process = subprocess.Popen(command, start_new_session=True, **options)
    _started.append(process)
    return process


def pytest_unconfigure(config):
    for process in _started:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def start_api_server(services_env: dict, log_path: Path, **extra_env: str) -> tuple[subprocess.Popen, str]:
    """A real uvicorn serving config.asgi with the environment plus `extra_env` (a setting a test
    module needs, e.g. CORS_ALLOWED_ORIGINS); returns the process, once it answers, and its base URL.
    Stop it with `_stop(process)`."""
    port = _free_port()
    log = open(log_path, "w")
    command, process_env = processes.api("127.0.0.1", port)
    process = spawn(
        command, cwd=REPO_ROOT, env={**services_env, **process_env, **extra_env}, stdout=log, stderr=subprocess.STDOUT
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
            _stop(process)
            raise RuntimeError(f"uvicorn did not start: {Path(log.name).read_text()[-3000:]}")
        time.sleep(0.2)
    return process, base_url


@pytest.fixture(scope="session")
def api_server(services_env, tmp_path_factory):
    """A real uvicorn serving config.asgi; yields its base URL."""
    process, base_url = start_api_server(services_env, tmp_path_factory.mktemp("api") / "api.log")
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
        self.process = spawn(
            self.command,
            cwd=REPO_ROOT,
            env={**self.env, **self.process_env},
            stdout=open(self.log_path, "a"),
            stderr=subprocess.STDOUT,
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


# The session worker consumes the execution queues and the webhooks' (which a deployment gives
# processes of their own: tests/test_fair_queues.py runs them apart).
TEST_WORKER_QUEUES = ",".join((*settings.EXECUTION_QUEUES, settings.WEBHOOKS_QUEUE))


@pytest.fixture(scope="session")
def worker(services_env, tmp_path_factory):
    """The executions worker: Celery's threads pool, 64 runs in flight in one process."""
    folder = tmp_path_factory.mktemp("worker")
    process = CeleryProcess(
        processes.worker(64, TEST_WORKER_QUEUES, *_celery_flags("executions")), services_env, folder / "worker.log"
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


# --- the API and the runtime in the test process ----------------------------------------------------


class InProcessTransport(httpx.BaseTransport):
    """httpx requests answered by Django's AsyncClient, on one event loop thread kept for the test.

    One loop, so the relay's per-loop listener and log pool (executions/streaming.py) are made once
    and closed at the end; a streamed response is read to its end (the runs it waits for have already
    run, see `InlineRuntime`) and handed back whole, so httpx-sse parses it as it would a live one.
    """

    SKIPPED_HEADERS = {"host", "content-length", "content-type", "accept-encoding", "connection", "user-agent"}

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="in-process-api")
        self.thread.start()
        self.client = AsyncClient()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        future = asyncio.run_coroutine_threadsafe(self._send(request), self.loop)
        return future.result(timeout=60)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        response = await self.client.generic(
            request.method,
            request.url.raw_path.decode(),
            data=request.read(),
            content_type=request.headers.get("content-type", ""),
            headers={k: v for k, v in request.headers.items() if k.lower() not in self.SKIPPED_HEADERS},
        )
        if response.streaming and response.is_async:  # SSE
            content = b"".join([chunk async for chunk in response.streaming_content])
        elif response.streaming:  # a file
            content = await sync_to_async(b"".join)(response.streaming_content)
        else:
            content = response.content
        return httpx.Response(response.status_code, headers=list(response.items()), content=content)

    def close(self) -> None:
        async def release():
            await close_loop_resources()
            await sync_to_async(connections.close_all)()  # the thread-sensitive thread's connection

        asyncio.run_coroutine_threadsafe(release(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class InlineRuntime:
    """Runs each dispatched execution at once, in the thread that committed it, through
    `workers.runtime.run_execution` (claim, lease, attempt: what the Celery task does). A dispatch
    made while a run is in progress (a sub-execution, a parent resumed by its child) waits in the
    thread's queue until that run returns, as it would wait for a free worker."""

    def __init__(self):
        self.local = threading.local()
        self.outcomes: list[str] = []
        self.other_tasks: list[tuple[str, tuple]] = []  # e.g. webhook deliveries: a test runs them if it wants

    def send_task(self, name, args=(), **options):
        if name != RUN_EXECUTION_TASK:
            self.other_tasks.append((name, tuple(args)))
            return
        queue = self.local.__dict__.setdefault("queue", deque())
        queue.append(args[0])
        if getattr(self.local, "running", False):
            return
        self.local.running = True
        try:
            while queue:
                self.outcomes.append(runtime.run_execution(queue.popleft()))
        finally:
            self.local.running = False

    def time_out(self, execution_id) -> None:
        """What the reaper does once a suspension's timeout passed, without waiting for it."""
        Execution.objects.filter(id=execution_id).update(resume_deadline=timezone.now() - timedelta(seconds=1))
        assert services.resume_timed_out() == [uuid.UUID(str(execution_id))]


class InProcessApi(httpx.Client):
    def __init__(self, inline: InlineRuntime):
        super().__init__(base_url="http://testserver", transport=InProcessTransport(), timeout=60)
        self.runtime = inline


@pytest.fixture
def inline_runtime(transactional_db, monkeypatch) -> InlineRuntime:
    """Executions run in the test process as soon as they are dispatched (no Celery worker, no
    polling); `.outcomes` lists what each run returned, `.time_out(id)` stands for the reaper."""
    inline = InlineRuntime()
    monkeypatch.setattr(celery_app, "send_task", inline.send_task)
    return inline


@pytest.fixture
def api(inline_runtime):
    """The API in the test process too: an httpx client served by Django in-process (no uvicorn),
    with `api.runtime` the inline runtime. For the end-to-end contracts (streaming over time,
    crashes, concurrency, connections) use `live`."""
    client = InProcessApi(inline_runtime)
    yield client
    client.close()  # and its transport: the loop, its resources, the connection of its thread


@pytest.fixture(scope="session")
def s3_server():
    """moto's standalone S3-compatible server, as a separate process, over HTTP; yields (endpoint, boto3 client).

    The bucket `attachments-test` exists; tests may create others with the client.
    """
    port = _free_port()
    process = spawn(
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


# --- tenants, keys, agents (tests/factories.py) --------------------------------------------------


@pytest.fixture
def tenant(db):
    return TenantFactory(name="Acme")


@pytest.fixture
def other_tenant(db):
    return TenantFactory(name="Globex")


@pytest.fixture
def make_agent(db):
    """An agent on the built-in model in this workspace: make_agent(workspace, reply=..., chunk_delay_ms=...)."""

    def make(workspace, **model_options):
        return AgentFactory(workspace=workspace, **{f"workflow__{k}": v for k, v in model_options.items()})

    return make


@pytest.fixture
def workflow_agent(tenant):
    """An agent whose live version runs these workflow nodes (in the tenant's workspace by default)."""

    def make(*nodes, workspace=None):
        return AgentFactory(workspace=workspace or tenant.workspace, name="workflow", workflow={"nodes": list(nodes)})

    return make


@pytest.fixture
def agent(tenant, make_agent):
    """A one-node agent on the built-in model: 20 words at once (one or two text events)."""
    return make_agent(tenant.workspace, chunk_delay_ms=0, reply=WORDS_20)


@pytest.fixture
def streaming_agent(tenant, make_agent):
    """The same, 50 ms between words (about 1 s of streaming): for tests that act mid-stream."""
    return make_agent(tenant.workspace, chunk_delay_ms=50, reply=WORDS_20)


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # the machine's network is closed: no background calls to Google's hosts
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """Debian's headless Chromium driven by Playwright's sync API on a thread of its own.

    Playwright's event loop would otherwise run in the test thread, where Django then refuses every
    ORM call (SynchronousOnlyOperation). Playwright objects belong to the thread that made them, so
    everything that touches a page goes through `run(fn, *args)`, which calls fn on that thread:

        page = browser.new_page()
        browser.run(page.goto, url)
        browser.run(lambda: page.get_by_text("final").wait_for())
    """

    def __init__(self, executable: str):
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chromium")
        self._contexts = []
        self.run(self._start, executable)

    def _start(self, executable: str) -> None:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)

    def run(self, fn, *args, **kwargs):
        return self._thread.submit(fn, *args, **kwargs).result()

    def new_page(self, width: int = 1366, height: int = 900):
        """A page in a fresh context (no cookies, no storage), closed by `close_pages()`."""

        def open_page():
            context = self._browser.new_context(viewport={"width": width, "height": height})
            self._contexts.append(context)
            return context.new_page()

        return self.run(open_page)

    def close_pages(self) -> None:
        def close():
            while self._contexts:
                self._contexts.pop().close()

        self.run(close)

    def close(self) -> None:
        def stop():
            self._browser.close()
            self._playwright.stop()

        self.run(stop)
        self._thread.shutdown()


@pytest.fixture(scope="session")
def chromium():
    """The session's browser. Without a chromium on PATH the browser tests skip, unless
    REQUIRE_BROWSER=1 (set by `.ci/run`, which installs Debian's package): then they fail."""
    executable = chromium_path()
    if executable is None:
        missing_tool("REQUIRE_BROWSER", "no chromium on PATH (apt-get install chromium, or set CHROMIUM_PATH)")
    browser = Browser(executable)
    yield browser
    browser.close()


@pytest.fixture
def browser(chromium):
    """The session's browser; the pages a test opens are closed after it."""
    yield chromium
    chromium.close_pages()
