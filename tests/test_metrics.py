"""GET /metrics: the token guard, and the values after known executions, scraped and parsed with
prometheus_client's own text parser: in-process (the test process's registry) and on the live
servers (the worker's and housekeeping's values through the shared multiprocess directory)."""

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from celery import current_app
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from accounts.credits import account_for, do_grant_credits
from executions.models import Execution, ExecutionEvent, ExecutionState
from tests.conftest import LIVE_METRICS_TOKEN, REPO_ROOT, _free_port
from tests.factories import ApiKeyFactory, CustomerFactory, ExecutionFactory
from tests.helpers import auth, execute, execution_uuid, read_stream, stream_agent, wait_for
from workers import runtime, tasks

TOKEN = "test-metrics-token"


def parse(text: str) -> dict:
    """{(sample name, frozenset of labels): value}"""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(api, token: str = TOKEN) -> dict:
    """The parsed /metrics of the in-process API, Django's test client or a live base URL."""
    headers = {"Authorization": f"Bearer {token}"}
    if isinstance(api, str):
        response = httpx.get(f"{api}/metrics", headers=headers, timeout=10)
        body = response.text
    elif isinstance(api, httpx.Client):
        response = api.get("/metrics", headers=headers)
        body = response.text
    else:
        response = api.get("/metrics", headers=headers)
        body = response.content.decode()
    assert response.status_code == 200, body
    return parse(body)


def value(samples: dict, name: str, **labels) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (sample, sample_labels), v in samples.items() if sample == name and wanted <= sample_labels)


