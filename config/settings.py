"""Settings, all read from the environment here and nowhere else.

With no DATABASE_URL / REDIS_URL the embedded servers of ops.local_services are used.
"""

import os
import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from ops import local_services

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


DEBUG = env_bool("DEBUG", False)
# PRODUCTION=1 (docker-compose sets it) is every deployment that is not one checkout's local
# development: there SECRET_KEY must be set, the same in every process, and not a public value (with a
# known key anyone forges download links, stream tokens and admin sessions), and cookies are Secure.
PRODUCTION = env_bool("PRODUCTION", False)
PUBLIC_SECRET_KEYS = {"insecure-local-development-key-change-me", "change-me-in-production"}
SECRET_KEY_MIN_CHARS = 32
SECRET_KEY = os.environ.get("SECRET_KEY", "").strip()
if PRODUCTION and (not SECRET_KEY or SECRET_KEY in PUBLIC_SECRET_KEYS or len(SECRET_KEY) < SECRET_KEY_MIN_CHARS):
    raise ImproperlyConfigured(
        f"PRODUCTION is on, so SECRET_KEY must be set to a random value of at least {SECRET_KEY_MIN_CHARS} "
        "characters, the same for the API, the workers and housekeeping (for example the output of "
        "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`); public default values are refused."
    )
if not SECRET_KEY:  # local development: this checkout's own key, generated once under LOCAL_DATA_DIR
    SECRET_KEY = local_services.local_secret_key()
