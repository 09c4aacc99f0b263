"""Issue 12: the browser front door at `/`, and browser apps on other origins, in a real headless
Chromium against the live servers. Everything is asserted on what the page shows.

The page follows an execution with the browser's own EventSource and a stream token; the tests cut
its connection (tests/helpers.py CuttingProxy) to see EventSource resume with Last-Event-ID, and
let a short-lived token expire to see the page renew it. A second tiny HTTP server serves a page
on another origin that calls the API with fetch and opens an EventSource.
"""

import json
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from accounts.credits import account_for, do_grant_credits
from executions.models import Execution
from tests.conftest import _stop, start_api_server
from tests.factories import ApiKeyFactory, CustomerFactory
from tests.helpers import WORDS_20, CuttingProxy, auth, data_of, execute

WORDS_50 = " ".join(f"word{i:02d}" for i in range(50))
TOKEN_SECONDS = 3  # the stream tokens of the module's server (SSE_TOKEN_MAX_AGE_SECONDS)
BODY_LIMIT = 8192  # its REQUEST_BODY_MAX_BYTES: small, so the 413 is sent once the body is read


# --- a page on another origin, and an API server that allows it ---------------------------------------


class OtherOrigin:
    """A tiny HTTP server of pages (`pages[path] = html`) on 127.0.0.1: its origin is
    http://127.0.0.1:<port>; the same server as http://localhost:<port> is another origin."""

    def __init__(self):
        pages = self.pages = {}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = pages.get(self.path.split("?")[0], "").encode()
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def other_origin():
    server = OtherOrigin()
    yield server
    server.server.shutdown()


@pytest.fixture(scope="module")
def short_tokens_api(services_env, tmp_path_factory, other_origin):
    """A second uvicorn of config.asgi (the session's worker runs its executions) whose stream tokens
    live TOKEN_SECONDS and which allows the other origin's page (CORS_ALLOWED_ORIGINS)."""
    process, base_url = start_api_server(
        services_env,
        tmp_path_factory.mktemp("frontdoor-api") / "api.log",
        CORS_ALLOWED_ORIGINS=other_origin.origin,
        SSE_TOKEN_MAX_AGE_SECONDS=str(TOKEN_SECONDS),
        REQUEST_BODY_MAX_BYTES=str(BODY_LIMIT),
    )
    yield base_url
    _stop(process)


# --- driving the front door ---------------------------------------------------------------------------


def open_front_door(browser, base_url: str, key: str):
    page = browser.new_page()
    browser.run(page.goto, f"{base_url}/")
    browser.run(page.get_by_label("API key", exact=True).fill, key)
    browser.run(page.get_by_role("button", name="Load agents").click)
    browser.run(lambda: page.locator("#run").wait_for())
    return page


def send(browser, page, agent, message: str = "hi", client_tools=None) -> float:
    """Pick the agent, type the message, press Send; returns when it was pressed."""
    browser.run(page.get_by_label("Agent", exact=True).select_option, f"agent:{agent.id}")
    browser.run(page.get_by_label("Message", exact=True).fill, message)
    if client_tools is not None:
        browser.run(page.get_by_text("Client tools (JSON)").click)
        browser.run(page.locator("#client-tools").fill, json.dumps(client_tools))
    pressed = time.monotonic()
    browser.run(page.get_by_role("button", name="Send", exact=True).click)
    return pressed


def wait_for_text(browser, page, text: str, timeout: float = 30):
    browser.run(lambda: page.get_by_text(text).first.wait_for(timeout=timeout * 1000))


def shown(browser, page, selector: str) -> list[str]:
    return browser.run(page.locator(selector).all_inner_texts)


def event_log(browser, page) -> list[tuple[int, str]]:
    """The page's list of the frames it received: (seq, type) in the order they came."""
    return [(int(seq), type_) for seq, type_ in (line.split(" ", 1) for line in shown(browser, page, "#events li"))]


def assert_whole_stream(browser, page, words: str):
    events = event_log(browser, page)
    assert [seq for seq, _ in events] == list(range(1, len(events) + 1)), events  # no gap, no duplicate
    assert events[0][1] == "start" and events[-1][1] == "final"
    assert shown(browser, page, "#answer")[0].split() == words.split()
    assert shown(browser, page, "#status") == ["completed"]


def record_answer(browser, page):
    """Keep every state the answer's text goes through (what the user sees while it streams)."""
    script = """() => {
        window.answers = [];
        const answer = document.getElementById("answer");
        new MutationObserver(() => window.answers.push(answer.textContent))
            .observe(answer, {childList: true, characterData: true, subtree: true});
    }"""
    browser.run(page.evaluate, script)


# --- the page -------------------------------------------------------------------------------------


