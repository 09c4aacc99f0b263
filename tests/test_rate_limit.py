"""The request rate of an API key (accounts/rate_limits.py): N requests per window, the next one a
429 `rate_limited` with Retry-After, allowed again once the window has passed; one budget in Redis
for every API process."""

import threading
import time
import uuid

import httpx
import pytest
from django.contrib.auth.models import User
from prometheus_client import REGISTRY

from accounts import rate_limits
from accounts.models import ApiKey
from executions.models import Execution
from tests.conftest import _free_port, _stop, start_api_server
from tests.factories import ApiKeyFactory
from tests.helpers import auth

LIST = "/api/v1/executions"


def set_key_limit(new_tenant, limit, kind="end_user"):
    key = new_tenant.end_user_key if kind == "end_user" else new_tenant.workspace_key
    ApiKey.objects.filter(id=key.api_key.id).update(rate_limit_per_minute=limit)


def statuses(api, headers, count: int, path: str = LIST) -> list[int]:
    return [api.get(path, headers=headers).status_code for _ in range(count)]


def limited_count(workspace) -> float:
    value = REGISTRY.get_sample_value("skillrun_rate_limited_requests_total", {"workspace_id": str(workspace.id)})
    return value or 0


def test_n_requests_pass_the_next_is_429_with_retry_after(api, tenant):
    set_key_limit(tenant, 3)
    before = limited_count(tenant.workspace)
    assert statuses(api, auth(tenant), 3) == [200, 200, 200]
    refused = api.get(LIST, headers=auth(tenant))
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60  # the rest of the key's minute
    assert limited_count(tenant.workspace) == before + 1
    # per key: the workspace key of the same workspace has its own budget
    assert statuses(api, auth(tenant, "workspace"), 2) == [200, 200]


def _batch(api, agent, headers, count: int):
    items = [{"key": f"item-{i}", "message": "hi"} for i in range(count)]
    return api.post(f"/agents/{agent.id}/execute/batch", json={"items": items}, headers=headers)


def test_a_batch_counts_its_items_and_one_larger_than_what_is_left_starts_nothing(api, tenant, agent):
    set_key_limit(tenant, 10)
    before = limited_count(tenant.workspace)
    assert statuses(api, auth(tenant), 2) == [200, 200]  # 8 left
    refused = _batch(api, agent, auth(tenant), 9)  # its own request counted: 7 left for 8 more items
    assert refused.status_code == 429
    assert (
        refused.json()["error"]["code"] == "rate_limited" and "batch of 9 items" in refused.json()["error"]["message"]
    )
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert not Execution.objects.exists()
    assert limited_count(tenant.workspace) == before + 1
    # at the boundary: the refused batch used one request; a batch of exactly what is left passes
    assert _batch(api, agent, auth(tenant), 7).status_code == 200
    assert Execution.objects.filter(batch_key__isnull=False).exclude(batch_key="").count() == 7
    assert api.get(LIST, headers=auth(tenant)).status_code == 429  # the window is used up


def test_a_batch_larger_than_the_whole_limit_is_refused(api, tenant, agent):
    set_key_limit(tenant, 5)
    assert _batch(api, agent, auth(tenant), 6).status_code == 429
    assert not Execution.objects.exists()
    assert _batch(api, agent, auth(tenant), 3).status_code == 200  # 4 left after the refused one's request


def test_after_the_window_the_key_is_allowed_again(api, tenant, settings):
    settings.API_KEY_RATE_LIMIT_WINDOW_SECONDS = 0.5
    set_key_limit(tenant, 2)
    assert statuses(api, auth(tenant), 3) == [200, 200, 429]
    assert api.get(LIST, headers=auth(tenant)).headers["Retry-After"] == "1"  # at least 1 s, rounded up
    time.sleep(0.6)
    assert statuses(api, auth(tenant), 3) == [200, 200, 429]  # a new window, the same budget


def test_async_views_are_limited_too(api, tenant):
    """The SSE and long-wait views authenticate on their own path (api/http/async_views.py)."""
    set_key_limit(tenant, 1)
    events = f"/executions/{uuid.uuid4()}/events"
    assert statuses(api, auth(tenant), 2, events) == [404, 429]
    refused = api.get(events, headers=auth(tenant))
    assert refused.json()["error"]["code"] == "rate_limited" and refused.headers["Retry-After"].isdigit()


