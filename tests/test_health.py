"""GET /healthz: 200 when PostgreSQL and Redis answer, 503 otherwise."""

import subprocess
import sys

import httpx
import pytest

from tests.conftest import REPO_ROOT, _free_port


@pytest.mark.django_db
def test_healthy(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}


@pytest.mark.django_db
def test_redis_down_is_503(client, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{_free_port()}/0"
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["redis"].startswith("error")
    assert response.json()["checks"]["postgres"] == "ok"


def test_postgres_down_is_503(services_env, tmp_path):
    """A real server whose DATABASE_URL points at a port where nothing listens."""
    port = _free_port()
    env = {**services_env, "DATABASE_URL": f"postgres://postgres@127.0.0.1:{_free_port()}/nothing"}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "config.asgi:application", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                break
            except httpx.ConnectError:
                import time

                time.sleep(0.1)
        assert response.status_code == 503
        assert response.json()["checks"]["postgres"].startswith("error")
        assert response.json()["checks"]["redis"] == "ok"
    finally:
        process.terminate()
        process.wait(10)
