"""The console in a real headless Chromium against the live server (uvicorn, the worker): the
executions list at 1366 px (no horizontal overflow, the admin's and the console's CSS served by
ServeStatic), an execution's page with its timeline, and the live tail showing events that arrive
after the page loaded, without a reload. Each view is saved as a PNG and checked."""

import struct
import time

import pytest
from django.contrib.auth.models import User

from executions.models import Execution, ExecutionSource, ExecutionState
from tests.factories import ExecutionFactory
from tests.helpers import WORDS_20, auth, data_of, execute, execution_uuid, post

PASSWORD = "console-pw"


@pytest.fixture
def operator(transactional_db):
    return User.objects.create_superuser("operator", "ops@example.com", PASSWORD)


def log_in(browser, base_url: str, width: int = 1366):
    """A real staff session: through the admin's login form."""
    page = browser.new_page(width=width)
    browser.run(page.goto, f"{base_url}/admin/login/?next=/admin/")
    browser.run(page.fill, "#id_username", "operator")
    browser.run(page.fill, "#id_password", PASSWORD)
    browser.run(page.click, "input[type=submit]")
    browser.run(lambda: page.wait_for_url(f"{base_url}/admin/"))
    return page


def screenshot(browser, page, path) -> tuple[int, int]:
    """Save a full-page PNG; returns its size in pixels (read from the file's IHDR)."""
    browser.run(page.screenshot, path=str(path), full_page=True)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    return struct.unpack(">II", data[16:24])


def test_the_list_at_1366_px(live, browser, operator, tenant, agent, tmp_path):
    for index in range(25):
        ExecutionFactory(
            agent=agent,
            finished=True,
            state=ExecutionState.FAILED if index % 4 == 0 else ExecutionState.COMPLETED,
            failure_reason="context_length_exceeded" if index % 4 == 0 else "",
        )
    batch = ExecutionFactory(agent=agent, finished=True, source=ExecutionSource.BATCH)
    for key in range(5):
        ExecutionFactory(parent=batch, finished=True, source=ExecutionSource.BATCH_ITEM, batch_key=f"item-{key}")

    page = log_in(browser, live)
    dashboard = browser.run(lambda: page.locator("#sr-dashboard").inner_text())
    assert "queue depth" in dashboard
    screenshot(browser, page, tmp_path / "dashboard.png")

    browser.run(page.goto, f"{live}/admin/executions/execution/")
    browser.run(lambda: page.locator("#result_list").wait_for())
    assert browser.run(lambda: page.locator("#result_list tbody tr").count()) == 26  # the items under their batch
    assert browser.run(lambda: page.get_by_text("5 items").count()) == 1
    overflow = browser.run(
        page.evaluate,
        """() => ({
            page: document.documentElement.scrollWidth - window.innerWidth,
            results: (e => e.scrollWidth - e.clientWidth)(document.querySelector('#changelist .results')),
        })""",
    )
    width, height = screenshot(browser, page, tmp_path / "list.png")
    assert overflow["page"] <= 0 and overflow["results"] <= 0, overflow
    styles = browser.run(
        page.evaluate,
        """() => ({
            failed: getComputedStyle(document.querySelector('.sr-state-failed')).backgroundColor,
            header: getComputedStyle(document.querySelector('#header')).backgroundColor,
            sheets: [...document.styleSheets].filter(s => s.href && s.cssRules.length).map(s => s.href),
        })""",
    )
    assert styles["failed"] == "rgb(220, 53, 69)"  # the console's CSS
    assert styles["header"] not in ("rgba(0, 0, 0, 0)", "transparent")  # the admin's own
    assert any(href.endswith("/static/admin/css/base.css") for href in styles["sheets"])
    assert width == 1366 and height >= 900

    browser.run(page.click, "text=5 items")
    browser.run(lambda: page.wait_for_url(f"**?parent={batch.id}"))
    assert browser.run(lambda: page.locator("#result_list tbody tr").count()) == 5


def page_workflow() -> list[dict]:
    script = [
        {
            "text": "Working it out step by step",
            "tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}],
        },
        {"text": "It is forty-two"},
    ]
    return [
        {"id": "think", "type": "ai", "tools": ["calculator"], "model": {"provider": "builtin", "script": script}},
        {"id": "picture", "type": "media_generation", "width": 64, "height": 48},
    ]