def delta(before: dict, after: dict, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN


# --- the guard -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_without_metrics_token_set_the_route_does_not_exist(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer anything"}).status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    "authorization",
    [None, "", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN, "Bearer"],
)
def test_a_missing_or_wrong_token_gets_the_same_404(client, metrics_token, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert b"skillrun_" not in response.content


@pytest.mark.django_db
def test_the_token_gets_the_prometheus_text_format(client, metrics_token):
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    names = {family.name for family in text_string_to_metric_families(response.content.decode())}
    assert {"skillrun_executions_finished", "skillrun_queue_depth", "skillrun_sse_streams_open"} <= names


@pytest.mark.django_db
def test_another_method_gets_a_json_405_with_the_token_and_the_404_without(client, metrics_token):
    assert client.post("/metrics").status_code == 404
    response = client.post("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


# --- values after known executions (in-process: API and inline runtime in this process) --------------


@pytest.mark.django_db(transaction=True)
def test_three_completed_and_one_failed_execution_move_the_counters_by_exactly_that(
    api, metrics_token, tenant, make_agent
):
    agent = make_agent(tenant.workspace, chunk_delay_ms=0, reply="one two three four five")
    failing = make_agent(tenant.workspace, chunk_delay_ms=0, reply="one two three four five", fail="the model broke")
    before = scrape(api)
    for _ in range(3):
        assert execute(api, agent, tenant).json()["data"]["status"] == "completed"
    execute(api, failing, tenant)
    after = scrape(api)

    rows = list(Execution.objects.filter(agent_version__agent__in=[agent, failing]))
    assert Counter(row.state for row in rows) == {"completed": 3, "failed": 1}
    for source, count in Counter(row.source for row in rows).items():
        assert delta(before, after, "skillrun_executions_created_total", responder_type="agent", source=source) == count
    finished = "skillrun_executions_finished_total"
    assert delta(before, after, finished, responder_type="agent", state="completed") == 3
    assert delta(before, after, finished, responder_type="agent", state="failed") == 1
    assert delta(before, after, finished, state="cancelled") == 0
    attempts = "skillrun_execution_attempts_total"
    assert delta(before, after, attempts, responder_type="agent", outcome="completed") == 3
    assert delta(before, after, attempts, responder_type="agent", outcome="failed") == 1
    assert delta(before, after, "skillrun_execution_queue_wait_seconds_count", responder_type="agent") == 4
    assert delta(before, after, "skillrun_execution_run_seconds_count", outcome="completed") == 3
    assert delta(before, after, "skillrun_execution_time_to_first_event_seconds_count") == 4
    assert delta(before, after, "skillrun_lease_losses_total") == 0

    events = ExecutionEvent.objects.filter(execution__in=rows).count()
    assert delta(before, after, "skillrun_events_written_total") == events

    model = {"provider": "builtin", "model": "builtin"}
    assert delta(before, after, "skillrun_provider_calls_total", **model) == 4
    assert delta(before, after, "skillrun_provider_call_seconds_count", **model) == 4
    assert delta(before, after, "skillrun_provider_errors_total", **model, reason="provider_error") == 1
    tokens = "skillrun_provider_tokens_total"
    assert delta(before, after, tokens, **model, kind="input") == sum(row.input_tokens for row in rows) > 0
    assert delta(before, after, tokens, **model, kind="output") == sum(row.output_tokens for row in rows) > 0

    route = "agents/<str:agent_id>/execute"
    assert (
        delta(before, after, "skillrun_http_requests_total", method="POST", route=route, status="200") == 4
    )  # a failed run too
    assert delta(before, after, "skillrun_http_request_seconds_count", method="POST", route=route) == 4


@pytest.mark.django_db(transaction=True)
def test_credits_held_charged_and_refunded(api, metrics_token, tenant, make_agent):
    customer = CustomerFactory(workspace=tenant.workspace, external_id="cus_metrics")
    issued = ApiKeyFactory(workspace=tenant.workspace, name="customer user", customer=customer)
    do_grant_credits(account_for(tenant.workspace, issued.api_key.principal), Decimal(100))
    headers = {"X-API-Key": issued.raw_key, "X-Workspace-Id": f"workspace:{tenant.workspace.id}"}
    rules = {"base": 10, "per_1k_tokens": 2, "max_tokens": 4000}  # hold 18; a short run costs 12
    paid = make_agent(tenant.workspace, chunk_delay_ms=0, reply="a short answer")
    failing = make_agent(tenant.workspace, chunk_delay_ms=0, reply="a short answer", fail="broken")
    for agent in (paid, failing):
        agent.credit_rules = rules
        agent.save(update_fields=["credit_rules"])

    before = scrape(api)
    assert execute(api, paid, headers=headers).json()["data"]["status"] == "completed"
    execute(api, failing, headers=headers)
    after = scrape(api)
    assert delta(before, after, "skillrun_credits_total", operation="held") == 36
    assert delta(before, after, "skillrun_credits_total", operation="charged") == 12
    assert delta(before, after, "skillrun_credits_total", operation="refunded") == 6 + 18


@pytest.mark.django_db
def test_queue_depth_oldest_queued_and_open_states_are_read_at_scrape_time(client, metrics_token, tenant, agent):
    old, new = (ExecutionFactory(workspace=tenant.workspace, agent=agent) for _ in range(2))
    ExecutionFactory(workspace=tenant.workspace, agent=agent, state=ExecutionState.RUNNING)
    ExecutionFactory(workspace=tenant.workspace, agent=agent, state=ExecutionState.AWAITING_APPROVAL)
    ExecutionFactory(workspace=tenant.workspace, agent=agent, finished=True)
    Execution.objects.filter(id=old.id).update(updated_at=timezone.now() - timedelta(seconds=90))
    samples = scrape(client)
    assert value(samples, "skillrun_queue_depth") == 2
    assert 90 <= value(samples, "skillrun_queue_oldest_seconds") < 120
    assert value(samples, "skillrun_executions_open", state="queued") == 2
    assert value(samples, "skillrun_executions_open", state="running") == 1
    assert value(samples, "skillrun_executions_open", state="awaiting_approval") == 1
    assert value(samples, "skillrun_executions_open", state="waiting_for_external_event") == 0

    Execution.objects.filter(state=ExecutionState.QUEUED).update(state=ExecutionState.CANCELLED)
    samples = scrape(client)
    assert value(samples, "skillrun_queue_depth") == 0 and value(samples, "skillrun_queue_oldest_seconds") == 0


@pytest.mark.django_db  # uncommitted rows: a live housekeeping process of the session cannot reap them first
def test_reaper_recoveries_by_action(
    client, metrics_token, tenant, agent, settings, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(current_app, "send_task", lambda *args, **kwargs: None)  # nothing runs them
    past = timezone.now() - timedelta(seconds=1)
    running = {"state": ExecutionState.RUNNING, "attempt": 1, "lease_expires_at": past, "lease_owner": "dead:1"}
    ExecutionFactory(workspace=tenant.workspace, agent=agent, **running)
    ExecutionFactory(workspace=tenant.workspace, agent=agent, recoveries=settings.EXECUTION_MAX_ATTEMPTS - 1, **running)
    ExecutionFactory(workspace=tenant.workspace, agent=agent, dispatched_at=timezone.now() - timedelta(minutes=5))
    before = scrape(client)
    with django_capture_on_commit_callbacks(execute=True):  # what the commit would run
        tasks.reap_executions()
    after = scrape(client)
    assert delta(before, after, "skillrun_reaper_recoveries_total", action="requeued") == 1
    assert delta(before, after, "skillrun_reaper_recoveries_total", action="failed") == 1
    assert delta(before, after, "skillrun_reaper_recoveries_total", action="redispatched") == 1
    assert delta(before, after, "skillrun_reaper_recoveries_total", action="timed_out") == 0
    assert delta(before, after, "skillrun_executions_finished_total", responder_type="agent", state="failed") == 1


@pytest.mark.django_db(transaction=True)
def test_a_lost_lease_is_counted_once(client, metrics_token, tenant, make_agent):
    """Another attempt takes the execution over while this one streams: it stops with lease_lost."""
    slow = make_agent(tenant.workspace, chunk_delay_ms=100, reply="one two three four five six seven eight")
    # dispatched: a live reaper of the session would otherwise publish it (never sent) to the live worker
    execution = ExecutionFactory(workspace=tenant.workspace, agent=slow, inputs={"message": "hi"}, dispatched=True)
    before = scrape(client)
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(runtime.run_execution(execution.id)))
    thread.start()
    wait_for(lambda: ExecutionEvent.objects.filter(execution_id=execution.id, type="text").exists(), timeout=10)
    Execution.objects.filter(id=execution.id).update(attempt=2)  # the reaper re-queued it, another worker claimed it
    thread.join(20)
    assert outcome == ["lease_lost"]
    after = scrape(client)
    assert delta(before, after, "skillrun_lease_losses_total") == 1
    assert delta(before, after, "skillrun_execution_attempts_total", outcome="lease_lost") == 1
    assert delta(before, after, "skillrun_executions_finished_total") == 0


def test_a_worker_on_another_host_serves_its_own_values_on_its_port(settings):
    """WORKER_METRICS_PORT: what workers/tasks.py serves (here this process's registry)."""
    from prometheus_client import start_http_server

    from core.metrics import LEASE_LOSSES, metrics_registry

    port = _free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics_registry())
    try:
        LEASE_LOSSES.inc()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            first = value(parse(response.read().decode()), "skillrun_lease_losses_total")
        LEASE_LOSSES.inc()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert value(parse(response.read().decode()), "skillrun_lease_losses_total") == first + 1
    finally:
        server.shutdown()
        thread.join(5)


# --- the live servers: the worker's values through the multiprocess directory -------------------------


@pytest.mark.django_db(transaction=True)
def test_live_worker_metrics_reach_the_api_through_the_multiprocess_directory(live, tenant, agent):
    with pytest.raises(AssertionError):
        scrape(live, token="wrong")  # 404
    before = scrape(live, LIVE_METRICS_TOKEN)
    ids = []
    for _ in range(3):
        events = stream_agent(live, agent, tenant)
        assert events[-1].data["type"] == "final"
        ids.append(execution_uuid(events[0].data["execution_id"]))
    # the worker counts an attempt after its final transition: the stream may end just before
    wait_for(
        lambda: (
            delta(before, scrape(live, LIVE_METRICS_TOKEN), "skillrun_execution_attempts_total", outcome="completed")
            == 3
        ),
        timeout=10,
    )
    after = scrape(live, LIVE_METRICS_TOKEN)
    source = Execution.objects.get(id=ids[0]).source
    assert delta(before, after, "skillrun_executions_created_total", responder_type="agent", source=source) == 3  # API
    assert delta(before, after, "skillrun_executions_finished_total", responder_type="agent", state="completed") == 3
    assert delta(before, after, "skillrun_execution_attempts_total", responder_type="agent", outcome="completed") == 3
    assert delta(before, after, "skillrun_execution_queue_wait_seconds_count", responder_type="agent") == 3
    assert delta(before, after, "skillrun_provider_calls_total", provider="builtin") == 3
    events = ExecutionEvent.objects.filter(execution_id__in=ids).count()
    assert delta(before, after, "skillrun_events_written_total") == events  # the API's start events + the worker's


@pytest.mark.django_db(transaction=True)
def test_live_sse_streams_open_while_a_stream_is_followed(live, tenant, make_agent):
    slow = make_agent(tenant.workspace, chunk_delay_ms=150, reply=" ".join(["word"] * 20))  # about 3 s
    before = value(scrape(live, LIVE_METRICS_TOKEN), "skillrun_sse_streams_open")
    url = f"{live}/agents/{slow.id}/execute/stream"
    received = []
    reader = threading.Thread(target=lambda: received.extend(read_stream("POST", url, auth(tenant), {"message": "hi"})))
    reader.start()
    try:
        wait_for(lambda: Execution.objects.filter(state=ExecutionState.RUNNING).exists(), timeout=10)
        assert value(scrape(live, LIVE_METRICS_TOKEN), "skillrun_sse_streams_open") == before + 1
    finally:
        reader.join(30)
    assert received[-1].data["type"] == "final"
    deadline = time.monotonic() + 5
    while (
        value(scrape(live, LIVE_METRICS_TOKEN), "skillrun_sse_streams_open") != before and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert value(scrape(live, LIVE_METRICS_TOKEN), "skillrun_sse_streams_open") == before


# --- the Grafana dashboard ------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_grafana_dashboard_charts_only_metrics_that_exist_through_its_datasource_variable(client, metrics_token):
    dashboard = json.loads((REPO_ROOT / "deploy" / "grafana" / "skillrun.json").read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    families = {family.name for family in text_string_to_metric_families(response.content.decode())}
    charted = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == f"${{{variable['name']}}}"
        for target in panel["targets"]:
            for name in re.findall(r"skillrun_\w+", target["expr"]):
                charted.add(re.sub(r"_(total|bucket|count|sum)$", "", name))
    assert charted and charted <= families, charted - families
    # every metric of the issue has a panel
    assert {
        "skillrun_executions_finished",
        "skillrun_execution_queue_wait_seconds",
        "skillrun_execution_run_seconds",
        "skillrun_execution_time_to_first_event_seconds",
        "skillrun_events_written",
        "skillrun_sse_streams_open",
        "skillrun_sse_log_rereads",
        "skillrun_reaper_recoveries",
        "skillrun_lease_losses",
        "skillrun_provider_calls",
        "skillrun_provider_errors",
        "skillrun_provider_call_seconds",
        "skillrun_provider_tokens",
        "skillrun_credits",
        "skillrun_queue_depth",
        "skillrun_queue_oldest_seconds",
    } <= charted


# --- the relay: a pub/sub gap filled from the log ------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_pubsub_gap_filled_from_the_log_is_counted_once_and_the_stream_gauge_follows(tenant, agent, monkeypatch):
    from django.db import connection
    from prometheus_client import REGISTRY

    from executions import events as event_log
    from executions.events import append_event
    from executions.streaming import close_loop_resources, follow_events

    def sample(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    execution = ExecutionFactory(
        agent=agent, principal=tenant.end_user_key.api_key.principal, state="awaiting_approval"
    )
    append_event(execution, "start", {"status": "queued"})
    gaps, open_streams = sample("skillrun_sse_log_rereads_total", reason="gap"), sample("skillrun_sse_streams_open")
    seen_open = []
    real_publish = event_log.publish

    def writer():
        try:
            time.sleep(0.5)
            seen_open.append(sample("skillrun_sse_streams_open"))  # the stream follows the execution by now
            append_event(execution, "text", {"text": "a"})
            monkeypatch.setattr(event_log, "publish", lambda *args: None)
            append_event(execution, "text", {"text": "b"})  # lost on pub/sub
            monkeypatch.setattr(event_log, "publish", real_publish)
            append_event(execution, "text", {"text": "c"})  # reveals the gap
            append_event(execution, "final", {"status": "completed"})
        finally:
            connection.close()

    async def follow():
        try:
            return [item[0] async for item in follow_events(execution.id, 0, heartbeat=5) if item is not None]
        finally:
            await close_loop_resources()

    thread = threading.Thread(target=writer)
    thread.start()
    seqs = asyncio.run(asyncio.wait_for(follow(), timeout=30))
    thread.join()
    assert seqs == [1, 2, 3, 4, 5]
    assert sample("skillrun_sse_log_rereads_total", reason="gap") == gaps + 1
    assert seen_open == [open_streams + 1] and sample("skillrun_sse_streams_open") == open_streams


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_multiproc_dir_is_off_and_writes_nothing_into_the_working_directory(value, tmp_path):
    """compose gives migrate, the workers and housekeeping PROMETHEUS_MULTIPROC_DIR="" and runs them
    from read-only code: prometheus_client must stay in memory there (it wrote counter_<pid>.db into
    the working directory, and failed django.setup() where that was read-only)."""
    script = (
        "import django; django.setup(); "
        "from prometheus_client import values; from core import metrics; "
        "metrics.EVENTS_WRITTEN.inc(); "
        "assert values.ValueClass is values.MutexValue, values.ValueClass; print('in memory')"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "PROMETHEUS_MULTIPROC_DIR": value,
    }
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "in memory"
    assert list(tmp_path.iterdir()) == []