# Session and CSRF cookies only over HTTPS: on by default with PRODUCTION.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", PRODUCTION)
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto itself (dropping the client's): a request
# is HTTPS when it says so. Never on without such a proxy, or any client could claim HTTPS.
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
ALLOWED_HOSTS = [h for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    # django.contrib.admin, with the operators' dashboard on its index (executions/admin_site.py)
    "executions.admin_site.ConsoleAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    # Swagger UI's and Redoc's files, served from the package (/api/docs/, /api/redoc/: no CDN)
    "drf_spectacular_sidecar",
    "corsheaders",
    "django_eventstream",
    "core",
    "accounts",
    "agents",
    "executions",
    "conversations",
    "files",
    "webhooks",
    "workers",
    "schedules",
    "api",
    "ops",
]

# No GZip middleware: it would buffer the SSE streams.
# Every one is async-capable, so an async view's request never goes through a thread for the
# chain itself; api.http.middleware's Common and Authentication are Django's, with their hooks run
# on the event loop.
MIDDLEWARE = [
    # Outermost: the request_id of every line the request logs, and its access line and metrics.
    "api.http.access_log.AccessLogMiddleware",
    # /livez, /readyz and /healthz, answered before the host check (a probe asks by pod IP)
    "ops.health.ProbesMiddleware",
    # Then CORS (django-cors-headers, async-capable), so that a preflight is answered before
    # anything else (no key, no body) and every answer, errors included, carries the CORS headers.
    # It reads only the Origin and Access-Control-Request-* headers and matches the path.
    "corsheaders.middleware.CorsMiddleware",
    # Then a NUL in the path, the query or a header is refused before anything else reads it.
    "api.http.middleware.NulCharacterMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # The admin's static files under uvicorn. ServeStatic is async-capable (WhiteNoise is sync-only,
    # which made Django run the whole middleware chain of every request through a thread).
    "servestatic.middleware.ServeStaticMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "api.http.middleware.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "api.http.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "api.http.middleware.WorkspaceHeadersMiddleware",
    # innermost: a view's PostgreSQL / Redis / broker error is a JSON 503 with Retry-After
    "api.http.dependencies.DependencyErrorsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASE_URL = os.environ.get("DATABASE_URL") or local_services.database_url()
# Opening a PostgreSQL connection costs milliseconds, so no process should open one per request.
# The API (ASGI) and the workers (a thread per run in flight) use Django's psycopg pool:
# DB_POOL_MAX_SIZE, set per process kind by ops/processes.py (`make run`, the tests, the bench).
# A worker's runs give their connection back before every wait (model, tool, timer), so a pool far
# smaller than the runs in flight serves them. DB_CONN_MAX_AGE keeps one connection per thread instead.
DATABASES = {
    "default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 0), conn_health_checks=True)
}
# A PostgreSQL that does not answer fails a connection attempt after DB_CONNECT_TIMEOUT_SECONDS
# (libpq counts at least 2), and a request waits at most DB_POOL_TIMEOUT_SECONDS for a pooled
# connection (the API sets 3, ops/processes.py): then its 503, not a request hung for half a minute.
DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env_int("DB_CONNECT_TIMEOUT_SECONDS", 5)
if env_int("DB_POOL_MAX_SIZE", 0):
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"]["pool"] = {
        "min_size": 1,
        "max_size": env_int("DB_POOL_MAX_SIZE", 0),
        "timeout": env_float("DB_POOL_TIMEOUT_SECONDS", 30.0),
    }
# Names the process kind's connections in pg_stat_activity (ops/processes.py sets it per kind).
if os.environ.get("DB_APPLICATION_NAME"):
    DATABASES["default"].setdefault("OPTIONS", {})["application_name"] = os.environ["DB_APPLICATION_NAME"]
# Threads that run the ASGI server's sync code (config/asgi.py): as many as pooled connections, so a
# sync call never waits for a connection; a call that finds no free thread waits for one, no timeout.
ASGI_SYNC_THREADS = env_int("ASGI_SYNC_THREADS", env_int("DB_POOL_MAX_SIZE", 0) or 10)
# Django's backend, with a pool that recovers at once from a PostgreSQL restart (core/pg_backend).
DATABASES["default"]["ENGINE"] = "core.pg_backend"
# Behind a transaction-mode pooler (PgBouncer: compose's `pgbouncer` service), each transaction may
# run on another server session, so nothing may rely on session state: no server-side cursors
# (Django's iterator() keeps one open between fetches) and no prepared statements (psycopg prepares a
# query after its 5th run; PgBouncer before 1.21 cannot route them). Nothing else here keeps session
# state; the one session-level advisory lock (ops/management/commands/migrate.py) is taken by
# migrate, which connects to PostgreSQL directly.
DB_TRANSACTION_POOLING = env_bool("DB_TRANSACTION_POOLING", False)
if DB_TRANSACTION_POOLING:
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
    DATABASES["default"]["OPTIONS"]["prepare_threshold"] = None
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL") or local_services.redis_url()

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = os.environ.get("STATIC_ROOT") or None  # only for `collectstatic`
# ServeStatic serves the admin's static files straight from the apps: no collectstatic step needed.
SERVESTATIC_USE_FINDERS = True

# --- Storage: S3 through django-storages when a bucket is configured, the local disk otherwise.
AWS_STORAGE_BUCKET_NAME = os.environ.get("AWS_STORAGE_BUCKET_NAME", "")
if AWS_STORAGE_BUCKET_NAME:
    AWS_S3_ENDPOINT_URL = os.environ.get("AWS_S3_ENDPOINT_URL") or None
    # Where clients fetch presigned URLs from, when that is not where the platform reaches S3 (compose:
    # the platform uses http://minio:9000, a name only its network resolves). Presigned URLs are
    # signed for this address (files/storage.py); empty: AWS_S3_ENDPOINT_URL's.
    AWS_S3_PUBLIC_ENDPOINT_URL = os.environ.get("AWS_S3_PUBLIC_ENDPOINT_URL") or None
    AWS_S3_REGION_NAME = os.environ.get("AWS_S3_REGION_NAME") or None
    AWS_QUERYSTRING_EXPIRE = env_int("AWS_QUERYSTRING_EXPIRE", 900)
    # SigV4 (every S3-compatible server takes it; SigV2 is deprecated and MinIO's URLs were signed
    # with it), and path-style addresses on a server of our own (http://host:9000/bucket/key: no DNS
    # name per bucket), virtual-hosted ones on AWS.
    AWS_S3_SIGNATURE_VERSION = "s3v4"
    AWS_S3_ADDRESSING_STYLE = "path" if AWS_S3_ENDPOINT_URL else "virtual"
    _default_storage = {"BACKEND": "files.storage.S3Storage"}
else:
    MEDIA_ROOT = os.environ.get("MEDIA_ROOT", str(local_services.DATA_DIR / "media"))
    _default_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# --- REST framework
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # The one JSON parser (api/http/schemas.json_object): objects only, limited depth, storable strings.
    "DEFAULT_PARSER_CLASSES": ["api.http.schemas.JsonObjectParser"],
    "EXCEPTION_HANDLER": "api.http.exception_handler.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "api.http.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Skills and agents execution platform",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # /api/docs/ and /api/redoc/ load their scripts and styles from drf-spectacular-sidecar's static files
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.http.openapi.add_async_endpoints",
        "api.http.openapi.document_common_errors",
    ],
}