def test_an_execution_page_with_its_timeline(live, browser, operator, tenant, workflow_agent, tmp_path):
    agent = workflow_agent(*page_workflow())
    done = data_of(execute(live, agent, tenant, "what is 6 times 7?"))
    assert done["status"] == "completed", done
    page = log_in(browser, live)
    browser.run(page.goto, f"{live}/admin/executions/execution/{execution_uuid(done['execution_id'])}/change/")
    browser.run(lambda: page.locator("#sr-timeline .sr-kind-final").wait_for())
    assert browser.run(lambda: page.locator(".sr-kind-turn").count()) == 2
    assert "calculator" in browser.run(lambda: page.locator(".sr-kind-tool").inner_text())
    browser.run(lambda: page.locator(".sr-kind-tool summary").click())
    assert "42" in browser.run(lambda: page.locator(".sr-kind-tool .sr-result").inner_text())
    loaded = browser.run(lambda: page.locator(".sr-image").evaluate("img => img.complete && img.naturalWidth"))
    assert loaded == 64  # the generated image, shown inline
    assert browser.run(lambda: page.locator("input[name=_save]").count()) == 0
    overflow = browser.run(page.evaluate, "() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    width, _ = screenshot(browser, page, tmp_path / "execution.png")
    assert width == 1366


def test_the_live_tail_shows_events_that_arrive_after_load(live, browser, operator, tenant, workflow_agent, tmp_path):
    agent = workflow_agent(
        {"id": "draft", "type": "ai", "model": {"provider": "builtin", "reply": "a draft"}},
        {"id": "review", "type": "human_gate", "prompt": "Send it?"},
        {"id": "send", "type": "ai", "model": {"provider": "builtin", "reply": WORDS_20, "chunk_delay_ms": 40}},
    )
    waiting = data_of(execute(live, agent, tenant, "write it"))
    assert waiting["status"] == "awaiting_approval"
    execution_id = execution_uuid(waiting["execution_id"])
    loaded_seq = Execution.objects.get(id=execution_id).last_event_seq

    page = log_in(browser, live)
    browser.run(page.goto, f"{live}/admin/executions/execution/{execution_id}/change/")
    browser.run(lambda: page.locator("#sr-live-status").wait_for())
    assert browser.run(lambda: page.locator(".sr-arrived").count()) == 0
    browser.run(page.evaluate, "() => { window.__notReloaded = true; }")
    time.sleep(1)  # the tail has its token and its stream open

    approved = post(live, f"/executions/{waiting['execution_id']}/approval", {"decision": "approve"}, auth(tenant))
    assert approved.status_code == 200, approved.text
    browser.run(lambda: page.locator("#sr-timeline li.sr-arrived[data-type=final]").wait_for(timeout=30_000))

    assert browser.run(page.evaluate, "() => window.__notReloaded") is True  # appended, not reloaded
    seqs = browser.run(
        page.evaluate, "() => [...document.querySelectorAll('li.sr-arrived')].map(li => +li.dataset.seq)"
    )
    assert seqs and min(seqs) == loaded_seq + 1 and seqs == sorted(seqs)
    merged = browser.run(lambda: page.locator("li.sr-arrived.sr-kind-turn").all_inner_texts())
    assert len(merged) == 1 and "word00" in merged[0] and "word19" in merged[0]  # the chunks in one block
    assert browser.run(lambda: page.locator("#sr-live-status").inner_text()) == "ended"
    state = browser.run(lambda: page.locator("#sr-summary .sr-field-state .sr-state").inner_text())
    assert state == "completed"
    screenshot(browser, page, tmp_path / "live-tail.png")


def test_run_now_from_the_agent_page_opens_the_live_page(live, browser, operator, tenant, make_agent, tmp_path):
    agent = make_agent(tenant.workspace, reply=WORDS_20, chunk_delay_ms=60)
    page = log_in(browser, live)
    browser.run(page.goto, f"{live}/admin/agents/agent/{agent.id}/change/")
    browser.run(lambda: page.locator("#sr-run-now").wait_for())
    assert "v1" in browser.run(lambda: page.locator("#sr-versions").inner_text())
    screenshot(browser, page, tmp_path / "agent.png")
    browser.run(page.fill, "#sr-run-now textarea[name=message]", "hello from the console")
    browser.run(page.click, "#sr-run-now input[type=submit]")
    browser.run(lambda: page.wait_for_url("**/admin/executions/execution/*/change/"))
    execution = Execution.objects.get(agent_version__agent=agent)
    assert execution.source == ExecutionSource.STANDALONE
    browser.run(lambda: page.locator("#sr-timeline li[data-type=final]").wait_for(timeout=30_000))
    text = browser.run(lambda: page.locator("#sr-timeline").inner_text())
    assert "word19" in text
    execution.refresh_from_db()
    assert execution.state == ExecutionState.COMPLETED
