"""core/pg_backend: the pool Django builds gets our check through psycopg_pool's private `_check`.
These tests fail when a psycopg_pool upgrade moves it, instead of the recovery silently stopping."""

import psycopg
import pytest
from django.db import connections
from psycopg_pool import ConnectionPool

from core.pg_backend.base import DatabaseWrapper


def test_the_pool_keeps_its_check_in_the_private_attribute_we_replace():
    pool = ConnectionPool("", open=False, check=ConnectionPool.check_connection)
    assert pool._check is ConnectionPool.check_connection


@pytest.mark.django_db(transaction=True)
def test_getconn_calls_the_check_we_installed_and_a_broken_connection_makes_it_check_the_pool():
    wrapper = DatabaseWrapper(
        {**connections["default"].settings_dict, "OPTIONS": {"pool": {"min_size": 1, "max_size": 2}}}, alias="probe"
    )
    pool = wrapper.pool
    assert pool._check is not ConnectionPool.check_connection  # ours, installed on Django's pool
    checked_all = []
    pool.check = lambda: checked_all.append(True)  # what a broken connection triggers
    pool.open(wait=True)
    try:
        with pool.connection() as conn:
            backend = conn.info.backend_pid
        with psycopg.connect(**{k: v for k, v in wrapper.get_connection_params().items() if k != "context"}) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [backend])
        with pool.connection(timeout=10) as conn:  # the check finds the broken one, a fresh one follows
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert checked_all
    finally:
        wrapper.close_pool()
