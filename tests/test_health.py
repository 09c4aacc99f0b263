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


POD_IP_HOST = "10.42.7.19:8000"  # what a kubelet's probe or a scrape of <svc>.<ns>.svc sends: not in ALLOWED_HOSTS


def test_livez_answers_without_asking_any_dependency_and_for_any_host(client, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{_free_port()}/0"  # down: liveness does not care
    response = client.get("/livez", HTTP_HOST=POD_IP_HOST)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/readyz", "/healthz"])
def test_readyz_and_healthz_answer_for_a_host_outside_allowed_hosts(client, path):
    response = client.get(path, HTTP_HOST=POD_IP_HOST)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.django_db
def test_readyz_checks_postgres_redis_and_migrations(client):
    response = client.get("/readyz")
    assert response.json() == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok", "migrations": "ok"}}


@pytest.mark.django_db
def test_readyz_is_503_while_redis_is_down(client, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{_free_port()}/0"
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["redis"].startswith("error")


@pytest.mark.django_db(transaction=True)
def test_readyz_is_503_until_every_migration_is_applied(client, monkeypatch):
    """A pod of a new release is not ready before its migrations ran (the check reads the recorder)."""
    from django.db import connection

    from ops import health

    monkeypatch.setattr(health, "_migrations_applied", False)
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM django_migrations WHERE id = (SELECT max(id) FROM django_migrations) RETURNING app, name, applied"
        )
        app, name, applied = cursor.fetchone()
    try:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["migrations"] == "error: 1 migrations not applied"
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO django_migrations (app, name, applied) VALUES (%s, %s, %s)", [app, name, applied]
            )
    assert client.get("/readyz").status_code == 200


@pytest.mark.django_db
def test_other_routes_still_refuse_a_host_outside_allowed_hosts(client):
    assert client.get("/agents", HTTP_HOST=POD_IP_HOST).status_code == 400