# --- CORS for browser apps on other origins (django-cors-headers). Only the listed origins
# (`scheme://host[:port]`, comma-separated) may read answers; none by default. No cookies are
# involved (keys travel in headers, stream tokens in the query), so credentials stay off.
CORS_ALLOWED_ORIGINS = [o.strip() for o in os.environ.get("CORS_ALLOWED_ORIGINS", "").split(",") if o.strip()]
CORS_URLS_REGEX = r"^/(?!admin/)"  # the API's routes, not the admin's
CORS_ALLOW_HEADERS = (
    "accept",
    "authorization",
    "content-type",
    "idempotency-key",
    "last-event-id",
    "prefer",
    "x-api-key",
    "x-workspace-id",
)
# What a script may read of an answer beyond the CORS-safelisted headers: the workspace headers,
# where to poll an async start, and the query API's pagination headers.
CORS_EXPOSE_HEADERS = (
    "X-Credits-Remaining",
    "X-App-Version",
    "X-Workspace-Id",
    "Location",
    "Preference-Applied",
    "Retry-After",
    "X-Total-Count",
    "X-Total-Pages",
    "X-Page-Number",
    "X-Page-Size",
    "Link",
)

# --- django-eventstream: we use its channel manager for authorization (it allows every channel
# by default) and serve the relay ourselves (executions/streaming.py explains why).
EVENTSTREAM_CHANNELMANAGER_CLASS = "executions.streaming.ExecutionChannelManager"
EVENTSTREAM_STORAGE_CLASS = "executions.streaming.ExecutionEventStorage"

