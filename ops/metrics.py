"""GET /metrics: the platform's Prometheus metrics (core/metrics.py), for a scraper holding METRICS_TOKEN.

Access: `Authorization: Bearer <METRICS_TOKEN>`. Without METRICS_TOKEN set the route does not
exist (404); a request without the token or with another one gets the same 404, so a scan learns
nothing about the endpoint (compared in constant time).

What it serves: with PROMETHEUS_MULTIPROC_DIR, the values of every process of the host that
writes there (the API processes, the workers, housekeeping: `make run` and the tests set it);
without it, this process's own. Plus gauges read from PostgreSQL at scrape time by
`ExecutionQueueCollector`: one indexed aggregate, no per-row work.

A worker on another host serves `core.metrics.metrics_registry()` on WORKER_METRICS_PORT (workers/tasks.py).
"""

import hmac
import time

from django.conf import settings
from django.db.models import Count, Min
from django.http import Http404, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.metrics import metrics_registry
from executions.concurrency import LimitsCollector
from executions.models import SUSPENDED_STATES, Execution, ExecutionState

# Unfinished states, counted at scrape time (the state index serves the filter).
OPEN_STATES = (ExecutionState.QUEUED, ExecutionState.RUNNING, *SUSPENDED_STATES)


class ExecutionQueueCollector(Collector):
    """Queue depth, the age of the oldest queued execution, and the executions in each unfinished state.

    A queued execution's `updated_at` is when it was queued (created, resumed, re-queued by the
    reaper); the partial index execution_queued_since covers the aggregate."""

    def collect(self):
        queued = Execution.objects.filter(state=ExecutionState.QUEUED).aggregate(
            depth=Count("id"), oldest=Min("updated_at")
        )
        depth = GaugeMetricFamily("skillrun_queue_depth", "Executions queued and not yet claimed by a worker")
        depth.add_metric([], queued["depth"])
        yield depth
        oldest = GaugeMetricFamily(
            "skillrun_queue_oldest_seconds", "How long the oldest queued execution has waited (0: none queued)"
        )
        oldest.add_metric([], max(0.0, time.time() - queued["oldest"].timestamp()) if queued["oldest"] else 0.0)
        yield oldest
        counts = dict(
            Execution.objects.filter(state__in=OPEN_STATES).order_by().values_list("state").annotate(n=Count("id"))
        )
        by_state = GaugeMetricFamily(
            "skillrun_executions_open", "Unfinished executions by state, at scrape time", labels=["state"]
        )
        for state in OPEN_STATES:
            by_state.add_metric([str(state)], counts.get(state, 0))
        yield by_state


_database_gauges = CollectorRegistry(auto_describe=False)
_database_gauges.register(ExecutionQueueCollector())
_database_gauges.register(LimitsCollector())  # running and deferred executions per workspace


def check_metrics_token(request) -> None:
    token = settings.METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if not token or scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Http404("No such page.")


def metrics(request):
    check_metrics_token(request)
    body = generate_latest(metrics_registry()) + generate_latest(_database_gauges)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