def test_the_key_field_beats_the_environment_default(api, tenant, other_tenant, settings):
    settings.API_KEY_RATE_LIMIT_PER_MINUTE = 2
    assert statuses(api, auth(other_tenant), 3) == [200, 200, 429]  # no field: the default
    set_key_limit(tenant, 4)
    assert statuses(api, auth(tenant), 5) == [200, 200, 200, 200, 429]
    set_key_limit(tenant, 0, kind="workspace")  # 0: unlimited
    assert set(statuses(api, auth(tenant, "workspace"), 6)) == {200}


def test_unlimited_by_default(api, tenant):
    assert set(statuses(api, auth(tenant), 20)) == {200}


def test_health_docs_and_schema_are_not_limited(api, tenant, settings):
    settings.API_KEY_RATE_LIMIT_PER_MINUTE = 1
    for path in ("/healthz", "/api/schema/", "/api/docs/"):
        assert set(statuses(api, auth(tenant), 3, path)) == {200}, path
    assert statuses(api, auth(tenant), 2) == [200, 429]  # those did not count against the key


def test_a_redis_that_does_not_answer_lets_requests_through(api, tenant, settings, caplog):
    settings.REDIS_URL = f"redis://127.0.0.1:{_free_port()}/0"  # a port nothing listens on
    rate_limits._count_script.cache_clear()
    try:
        set_key_limit(tenant, 1)
        assert statuses(api, auth(tenant), 3) == [200, 200, 200]
    finally:
        rate_limits._count_script.cache_clear()
    assert any("rate limit of key" in record.getMessage() for record in caplog.records)


def test_429_is_documented_with_retry_after(api):
    document = api.get("/api/schema/", headers={"Accept": "application/json"}).json()
    operation = document["paths"]["/api/v1/executions"]["get"]
    assert "429" in operation["responses"]
    assert "Retry-After" in operation["responses"]["429"]["headers"]


def test_the_admin_sets_a_key_limit(client, tenant):
    User.objects.create_superuser("ops", "ops@example.com", "pw")
    client.login(username="ops", password="pw")
    api_key = tenant.end_user_key.api_key
    url = f"/admin/accounts/apikey/{api_key.id}/change/"
    assert 'name="rate_limit_per_minute"' in client.get(url).content.decode()
    response = client.post(url, {"name": api_key.name, "rate_limit_per_minute": "7"})
    assert response.status_code == 302, response.content.decode()[:2000]
    api_key.refresh_from_db()
    assert api_key.rate_limit_per_minute == 7


# --- live: concurrent requests on two API processes share one budget ----------------------------------


@pytest.fixture(scope="module")
def second_api_server(services_env, tmp_path_factory):
    """Another uvicorn process on the same database and Redis."""
    process, base_url = start_api_server(services_env, tmp_path_factory.mktemp("api2") / "api.log")
    yield base_url
    _stop(process)


def test_concurrent_requests_on_two_api_processes_admit_exactly_n(live, second_api_server, tenant):
    issued = ApiKeyFactory(workspace=tenant.workspace)
    ApiKey.objects.filter(id=issued.api_key.id).update(rate_limit_per_minute=7)
    headers = {"X-API-Key": issued.raw_key}
    servers = [live, second_api_server]
    results, barrier = [], threading.Barrier(24)

    def fire(index):
        with httpx.Client(base_url=servers[index % 2], timeout=30) as client:
            barrier.wait()
            response = client.get(LIST, headers=headers)
            results.append((index % 2, response.status_code, response.headers.get("Retry-After")))

    threads = [threading.Thread(target=fire, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    codes = [code for _, code, _ in results]
    assert len(codes) == 24
    assert codes.count(200) == 7 and codes.count(429) == 17
    assert all(retry_after.isdigit() for _, code, retry_after in results if code == 429)
    assert {server for server, code, _ in results if code == 429} == {0, 1}  # both processes refused some