# --- Execution runtime
# A dead worker's executions are re-queued between LEASE and LEASE + REAPER_INTERVAL seconds after
# its last renewal. Renewing is one UPDATE per worker process per third of the lease, so it is short.
EXECUTION_LEASE_SECONDS = env_int("EXECUTION_LEASE_SECONDS", 15)
EXECUTION_MAX_ATTEMPTS = env_int("EXECUTION_MAX_ATTEMPTS", 3)
# A queued row whose message was published this long ago and is still not claimed is re-dispatched.
EXECUTION_REDISPATCH_AFTER_SECONDS = env_int("EXECUTION_REDISPATCH_AFTER_SECONDS", 60)
# One attempt's time limits, enforced by the runtime (Celery's threads pool has none): past the soft
# limit (60 s less) the run fails itself at its next step or chunk, past the hard one its lease
# renewer fails it (workers/leases.py).
EXECUTION_HARD_TIME_LIMIT_SECONDS = env_int("EXECUTION_HARD_TIME_LIMIT_SECONDS", 3600)
# A worker told to stop (SIGTERM: a deploy, a scale-down) claims nothing more and lets its runs go on
# for this long, then hands each one still running back (queued, from its checkpoint) so that another
# worker resumes it at once rather than after its lease (workers/shutdown.py). 20: within Kubernetes'
# default 30 s grace before SIGKILL, with room for the hand-backs and Celery's exit.
WORKER_SHUTDOWN_GRACE_SECONDS = env_float("WORKER_SHUTDOWN_GRACE_SECONDS", 20.0)
REAPER_INTERVAL_SECONDS = env_int("REAPER_INTERVAL_SECONDS", 5)
# How often beat purges the executions past their workspace's execution_retention_days.
PURGE_INTERVAL_SECONDS = env_int("PURGE_INTERVAL_SECONDS", 3600)
SSE_HEARTBEAT_SECONDS = env_int("SSE_HEARTBEAT_SECONDS", 15)
SSE_TOKEN_MAX_AGE_SECONDS = env_int("SSE_TOKEN_MAX_AGE_SECONDS", 300)
SYNC_EXECUTE_TIMEOUT_SECONDS = env_int("SYNC_EXECUTE_TIMEOUT_SECONDS", 300)
# The text of a model's stream is flushed to the event log at most this often (coalescing).
TEXT_FLUSH_INTERVAL_MS = env_int("TEXT_FLUSH_INTERVAL_MS", 50)
# Built-in model: delay between streamed chunks (the demo agent overrides it per node).
BUILTIN_MODEL_CHUNK_DELAY_MS = env_int("BUILTIN_MODEL_CHUNK_DELAY_MS", 0)
# While a media_generation node waits for its provider, a `heartbeat` event goes out this often.
MEDIA_HEARTBEAT_SECONDS = env_float("MEDIA_HEARTBEAT_SECONDS", 15.0)
# Conversation history replayed to the model: the newest messages up to both budgets.
CONVERSATION_HISTORY_MAX_MESSAGES = env_int("CONVERSATION_HISTORY_MAX_MESSAGES", 50)
CONVERSATION_HISTORY_MAX_CHARS = env_int("CONVERSATION_HISTORY_MAX_CHARS", 32000)
# A file a skill writes into its workspace.
SKILL_WORKSPACE_MAX_FILE_BYTES = env_int("SKILL_WORKSPACE_MAX_FILE_BYTES", 10 * 1024 * 1024)
# POST /agents/{id}/execute/batch: items per request.
BATCH_MAX_ITEMS = env_int("BATCH_MAX_ITEMS", 100)
# POST /executions/{id}/tool-result: size of one client tool's JSON result.
TOOL_RESULT_MAX_BYTES = env_int("TOOL_RESULT_MAX_BYTES", 1024 * 1024)
# Request bodies, refused with 413 before they are read (api/http/request_limits.py, the first layer
# of the ASGI application): every JSON route's, unless it declares one of the two below.
REQUEST_BODY_MAX_BYTES = env_int("REQUEST_BODY_MAX_BYTES", 1024 * 1024)
# Slow clients (slowloris): a request's headers must arrive within this many seconds of its
# connection or first byte (ops/http_protocol.py, uvicorn has no such limit), its body within this
# many of its headers (api/http/request_limits.py: room for a 50 MiB upload at ~4 Mbit/s); else 408.
REQUEST_HEADER_TIMEOUT_SECONDS = env_float("REQUEST_HEADER_TIMEOUT_SECONDS", 10)
REQUEST_BODY_TIMEOUT_SECONDS = env_float("REQUEST_BODY_TIMEOUT_SECONDS", 120)
# The batch route: BATCH_MAX_ITEMS items of up to 320 KiB each (a message of 65,536 characters at 4
# UTF-8 bytes each, 16 KiB of variables, the rest of an item): 32 MiB for 100 items.
BATCH_BODY_MAX_BYTES = BATCH_MAX_ITEMS * 320 * 1024
# The resume routes: a result or payload of TOOL_RESULT_MAX_BYTES as compact JSON, with room for the
# rest of the body and for whitespace.
RESUME_BODY_MAX_BYTES = TOOL_RESULT_MAX_BYTES + REQUEST_BODY_MAX_BYTES
# Django's own cap on a body read into memory would answer its HTML 400 above 2.5 MB, under the
# limits above: the ASGI layer caps every route instead.
DATA_UPLOAD_MAX_MEMORY_SIZE = None
# Links to generated files on the local disk (S3 uses presigned URLs): the API's public address
# (empty: links are paths relative to the API) and how long a link stays valid.
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "").rstrip("/")
DOWNLOAD_URL_MAX_AGE_SECONDS = env_int("DOWNLOAD_URL_MAX_AGE_SECONDS", 24 * 3600)
# The `fal` media provider (workers/providers/fal.py): Fal.ai's queue API and key; its results come
# back to POST /inbound/fal (a webhook URL built from PUBLIC_BASE_URL; empty: polling only), signed
# with an ED25519 key from the JWKS (cached this long), and a waiting node polls the queue this often
# when no webhook came. Downloaded media is limited to FAL_MEDIA_MAX_BYTES.
FAL_KEY = os.environ.get("FAL_KEY", "")
FAL_QUEUE_URL = os.environ.get("FAL_QUEUE_URL", "https://queue.fal.run").rstrip("/")
FAL_JWKS_URL = os.environ.get("FAL_JWKS_URL", "https://rest.alpha.fal.ai/.well-known/jwks.json")
FAL_JWKS_CACHE_SECONDS = env_int("FAL_JWKS_CACHE_SECONDS", 3600)
FAL_POLL_INTERVAL_SECONDS = env_int("FAL_POLL_INTERVAL_SECONDS", 30)
FAL_MEDIA_MAX_BYTES = env_int("FAL_MEDIA_MAX_BYTES", 50 * 1024 * 1024)
# A skill artifact's download_url: signed for its tenant, valid this long (and a key of the tenant).
ARTIFACT_URL_MAX_AGE_SECONDS = env_int("ARTIFACT_URL_MAX_AGE_SECONDS", 3600)
# POST /v1/files/: size of one file of a caller's personal collection.
FILE_UPLOAD_MAX_BYTES = env_int("FILE_UPLOAD_MAX_BYTES", 50 * 1024 * 1024)
# The environment variables a model's `api_key_env` may name (fnmatch patterns, comma-separated);
# the platform's own secrets (accounts/model_keys.py) never, whatever the patterns say.
MODEL_API_KEY_ENV_ALLOWED = [
    pattern.strip()
    for pattern in os.environ.get("MODEL_API_KEY_ENV_ALLOWED", "*_API_KEY").split(",")
    if pattern.strip()
]
# Langfuse tracing of executions (workers/tracing.py): on only when all three are set.
LANGFUSE_HOST = os.environ.get("LANGFUSE_HOST", "")
LANGFUSE_PUBLIC_KEY = os.environ.get("LANGFUSE_PUBLIC_KEY", "")
LANGFUSE_SECRET_KEY = os.environ.get("LANGFUSE_SECRET_KEY", "")

