"""The platform behind PgBouncer in transaction mode, as compose runs it (DB_TRANSACTION_POOLING=1):
a real uvicorn and a real Celery worker whose every connection goes through Debian's pgbouncer.

In transaction mode each transaction may land on another server session, so a prepared statement
(psycopg prepares a query at its 5th run) or a server-side cursor would break; the same query is run
far more than 5 times here, by the API, the worker and the SSE relay. .ci/run installs pgbouncer and
sets REQUIRE_PGBOUNCER=1, so that there a missing binary fails instead of skipping."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from ops import processes
from tests.conftest import CeleryProcess, _celery_flags, _free_port, _stop, start_api_server
from tests.helpers import data_of, execute, missing_tool, stream_agent, wait_for

QUEUE = "executions-pgbouncer"  # its own queue: only the worker behind PgBouncer runs these
UNPRIVILEGED = 65534  # pgbouncer refuses to run as root


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None
    )
    if found is None:
        missing_tool("REQUIRE_PGBOUNCER", "no pgbouncer binary (Debian's package: apt-get install pgbouncer)")
    return found


@pytest.fixture(scope="module")
def pgbouncer_url(services_env):
    """A pgbouncer in transaction mode in front of the test database; yields the URL through it."""
    binary = pgbouncer_binary()
    database = urlsplit(services_env["DATABASE_URL"])
    name, port = database.path.lstrip("/"), _free_port()
    folder = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    auth_type = "plain" if database.password else "trust"
    (folder / "userlist.txt").write_text(f'"{database.username}" "{database.password or ""}"\n')
    (folder / "pgbouncer.ini").write_text(
        f"[databases]\n{name} = host={database.hostname} port={database.port} dbname={name}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = {auth_type}\nauth_file = {folder / 'userlist.txt'}\n"
        "pool_mode = transaction\nmax_client_conn = 500\ndefault_pool_size = 10\n"
        f"logfile = {folder / 'pgbouncer.log'}\npidfile = {folder / 'pgbouncer.pid'}\n"
    )
    os.chmod(folder, 0o700)
    if os.geteuid() == 0:
        for path in (folder, *folder.iterdir()):
            os.chown(path, UNPRIVILEGED, UNPRIVILEGED)
    user = {"user": UNPRIVILEGED, "group": UNPRIVILEGED} if os.geteuid() == 0 else {}
    process = subprocess.Popen(
        [binary, str(folder / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **user,
    )
    credentials = database.username + (f":{database.password}" if database.password else "")
    url = f"postgres://{credentials}@127.0.0.1:{port}/{name}"
    try:
        wait_for(lambda: _answers(url), timeout=20)
        yield url
    finally:
        _stop(process)
        shutil.rmtree(folder, ignore_errors=True)


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2, prepare_threshold=None) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="module")
def platform_behind_pgbouncer(services_env, pgbouncer_url, tmp_path_factory):
    env = {**services_env, "DATABASE_URL": pgbouncer_url, "DB_TRANSACTION_POOLING": "1", "CELERY_QUEUE": QUEUE}
    folder = tmp_path_factory.mktemp("pgbouncer-platform")
    api, base_url = start_api_server(env, folder / "api.log")
    queues = f"{QUEUE},{QUEUE}.resumes,{QUEUE}.media"  # the settings' execution queues under CELERY_QUEUE
    worker = CeleryProcess(processes.worker(16, queues, *_celery_flags("pgbouncer")), env, folder / "worker.log")
    try:
        yield base_url
    finally:
        worker.stop()
        _stop(api)


@pytest.mark.django_db(transaction=True)
def test_executions_and_streams_run_through_pgbouncer_in_transaction_mode(
    platform_behind_pgbouncer, tenant, agent, streaming_agent
):
    for _ in range(12):  # well past psycopg's prepare threshold of 5 runs per query, on every process
        body = data_of(execute(platform_behind_pgbouncer, agent, tenant, timeout=30))
        assert body["status"] == "completed", body
    for _ in range(6):
        events = stream_agent(platform_behind_pgbouncer, streaming_agent, tenant, timeout=30)
        assert events[-1].data["type"] == "final"
        sequence = [int(event.id) for event in events]
        assert sequence == list(range(1, len(sequence) + 1))  # the relay's log reads too: gap-free
    # the query API's list (a count and a page: two more queries per request), run well past 5 times
    for _ in range(8):
        listing = httpx.get(
            f"{platform_behind_pgbouncer}/api/v1/executions",
            headers={"Authorization": tenant.workspace_key.raw_key},
            timeout=30,
        )
        assert listing.status_code == 200, listing.text
    assert int(listing.headers["X-Total-Count"]) == 18
