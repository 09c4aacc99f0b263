"""Every Prometheus metric of the platform, defined once here so that every layer can count.

Each event is counted at the one place where it happens (the runtime, the event log, the relay,
the reaper, the ledger), with a counter inc or a histogram observe: no query, no I/O. The API
serves them at `/metrics` (ops/metrics.py), together with the gauges computed from PostgreSQL at
scrape time (queue depth, oldest queued execution).

Processes: prometheus_client keeps a process's values in memory, unless PROMETHEUS_MULTIPROC_DIR
is set when it is imported; then every process writes its values to files in that directory and
the API's `/metrics` adds up the files of all the processes on the host (the API, the workers,
housekeeping). `make run` and the tests' servers set it (a fresh directory at each start). A
worker on another host serves its own values on WORKER_METRICS_PORT (workers/tasks.py).

Labels are bounded sets (states, sources, responder types, providers and their models, reasons),
never ids. Metrics added by later features go here too.
"""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector

# prometheus_client chose its mode when it was imported, from the environment; config/settings.py
# decides it from PROMETHEUS_MULTIPROC_DIR. They disagree only if something imported
# prometheus_client before the settings were read: then fail loudly instead of writing files to
# wherever the working directory is.
if bool(settings.PROMETHEUS_MULTIPROC_DIR) != (values.ValueClass is not values.MutexValue):
    raise ImproperlyConfigured(
        "prometheus_client was imported before config/settings.py decided the metrics mode "
        f"(PROMETHEUS_MULTIPROC_DIR={settings.PROMETHEUS_MULTIPROC_DIR!r})."
    )

# Seconds: from a few milliseconds (a no-op run, a queue that is empty) to an hour (the hard limit).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)

# --- executions ------------------------------------------------------------------------------------

EXECUTIONS_CREATED = Counter(
    "skillrun_executions_created",
    "Executions created (batch items and sub-executions included)",
    ["responder_type", "source"],
)
EXECUTIONS_FINISHED = Counter(
    "skillrun_executions_finished",
    "Executions that reached a terminal state, by that state",
    ["responder_type", "source", "state"],
)
EXECUTION_ATTEMPTS = Counter(
    "skillrun_execution_attempts",
    "Attempts run by a worker, by how they ended (completed, failed, cancelled, suspended, lease_lost, handed_back, interrupted: a database error)",
    ["responder_type", "outcome"],
)
QUEUE_WAIT = Histogram(
    "skillrun_execution_queue_wait_seconds",
    "From an execution's creation to its first claim by a worker",
    ["responder_type"],
    buckets=DURATION_BUCKETS,
)
RUN_TIME = Histogram(
    "skillrun_execution_run_seconds",
    "One attempt's time in a worker, from its claim to its end or suspension",
    ["responder_type", "outcome"],
    buckets=DURATION_BUCKETS,
)
TIME_TO_FIRST_EVENT = Histogram(
    "skillrun_execution_time_to_first_event_seconds",
    "From an execution's creation to the first event its worker emits (its first attempt)",
    ["responder_type"],
    buckets=DURATION_BUCKETS,
)
LEASE_LOSSES = Counter("skillrun_lease_losses", "Attempts that stopped because their lease was lost")
REAPER_RECOVERIES = Counter(
    "skillrun_reaper_recoveries",
    "What the reaper did: requeued (lost lease), failed (lease lost too often), redispatched (lost task message), "
    "timed_out (a suspension's timeout resumed)",
    ["action"],
)

# --- events and streams --------------------------------------------------------------------------

EVENTS_WRITTEN = Counter("skillrun_events_written", "Events written to the executions' logs")
SSE_STREAMS_OPEN = Gauge("skillrun_sse_streams_open", "SSE streams being relayed", multiprocess_mode="livesum")
SSE_LOG_REREADS = Counter(
    "skillrun_sse_log_rereads",
    "Times a stream re-read the event log instead of pub/sub: gap (a message lost or out of order), "
    "resync (after a listener reconnect or an inbox overflow)",
    ["reason"],
)

# --- model providers -----------------------------------------------------------------------------

PROVIDER_CALLS = Counter("skillrun_provider_calls", "Model calls (one streamed turn each)", ["provider", "model"])
PROVIDER_ERRORS = Counter(
    "skillrun_provider_errors", "Model calls that failed, by failure reason", ["provider", "model", "reason"]
)
PROVIDER_LATENCY = Histogram(
    "skillrun_provider_call_seconds",
    "A model call from its request to the end of its stream",
    ["provider", "model"],
    buckets=DURATION_BUCKETS,
)
PROVIDER_TOKENS = Counter(
    "skillrun_provider_tokens",
    "Tokens reported by the providers: input, output, cached_input",
    ["provider", "model", "kind"],
)

# --- credits -------------------------------------------------------------------------------------

CREDITS = Counter(
    "skillrun_credits",
    "Credits held at starts, charged at completion, refunded (the unused part of a hold, an operator's refund)",
    ["operation"],
)

# --- limits: labelled by workspace (a bounded set too: the limits are set per workspace and key) ---

RATE_LIMITED_REQUESTS = Counter(
    "skillrun_rate_limited_requests_total",
    "Requests answered 429 rate_limited because their API key was over its rate limit",
    ["workspace_id"],
)
EXECUTIONS_DEFERRED = Counter(
    "skillrun_executions_deferred_total",
    "Executions held back queued because their workspace ran its maximum of executions at once",
    ["workspace_id"],
)

# --- the HTTP API --------------------------------------------------------------------------------

HTTP_REQUESTS = Counter("skillrun_http_requests", "API requests answered", ["method", "route", "status"])
HTTP_DURATION = Histogram(
    "skillrun_http_request_seconds",
    "Time until an API response starts (an SSE stream: its headers)",
    ["method", "route"],
    buckets=DURATION_BUCKETS,
)


def inc_on_commit(counter, *labels, amount: float = 1) -> None:
    """Count what the transaction does once it is committed (a rolled-back start, end or ledger
    entry did not happen)."""
    child = counter.labels(*labels)
    transaction.on_commit(lambda: child.inc(amount))


def metrics_registry() -> CollectorRegistry:
    """What to export: with PROMETHEUS_MULTIPROC_DIR the values of this host's processes, else this process's."""
    if not settings.PROMETHEUS_MULTIPROC_DIR:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=settings.PROMETHEUS_MULTIPROC_DIR)
    return registry