# --- Outbound webhooks (webhooks/): a workspace's endpoints get signed execution events.
# Targets that resolve to loopback, private, link-local or other non-global addresses are refused at
# delivery time (SSRF) unless this is on; `make run` turns it on for local development.
WEBHOOK_ALLOW_PRIVATE_URLS = env_bool("WEBHOOK_ALLOW_PRIVATE_URLS", False)
# One delivery attempt: the whole request (connect, send, the answer's head and excerpt) is bounded by this.
WEBHOOK_TIMEOUT_SECONDS = env_float("WEBHOOK_TIMEOUT_SECONDS", 10.0)
# Retries of a failed attempt: base * 2^(n-1) seconds after the n-th, at most MAX_DELAY, while the
# delivery is younger than WINDOW (24 h); then it has failed.
WEBHOOK_RETRY_BASE_SECONDS = env_float("WEBHOOK_RETRY_BASE_SECONDS", 5.0)
WEBHOOK_RETRY_MAX_DELAY_SECONDS = env_float("WEBHOOK_RETRY_MAX_DELAY_SECONDS", 2 * 3600.0)
WEBHOOK_RETRY_WINDOW_SECONDS = env_float("WEBHOOK_RETRY_WINDOW_SECONDS", 24 * 3600.0)
# An endpoint is disabled once this many attempts in a row failed over at least this long (no success between).
WEBHOOK_DISABLE_AFTER_FAILURES = env_int("WEBHOOK_DISABLE_AFTER_FAILURES", 10)
WEBHOOK_DISABLE_AFTER_SECONDS = env_float("WEBHOOK_DISABLE_AFTER_SECONDS", 3600.0)
# Finished deliveries (and their attempts) are deleted this long after they ended (with the hourly purge).
WEBHOOK_DELIVERY_RETENTION_DAYS = env_int("WEBHOOK_DELIVERY_RETENTION_DAYS", 30)
# Endpoints per workspace.
WEBHOOK_MAX_ENDPOINTS = env_int("WEBHOOK_MAX_ENDPOINTS", 20)

