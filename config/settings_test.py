"""Test settings: the same as production except for isolation from a running `make run`.

The Redis database index differs, so a `make run` worker on the same Redis never takes test tasks;
pytest-django creates its own `test_...` PostgreSQL database.
"""

import os

os.environ.setdefault("TEXT_FLUSH_INTERVAL_MS", "20")
os.environ.setdefault("EXECUTION_LEASE_SECONDS", "4")
# a live worker the tests stop (tests/conftest.py: SIGKILL 15 s after SIGTERM) hands its runs back first
os.environ.setdefault("WORKER_SHUTDOWN_GRACE_SECONDS", "5")
os.environ.setdefault("REAPER_INTERVAL_SECONDS", "1")
os.environ.setdefault("EXECUTION_REDISPATCH_AFTER_SECONDS", "5")
os.environ.setdefault("SSE_HEARTBEAT_SECONDS", "2")
os.environ.setdefault("MEDIA_HEARTBEAT_SECONDS", "0.3")
# webhooks: the receivers of the tests listen on 127.0.0.1 (the SSRF tests turn this off), retries come fast
os.environ.setdefault("WEBHOOK_ALLOW_PRIVATE_URLS", "true")
os.environ.setdefault("WEBHOOK_RETRY_BASE_SECONDS", "0.5")
os.environ.setdefault("WEBHOOK_TIMEOUT_SECONDS", "3")
# tests/test_schedules.py calls the schedules' tick itself, with a controlled clock: the beat of a
# live housekeeping process (session-scoped, it keeps running after the live tests) must not tick
# beside it, so it never does within a test session.
os.environ.setdefault("SCHEDULE_TICK_SECONDS", "3600")

from config.settings import *  # noqa: E402,F401,F403
from config.settings import REDIS_URL as _BASE_REDIS_URL  # noqa: E402

if "TEST_REDIS_URL" in os.environ:
    REDIS_URL = os.environ["TEST_REDIS_URL"]
else:
    REDIS_URL = _BASE_REDIS_URL.rsplit("/", 1)[0] + "/9"
CELERY_BROKER_URL = REDIS_URL
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
