"""`manage.py migrate` from many pods at once (ops/management/commands/migrate.py): on an empty
database, concurrent migrates all succeed and apply each migration once."""

import subprocess
import sys
import uuid

import psycopg
import pytest
from django.db import connection

from tests.conftest import REPO_ROOT, _database_url


@pytest.fixture
def empty_database(db, services_env):
    """A database of its own on the test server, dropped at the end."""
    name = f"migrate_race_{uuid.uuid4().hex[:8]}"
    admin_url = _database_url({**connection.settings_dict, "NAME": "postgres"})
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _database_url({**connection.settings_dict, "NAME": name})
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_three_migrates_at_once_on_an_empty_database_all_succeed(empty_database, services_env):
    env = {**services_env, "DATABASE_URL": empty_database, "DJANGO_SETTINGS_MODULE": "config.settings"}
    processes = [
        subprocess.Popen(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=180)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], "\n".join(outputs)
    # one of them applied everything; the others waited for its lock and found nothing to do
    assert sum("No migrations to apply." in output for output in outputs) == 2, "\n".join(outputs)
    with psycopg.connect(empty_database) as conn:
        duplicates = conn.execute(
            "SELECT app, name FROM django_migrations GROUP BY app, name HAVING count(*) > 1"
        ).fetchall()
    assert duplicates == []


def test_migrate_refuses_a_transaction_pooler(services_env):
    env = {**services_env, "DB_TRANSACTION_POOLING": "1", "DJANGO_SETTINGS_MODULE": "config.settings"}
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "session-level lock" in result.stderr