# --- Schedules (schedules/services.py): beat's tick fires the due ones this often (a run starts at
# most this late), at most SCHEDULE_TICK_BATCH per tick (the rest on the next).
SCHEDULE_TICK_SECONDS = env_int("SCHEDULE_TICK_SECONDS", 10)
SCHEDULE_TICK_BATCH = env_int("SCHEDULE_TICK_BATCH", 500)
# A due run while the previous execution has not ended: `skip` it or `queue` it (a schedule's own
# `overlap` field overrides this default); at most SCHEDULE_MAX_QUEUED_RUNS wait, more are skipped.
SCHEDULE_OVERLAP_DEFAULT = os.environ.get("SCHEDULE_OVERLAP_DEFAULT", "skip")
if SCHEDULE_OVERLAP_DEFAULT not in {"skip", "queue"}:
    raise ImproperlyConfigured("SCHEDULE_OVERLAP_DEFAULT must be skip or queue.")
SCHEDULE_MAX_QUEUED_RUNS = env_int("SCHEDULE_MAX_QUEUED_RUNS", 10)
SCHEDULE_MAX_PER_WORKSPACE = env_int("SCHEDULE_MAX_PER_WORKSPACE", 100)

# --- Celery on a Redis broker (see DESIGN.md "Known pitfalls").
CELERY_BROKER_URL = REDIS_URL
# kombu's Redis transport with one fix: a Redis restart cannot end the worker (config/celery.py)
CELERY_BROKER_TRANSPORT = "config.celery:RedisTransport"
CELERY_RESULT_BACKEND = None  # results live in the Execution row, not in Celery
CELERY_TASK_IGNORE_RESULT = True
# Ack after the task ran, so a worker that dies mid-run leaves the message to be redelivered;
# the database claim (conditional UPDATE + attempt) decides who actually runs it.
CELERY_TASK_ACKS_LATE = True
# A task killed by a crash of its child process is acked as failed even with late ack: the reaper
# recovers it from the lease, so we do not also ask Celery to reject/requeue it.
CELERY_TASK_REJECT_ON_WORKER_LOST = False
# A worker reserves as many messages as it has run slots (threads pool: --concurrency), no more:
# long runs must not hold a backlog hostage on one worker.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Redis redelivers a reserved message after visibility_timeout even while it still runs: keep it
# above the hard time limit so a long run is never delivered twice by the broker itself.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": EXECUTION_HARD_TIME_LIMIT_SECONDS + 600}
# Keep retrying the broker at start-up and after a lost connection instead of exiting.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# One queue per kind of work, so that no backlog of one delays another (ops/processes.py says which
# process consumes which): an execution's first run; its resumes (a client tool's result, an
# approval, an event, a re-queue after a lost lease: someone is waiting on a run already started);
# the media polls of executions waiting on a provider; webhook deliveries (their own processes: a
# dead endpoint's backlog never holds an execution's thread); beat's housekeeping; the schedules'
# tick. Names derived from CELERY_QUEUE and HOUSEKEEPING_QUEUE, so one setting moves a whole stack.
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_QUEUE", "executions")
RESUMES_QUEUE = f"{CELERY_TASK_DEFAULT_QUEUE}.resumes"
MEDIA_QUEUE = f"{CELERY_TASK_DEFAULT_QUEUE}.media"
EXECUTION_QUEUES = (CELERY_TASK_DEFAULT_QUEUE, RESUMES_QUEUE, MEDIA_QUEUE)  # the workers'
WEBHOOKS_QUEUE = f"{CELERY_TASK_DEFAULT_QUEUE}.webhooks"
HOUSEKEEPING_QUEUE = os.environ.get("HOUSEKEEPING_QUEUE", "housekeeping")
SCHEDULES_QUEUE = f"{HOUSEKEEPING_QUEUE}.schedules"
CELERY_TASK_ROUTES = {
    "workers.tasks.reap_executions": {"queue": HOUSEKEEPING_QUEUE},
    "workers.tasks.purge_expired_executions": {"queue": HOUSEKEEPING_QUEUE},
    "workers.tasks.sweep_webhook_deliveries": {"queue": HOUSEKEEPING_QUEUE},
    "workers.tasks.fire_due_schedules": {"queue": SCHEDULES_QUEUE},
    "workers.tasks.deliver_webhook": {"queue": WEBHOOKS_QUEUE},
}
# Fairness between workspaces (executions/fairness.py): within a queue, the broker hands out the
# highest priority first; a workspace's first FAIR_SHARE_STARTS starts in a FAIR_SHARE_WINDOW_SECONDS
# window go ahead of the rest of its burst, so one workspace's thousands of queued starts do not make
# another's single execution wait behind them.
FAIR_SHARE_STARTS = env_int("FAIR_SHARE_STARTS", 20)
FAIR_SHARE_WINDOW_SECONDS = env_int("FAIR_SHARE_WINDOW_SECONDS", 10)
# Webhook deliveries in flight at once: per webhooks process (its threads), and per endpoint (more
# wait for a free slot without counting as an attempt, webhooks/delivery.py).
WEBHOOK_WORKER_CONCURRENCY = env_int("WEBHOOK_WORKER_CONCURRENCY", 32)
WEBHOOK_ENDPOINT_MAX_IN_FLIGHT = env_int("WEBHOOK_ENDPOINT_MAX_IN_FLIGHT", 4)
# Runs in flight per worker process (one thread each: an execution waiting on a model costs a thread,
# not a process), and the database connections they share.
WORKER_CONCURRENCY = env_int("WORKER_CONCURRENCY", 100)
WORKER_DB_POOL_SIZE = env_int("WORKER_DB_POOL_SIZE", 16)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE = {
    "reap-executions": {"task": "workers.tasks.reap_executions", "schedule": float(REAPER_INTERVAL_SECONDS)},
    "purge-expired-executions": {
        "task": "workers.tasks.purge_expired_executions",
        "schedule": float(PURGE_INTERVAL_SECONDS),
    },
    # webhook deliveries whose retry is due, or whose message or worker was lost (webhooks/delivery.py)
    "sweep-webhook-deliveries": {
        "task": "workers.tasks.sweep_webhook_deliveries",
        "schedule": float(REAPER_INTERVAL_SECONDS),
    },
    "fire-due-schedules": {"task": "workers.tasks.fire_due_schedules", "schedule": float(SCHEDULE_TICK_SECONDS)},
}

