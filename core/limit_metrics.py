"""Prometheus metrics of the limits: requests refused by a key's rate limit, claims held back by a
workspace's running cap. Counters only, so any layer may count (accounts, executions); the running
and deferred gauges are read from PostgreSQL at scrape time (executions/concurrency.py,
`LimitsCollector`). Kept apart until /metrics (core/metrics.py) takes them in."""

from prometheus_client import Counter

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