def test_the_page_is_served_from_the_apis_own_files(live):
    response = httpx.get(f"{live}/", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    for asset in ("/static/frontdoor/frontdoor.js", "/static/frontdoor/frontdoor.css"):
        assert f'"{asset}"' in response.text
        assert httpx.get(f"{live}{asset}", timeout=10).status_code == 200
    assert "://" not in response.text.replace("http://www.w3.org", "")  # nothing from another host
    refused = httpx.post(f"{live}/", timeout=10)
    assert refused.status_code == 405 and refused.json()["error"]["code"] == "method_not_allowed"


def test_the_page_streams_an_execution_to_final(live, browser, tenant, streaming_agent):
    page = open_front_door(browser, live, tenant.end_user_key.raw_key)
    assert f"workspace:{tenant.workspace.id} (end-user key)" in shown(browser, page, "#workspace")[0]
    assert browser.run(page.get_by_label("Agent", exact=True).input_value) == f"agent:{streaming_agent.id}"
    record_answer(browser, page)
    send(browser, page, streaming_agent)
    wait_for_text(browser, page, "output tokens")
    assert_whole_stream(browser, page, WORDS_20)
    answers = browser.run(page.evaluate, "() => window.answers")
    growing = [a for a in answers if a and len(a.split()) < 20]
    assert len(growing) >= 2, answers  # the text appeared as it streamed, not at the end
    summary = shown(browser, page, "#summary")[0]
    execution = Execution.objects.get()
    assert execution.output_tokens == 20  # one token per word (the built-in model)
    assert f"{execution.input_tokens} input + {execution.output_tokens} output tokens" in summary
    assert "cost $0.000000" in summary and " ms" in summary
    assert shown(browser, page, "#execution-id") == [execution.public_id]
    assert browser.run(page.evaluate, "() => sessionStorage.getItem('skillrun.key')") == tenant.end_user_key.raw_key


def test_a_wrong_key_is_shown_as_the_apis_error(live, browser):
    page = browser.new_page()
    browser.run(page.goto, f"{live}/")
    browser.run(page.get_by_label("API key", exact=True).fill, "eak_not_a_key")
    browser.run(page.get_by_role("button", name="Load agents").click)
    wait_for_text(browser, page, "401 invalid_api_key")
    assert browser.run(page.locator("#run").is_hidden)


def test_the_page_survives_a_forced_disconnect_without_gap_or_duplicate(live, browser, tenant, make_agent):
    """The connection is cut mid-stream: EventSource reconnects by itself with Last-Event-ID."""
    agent = make_agent(tenant.workspace, chunk_delay_ms=100, reply=WORDS_50)  # ~5 s: the cut comes mid-stream
    proxy = CuttingProxy(live)
    try:
        page = open_front_door(browser, proxy.url, tenant.end_user_key.raw_key)
        send(browser, page, agent)
        wait_for_text(browser, page, "word05")
        assert proxy.cut() >= 1
        wait_for_text(browser, page, "output tokens")
    finally:
        proxy.close()
    assert_whole_stream(browser, page, WORDS_50)
    notes = shown(browser, page, "#connection li")
    assert any(note.startswith("connection lost: reconnecting after event") for note in notes), notes
    assert not any("renewed" in note for note in notes), notes  # the token was still valid


def test_an_expired_stream_token_is_renewed_by_the_page(live, short_tokens_api, browser, tenant, make_agent):
    """The connection is cut after the token expired: the reconnection is refused (401), and the page
    goes on with a new token after the last event it showed."""
    agent = make_agent(tenant.workspace, chunk_delay_ms=100, reply=WORDS_50)  # ~5 s of streaming
    proxy = CuttingProxy(short_tokens_api)
    try:
        page = open_front_door(browser, proxy.url, tenant.end_user_key.raw_key)
        pressed = send(browser, page, agent)
        wait_for_text(browser, page, "word02")
        time.sleep(max(0.0, pressed + TOKEN_SECONDS + 0.3 - time.monotonic()))  # the token has expired
        assert "output tokens" not in shown(browser, page, "#summary")[0]
        assert proxy.cut() >= 1
        wait_for_text(browser, page, "output tokens")
    finally:
        proxy.close()
    assert_whole_stream(browser, page, WORDS_50)
    notes = shown(browser, page, "#connection li")
    renewed = [note for note in notes if note.startswith("stream token renewed (after event ")]
    assert len(renewed) == 1, notes


CLIENT_TOOLS = [{"name": "get_location", "description": "Where the user is", "parameters": {"type": "object"}}]


def test_the_page_answers_a_client_tool_call(live, browser, tenant, workflow_agent):
    agent = workflow_agent(
        {
            "id": "answer",
            "type": "ai",
            "accepts_client_tools": True,
            "model": {
                "provider": "builtin",
                "script": [
                    {"text": "Let me look.", "tool_calls": [{"name": "get_location", "arguments": {"precise": True}}]},
                    {"text": "You are in {{last_tool_result.result.city}}."},
                ],
            },
        }
    )
    page = open_front_door(browser, live, tenant.end_user_key.raw_key)
    send(browser, page, agent, "where am I?", client_tools=CLIENT_TOOLS)
    wait_for_text(browser, page, "Client tool get_location")
    assert shown(browser, page, "#status") == ["awaiting_client_tool"]
    assert '{"precise":true}' in shown(browser, page, ".action pre")
    browser.run(page.get_by_label("Result of get_location").fill, '{"city": "Lyon"}')
    browser.run(page.get_by_role("button", name="Send the result of get_location").click)
    wait_for_text(browser, page, "output tokens")
    assert shown(browser, page, "#answer")[0] == "Let me look.You are in Lyon."
    assert shown(browser, page, "#tools li") == [
        'get_location({"precise":true}), a client tool',
        'get_location success: {"city":"Lyon"} (sent)',
    ]
    events = event_log(browser, page)
    assert [seq for seq, _ in events] == list(range(1, len(events) + 1)), events
    assert ("suspended" in [t for _, t in events]) and ("resumed" in [t for _, t in events])
    assert shown(browser, page, "#status") == ["completed"]
    assert browser.run(page.locator(".action").count) == 0


def test_the_page_approves_a_gate_with_a_comment(live, browser, tenant, workflow_agent):
    agent = workflow_agent(
        {"id": "gate", "type": "human_gate", "prompt": "Send the report to {{message}}?"},
        {
            "id": "after",
            "type": "ai",
            "prompt": "{{nodes.gate.comment}}",
            "model": {"provider": "builtin", "script": [{"text": "Approved: {{prompt}}"}]},
        },
    )
    page = open_front_door(browser, live, tenant.workspace_key.raw_key)
    send(browser, page, agent, "the board")
    wait_for_text(browser, page, "Send the report to the board?")
    assert shown(browser, page, "#status") == ["awaiting_approval"]
    browser.run(page.get_by_label("Comment").fill, "looks good")
    browser.run(page.get_by_role("button", name="Approve").click)
    wait_for_text(browser, page, "output tokens")
    assert shown(browser, page, "#answer")[0] == "Approved: looks good"
    assert shown(browser, page, "#status") == ["completed"]
    events = event_log(browser, page)
    assert [seq for seq, _ in events] == list(range(1, len(events) + 1)), events


def test_a_rejected_gate_shows_the_error(live, browser, tenant, workflow_agent):
    agent = workflow_agent({"id": "gate", "type": "human_gate", "prompt": "Delete everything?"})
    page = open_front_door(browser, live, tenant.end_user_key.raw_key)
    send(browser, page, agent)
    wait_for_text(browser, page, "Delete everything?")
    browser.run(page.get_by_role("button", name="Reject").click)
    wait_for_text(browser, page, "Error approval_rejected")
    assert shown(browser, page, "#status") == ["failed"]
    assert event_log(browser, page)[-1][1] == "error"


def test_the_page_posts_an_external_event(live, browser, tenant, workflow_agent):
    agent = workflow_agent(
        {"id": "delivery", "type": "wait_event", "event": "parcel_delivered"},
        {
            "id": "after",
            "type": "ai",
            "prompt": "{{nodes.delivery.payload.city}}",
            "model": {"provider": "builtin", "script": [{"text": "Delivered in {{prompt}}."}]},
        },
    )
    page = open_front_door(browser, live, tenant.workspace_key.raw_key)
    send(browser, page, agent)
    wait_for_text(browser, page, "Waiting for the external event parcel_delivered")
    assert shown(browser, page, "#status") == ["waiting_for_external_event"]
    browser.run(page.get_by_label("Event payload").fill, '{"city": "Lyon"}')
    browser.run(page.get_by_role("button", name="Post the event parcel_delivered").click)
    wait_for_text(browser, page, "output tokens")
    assert shown(browser, page, "#answer")[0] == "Delivered in Lyon."
    assert shown(browser, page, "#status") == ["completed"]
    events = event_log(browser, page)
    assert [seq for seq, _ in events] == list(range(1, len(events) + 1)), events


# --- a browser app on another origin ---------------------------------------------------------------

APP_PAGE = """<!doctype html><meta charset="utf-8"><title>app</title><ol id="out"></ol>
<script>
const CONFIG = __CONFIG__;
const out = document.getElementById("out");
const line = (text) => out.append(Object.assign(document.createElement("li"), {textContent: text}));
const api = (path, init = {}) =>
  fetch(CONFIG.api + path, {...init, headers: {"X-API-Key": CONFIG.key, ...(init.headers || {})}});

function follow(url, label) {
  return new Promise((resolve) => {
    const source = new EventSource(url);
    source.onmessage = (message) => {
      const event = JSON.parse(message.data);
      line(`${label} event ${message.lastEventId} ${event.type}`);
      if (event.type === "final") { source.close(); line(`${label} done`); resolve(); }
    };
    source.onerror = () => { source.close(); line(`${label} failed`); resolve(); };
  });
}

async function main() {
  await follow(CONFIG.events_url, "given stream");
  try {
    const started = await api(`/agents/${CONFIG.agent}/execute`, {
      method: "POST",
      headers: {"Content-Type": "application/json", "Prefer": "respond-async"},
      body: JSON.stringify({message: "hi"}),
    });
    line(`execute ${started.status}`);
    for (const name of ["X-Credits-Remaining", "X-Workspace-Id", "Location", "Preference-Applied"]) {
      line(`${name}: ${started.headers.get(name)}`);
    }
    const id = (await started.json()).data.execution_id;
    const token = (await (await api(`/executions/${id}/stream-token`, {method: "POST"})).json()).data.token;
    await follow(`${CONFIG.api}/executions/${id}/events?token=${encodeURIComponent(token)}`, "stream");
  } catch (error) {
    line(`execute blocked: ${error.name}`);
  }
  for (const [label, type, size] of [["too large", "application/json", CONFIG.body_limit + 1], ["wrong type", "text/plain", 2]]) {
    try {
      const body = "{" + " ".repeat(size - 2) + "}";
      const response = await api(`/agents/${CONFIG.agent}/execute`, {method: "POST", headers: {"Content-Type": type}, body});
      line(`${label}: ${response.status} ${(await response.json()).error.code}`);
    } catch (error) {
      line(`${label} blocked: ${error.name}`);
    }
  }
  line("finished");
}
main();
</script>
"""


@pytest.fixture
def customer_key(tenant):
    """An end-user key of a customer with 100 credits (its answers carry X-Credits-Remaining)."""
    customer = CustomerFactory(workspace=tenant.workspace, external_id="cus_app")
    issued = ApiKeyFactory(workspace=tenant.workspace, name="app user", customer=customer)
    do_grant_credits(account_for(tenant.workspace, issued.api_key.principal), Decimal(100))
    return issued.raw_key


def run_app_page(browser, other_origin, api_base, host, tenant, agent, key) -> list[str]:
    """The other origin's page, opened as http://<host>:<port>; what it showed once finished. It first
    follows the events of an execution that has ended, with a stream token made just before."""
    finished = data_of(execute(api_base, agent, tenant))
    token = data_of(httpx.post(f"{api_base}/executions/{finished['execution_id']}/stream-token", headers=auth(tenant)))
    config = {
        "api": api_base,
        "key": key,
        "agent": f"agent:{agent.id}",
        "body_limit": BODY_LIMIT,
        "events_url": f"{api_base}/executions/{finished['execution_id']}/events?token={token['token']}",
    }
    other_origin.pages["/app.html"] = APP_PAGE.replace("__CONFIG__", json.dumps(config))
    page = browser.new_page()
    browser.run(page.goto, other_origin.url("/app.html", host))
    wait_for_text(browser, page, "finished")
    return shown(browser, page, "#out li")


def test_a_page_on_an_allowed_origin_calls_the_api_and_opens_an_eventsource(
    live, short_tokens_api, other_origin, browser, tenant, agent, customer_key
):
    lines = run_app_page(browser, other_origin, short_tokens_api, "127.0.0.1", tenant, agent, customer_key)
    assert "given stream done" in lines and "given stream failed" not in lines
    assert "execute 202" in lines
    assert "X-Credits-Remaining: 100" in lines
    assert f"X-Workspace-Id: workspace:{tenant.workspace.id}" in lines
    assert "Preference-Applied: respond-async" in lines
    assert any(line.startswith("Location: /executions/execution:") for line in lines), lines
    streamed = [line.split()[2:] for line in lines if line.startswith("stream event ")]
    assert [int(seq) for seq, _ in streamed] == list(range(1, len(streamed) + 1))
    assert streamed[-1][1] == "final" and "stream done" in lines
    # the request-limits layer's refusals are readable too
    assert "too large: 413 request_too_large" in lines
    assert "wrong type: 415 unsupported_media_type" in lines


def test_a_page_on_another_origin_is_blocked(
    live, short_tokens_api, other_origin, browser, tenant, agent, customer_key
):
    """The same page as http://localhost:<port>, an origin CORS_ALLOWED_ORIGINS does not list."""
    lines = run_app_page(browser, other_origin, short_tokens_api, "localhost", tenant, agent, customer_key)
    assert "given stream failed" in lines and not any(" event " in line for line in lines), lines
    assert "execute blocked: TypeError" in lines
    assert "too large blocked: TypeError" in lines and "wrong type blocked: TypeError" in lines
    assert Execution.objects.count() == 1  # the preflight was refused: no POST reached the API