# Logs (core/structured_logs.py): JSON lines, or readable lines for a person at a terminal (the
# default when stderr is one, e.g. `make run`); both carry the bound request_id, workspace_id,
# execution_id and attempt. LOG_FILE adds a JSON file of every line at LOG_LEVEL (`make run` writes
# one per process under .data/logs/ and keeps its console to warnings: LOG_CONSOLE_LEVEL).
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO").upper()
LOG_FORMAT = os.environ.get("LOG_FORMAT", "").strip().lower() or ("console" if sys.stderr.isatty() else "json")
if LOG_FORMAT not in {"json", "console"}:
    raise ImproperlyConfigured("LOG_FORMAT must be json or console.")
LOG_CONSOLE_LEVEL = os.environ.get("LOG_CONSOLE_LEVEL", "").upper() or LOG_LEVEL
LOG_FILE = os.environ.get("LOG_FILE", "")
# Celery's lines per task (received, succeeded) and beat's per schedule tick: the reaper alone made
# four a REAPER_INTERVAL_SECONDS. The runtime logs one line per attempt with its fields instead.
_CELERY_ROUTINE_LEVEL = "DEBUG" if LOG_LEVEL == "DEBUG" else "WARNING"
_log_handlers = {
    "console": {
        "class": "logging.StreamHandler",
        "formatter": LOG_FORMAT,
        "filters": ["context", "hygiene"],
        "level": LOG_CONSOLE_LEVEL,
    }
}
if LOG_FILE:
    _log_handlers["file"] = {
        "class": "logging.handlers.RotatingFileHandler",
        "filename": LOG_FILE,
        "maxBytes": 20 * 1024 * 1024,
        "backupCount": 2,
        "formatter": "json",
        "filters": ["context", "hygiene"],
    }
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # core/log_hygiene.py: no signed token, query string or ANSI colour in a line; a bad Host a warning
    "filters": {
        "context": {"()": "core.structured_logs.ContextFilter"},
        "hygiene": {"()": "core.log_hygiene.LogHygieneFilter"},
        "disallowed_host": {"()": "core.log_hygiene.DisallowedHostFilter"},
    },
    "formatters": {
        "json": {"()": "core.structured_logs.JsonFormatter"},
        "console": {"()": "core.structured_logs.ConsoleFormatter"},
    },
    "handlers": _log_handlers,
    "root": {"handlers": list(_log_handlers), "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # httpx logs every request's full URL at INFO, and an HTTP tool's or a provider's URL may hold a key.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        # Django's lines through our handlers only (its default console and mail_admins handlers go)
        "django": {"handlers": [], "propagate": True},
        "django.security.DisallowedHost": {"filters": ["disallowed_host"]},
        # uvicorn's own lines through our handlers and format (it configured its own before Django's setup)
        "uvicorn": {"handlers": [], "propagate": True},
        # Never uvicorn's access log, however uvicorn was started (--no-access-log or not): it logs the
        # full URL, signed tokens included, and api/http/access_log.py already writes one line per
        # request. uvicorn writes it only while this logger has a handler, its parents' included.
        "uvicorn.access": {"handlers": [], "propagate": False},
        "celery.app.trace": {"level": _CELERY_ROUTINE_LEVEL},
        "celery.worker.strategy": {"level": _CELERY_ROUTINE_LEVEL},
        "celery.beat": {"level": _CELERY_ROUTINE_LEVEL},
    },
}

# --- Limits (a workspace's or a key's own value in the admin wins; 0 is unlimited).
# Executions of one workspace running at once; more wait `queued` in order (executions/concurrency.py).
WORKSPACE_MAX_RUNNING_EXECUTIONS = env_int("WORKSPACE_MAX_RUNNING_EXECUTIONS", 0)
# Requests one API key may make per window; more are 429 `rate_limited` (accounts/rate_limits.py).
API_KEY_RATE_LIMIT_PER_MINUTE = env_int("API_KEY_RATE_LIMIT_PER_MINUTE", 0)
# The window's length: a minute (not from the environment; tests shorten it).
API_KEY_RATE_LIMIT_WINDOW_SECONDS = 60.0
# A Redis that does not answer within this lets the request through (the limit fails open).
API_KEY_RATE_LIMIT_REDIS_TIMEOUT_SECONDS = 0.5

# Prometheus metrics (core/metrics.py, ops/metrics.py): `/metrics` answers only a request with
# `Authorization: Bearer <METRICS_TOKEN>` (unset: 404 to everyone). PROMETHEUS_MULTIPROC_DIR makes
# the processes of a host share their values through files there; a worker on a host of its own
# serves its values on WORKER_METRICS_PORT (0: none).
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
# The mode is decided here, once: prometheus_client turns multiprocess mode on when the variable
# merely exists, even empty, and then writes its files into the working directory (read-only in a
# container). An empty value is removed before prometheus_client is imported (core/metrics.py
# checks that it agrees), so empty means off for it too.
PROMETHEUS_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
if PROMETHEUS_MULTIPROC_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = PROMETHEUS_MULTIPROC_DIR
else:
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    os.environ.pop("prometheus_multiproc_dir", None)  # prometheus_client's older spelling
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 0)

# Connections of the async pool that SSE streams read the event log through (per process).
SSE_DB_POOL_SIZE = env_int("SSE_DB_POOL_SIZE", 10)
