"""An execution's console page: the summary, the timeline of a real run (turns merged, tool calls
paired with their results, the gate's suspension and resume, the generated image inline), pages
of a long log, the sub-execution tree, the fork links, the stream token of the live tail, and a
number of queries that does not grow with the events."""

import re

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from executions.models import Execution, ExecutionEvent, ExecutionState
from tests.factories import ExecutionFactory
from tests.helpers import auth, data_of, execute, execution_uuid

PAGE = "/admin/executions/execution/{}/change/"

TURNS = [
    {
        "reasoning": "I should add them up",
        "text": "Let me compute that for you",
        "tool_calls": [{"name": "calculator", "arguments": {"expression": "2 + 3"}}],
    },
    {"text": "The sum is exactly five, as computed"},
]


def run_workflow():
    return {
        "nodes": [
            {
                "id": "math",
                "type": "ai",
                "tools": ["calculator"],
                "model": {"provider": "builtin", "script": TURNS, "chunk_delay_ms": 25},
            },
            {"id": "review", "type": "human_gate", "prompt": "Send it?"},
            {"id": "picture", "type": "media_generation", "width": 8, "height": 8},
        ]
    }


@pytest.fixture
def admin_client(client, db):
    User.objects.create_superuser("ops", "ops@example.com", "pw")
    client.login(username="ops", password="pw")
    return client


@pytest.fixture
def ran(api, tenant, workflow_agent):
    """A real run: two model turns around a calculator call, a gate approved, an image."""
    agent = workflow_agent(*run_workflow()["nodes"])
    started = data_of(execute(api, agent, tenant, "add 2 and 3"))
    assert started["status"] == "awaiting_approval"
    response = api.post(
        f"/executions/{started['execution_id']}/approval", headers=auth(tenant), json={"decision": "approve"}
    )
    assert response.status_code == 200, response.text
    execution = Execution.objects.get(id=execution_uuid(started["execution_id"]))
    assert execution.state == ExecutionState.COMPLETED, execution.error
    return execution


def entries(page: str) -> list[str]:
    return re.findall(r'<li class="sr-entry sr-kind-(\w+)"', page)


def test_the_page_of_a_real_run(admin_client, ran):
    response = admin_client.get(PAGE.format(ran.id))
    assert response.status_code == 200
    page = response.content.decode()
    # a read-only page: no form, no Save, not a field per column
    assert 'name="_save"' not in page and "<form" not in page.split('id="sr-csrf"')[0].split("</header>")[-1]
    assert page.count('class="readonly"') == 0
    # the summary
    assert 'class="sr-state sr-state-completed"' in page
    assert f"/admin/agents/agent/{ran.agent_version.agent_id}/change/" in page
    assert f"{ran.input_tokens} in / {ran.output_tokens} out tokens" in page
    # text chunks merged, one block per model turn
    texts = ExecutionEvent.objects.filter(execution=ran, type="text").count()
    assert texts > 2
    kinds = entries(page)
    assert kinds.count("turn") == 2
    assert "Let me compute that for you" in page and "The sum is exactly five, as computed" in page
    assert "I should add them up" in page  # the reasoning, in its turn
    # the tool call with its result, in one entry
    assert kinds.count("tool") == 1
    tool = page.split('sr-kind-tool"')[1].split("</li>")[0]
    assert "calculator" in tool and "success" in tool and "&quot;value&quot;: 5" in tool
    # the gate's suspension and its resume, the image inline, the end
    assert "suspend" in kinds and "resume" in kinds and kinds[-1] == "final"
    image = re.search(r'<img class="sr-image" src="([^"]+)"', page).group(1)
    shown = admin_client.get(image)
    assert shown.status_code == 200 and shown["Content-Type"] == "image/png"
    # offsets in milliseconds from the start, in order
    offsets = [int(ms) for ms in re.findall(r'<span class="sr-offset"[^>]*>\+(\d+) ms</span>', page)]
    assert len(offsets) == len(kinds) and offsets == sorted(offsets) and offsets[-1] > 0
    # inputs and outputs as indented JSON
    assert "&quot;message&quot;: &quot;add 2 and 3&quot;" in page
    assert 'id="sr-outputs"' in page
    # finished: no live tail
    assert "live_tail.js" not in page


def test_fork_links_at_node_and_turn_boundaries_only_when_fork_is_available(admin_client, ran):
    watcher = Client()
    watcher.force_login(staff("watcher", "view_execution"))  # may look, may not fork
    page = watcher.get(PAGE.format(ran.id)).content.decode()
    assert "fork from here" not in page and "sr-action-retry" not in page

    page = admin_client.get(PAGE.format(ran.id)).content.decode()
    assert 'class="sr-action sr-action-retry"' in page  # the actions are the page's buttons
    seqs = [int(s) for s in re.findall(r'actions/fork/\?from_seq=(\d+)">fork from here', page)]
    events = dict(ExecutionEvent.objects.filter(execution=ran).values_list("seq", "type"))
    node_starts = [seq for seq, type_ in events.items() if type_ == "node_start"]
    second_turn = min(
        seq
        for seq, type_ in events.items()
        if type_ in ("text", "reasoning") and seq > max(s for s, t in events.items() if t == "tool_result")
    )
    assert sorted(seqs) == sorted(node_starts + [second_turn])


def test_a_long_log_is_shown_in_pages_with_heartbeats_collapsed(admin_client, agent):
    execution = ExecutionFactory(agent=agent, finished=True, last_event_seq=1200)
    ExecutionEvent.objects.bulk_create(
        ExecutionEvent(
            execution=execution,
            seq=seq,
            type="heartbeat" if seq % 100 else "node_start",
            data={"type": "heartbeat" if seq % 100 else "node_start", "node_id": "n"},
        )
        for seq in range(1, 1201)
    )
    first = admin_client.get(PAGE.format(execution.id)).content.decode()
    assert "page 1 of 3" in first and "events 1–500" in first
    assert entries(first) == ["heartbeat", "node"] * 5  # 99 heartbeats in one entry, then a node_start
    assert "× 99" in first
    last = admin_client.get(PAGE.format(execution.id), {"tp": "3"}).content.decode()
    assert "events 1001–1200" in last and 'data-seq="1001"' in last and 'data-seq="1000"' not in last
    assert admin_client.get(PAGE.format(execution.id), {"tp": "nope"}).status_code == 200
    assert "live_tail.js" not in last  # finished


def test_a_running_execution_opens_on_its_latest_events_with_the_live_tail(admin_client, agent):
    execution = ExecutionFactory(agent=agent, state=ExecutionState.RUNNING)
    _log(execution, 620)
    page = admin_client.get(PAGE.format(execution.id)).content.decode()
    assert "page 2 of 2" in page and "events 501–620" in page
    assert "live_tail.js" in page and '"lastSeq": 620' in page
    first = admin_client.get(PAGE.format(execution.id), {"tp": "1"}).content.decode()
    assert "page 1 of 2" in first and "live_tail.js" not in first  # the tail goes on from the last page only


def test_the_sub_execution_tree_and_links(admin_client, agent):
    parent = ExecutionFactory(agent=agent)
    child = ExecutionFactory(parent=parent, agent=agent)
    grandchild = ExecutionFactory(parent=child, agent=agent)
    page = admin_client.get(PAGE.format(parent.id)).content.decode()
    assert 'id="sr-tree"' in page
    assert PAGE.format(child.id) in page and PAGE.format(grandchild.id) in page
    assert f"?parent={parent.id}" in page  # the children in the list
    child_page = admin_client.get(PAGE.format(child.id)).content.decode()
    assert PAGE.format(parent.id) in child_page  # up to the parent


def test_artifacts_and_sub_executions_in_the_timeline(admin_client, agent):
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from executions.events import append_event
    from executions.models import Artifact

    execution = ExecutionFactory(agent=agent, finished=True)
    child = ExecutionFactory(parent=execution)
    key = default_storage.save(f"workspaces/{execution.id}/outputs/chart.png", ContentFile(b"\x89PNG fake"))
    artifact = Artifact.objects.create(
        execution=execution,
        relpath_in_workspace="outputs/chart.png",
        document_type="image/png",
        size_bytes=10,
        storage_key=key,
    )
    append_event(
        execution, "sub_execution_started", {"sub_execution_id": f"execution:{child.id}", "responder": "skill:x"}
    )
    append_event(execution, "sub_execution_started", {"responder": "skill:broken"})  # no id: no link, no error
    append_event(
        execution,
        "artifact",
        {"artifact_id": str(artifact.id), "relpath_in_workspace": "outputs/chart.png", "document_type": "image/png"},
    )
    page = admin_client.get(PAGE.format(execution.id)).content.decode()
    download = f"/admin/executions/execution/artifact/{artifact.id}/download/"
    assert f'<img class="sr-image" src="{download}"' in page
    assert b"".join(admin_client.get(download).streaming_content) == b"\x89PNG fake"
    assert f'<a href="{PAGE.format(child.id)}">skill:x' in page and "skill:broken" in page


def _log(execution, count: int) -> None:
    """`count` events of every kind the timeline renders, tool calls paired with results."""
    rows, kinds = [], ["node_start", "text", "text", "tool_call", "tool_result", "heartbeat", "media_gen_complete"]
    for seq in range(1, count + 1):
        type_ = kinds[seq % len(kinds)]
        data = {"type": type_, "node_id": f"n{seq // 50}", "text": "w ", "tool_call_id": f"c{seq // 7}"}
        if type_ == "media_gen_complete":
            data.update(storage_key=f"k{seq}", content_type="image/png")
        rows.append(ExecutionEvent(execution=execution, seq=seq, type=type_, data=data))
    ExecutionEvent.objects.bulk_create(rows)
    Execution.objects.filter(id=execution.id).update(last_event_seq=count)


def test_the_page_makes_as_many_queries_for_450_events_as_for_10(admin_client, agent):
    small, large = ExecutionFactory(agent=agent, finished=True), ExecutionFactory(agent=agent, finished=True)
    _log(small, 10)
    _log(large, 450)
    for execution in (small, large):
        ExecutionFactory(parent=ExecutionFactory(parent=execution))
    admin_client.get(PAGE.format(small.id))  # warm the caches (content types, session)
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(PAGE.format(small.id)).status_code == 200
    with CaptureQueriesContext(connection) as many:
        page = admin_client.get(PAGE.format(large.id)).content.decode()
    assert page.count('data-seq="') > 100
    assert len(many) == len(few), [q["sql"][:100] for q in many.captured_queries]


# --- the live tail's stream token -------------------------------------------------------------------


def staff(username: str, *permissions: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=permissions))
    return user


def test_a_running_execution_has_a_live_tail(admin_client, agent):
    running = ExecutionFactory(agent=agent, state=ExecutionState.RUNNING)
    page = admin_client.get(PAGE.format(running.id)).content.decode()
    assert "live_tail.js" in page and 'id="sr-live-config"' in page
    assert f"/admin/executions/execution/{running.id}/stream-token/" in page


def test_the_stream_token_follows_the_execution_through_the_relay(api, client, tenant, agent):
    started = data_of(execute(api, agent, tenant, "hello"))
    execution_id = execution_uuid(started["execution_id"])
    other = ExecutionFactory(agent=agent, finished=True)
    viewer = staff("viewer", "view_execution")
    client.force_login(viewer)
    url = f"/admin/executions/execution/{execution_id}/stream-token/"
    assert client.get(url).status_code == 405
    minted = client.post(url)
    assert minted.status_code == 200
    token = minted.json()["token"]

    stream = api.get(f"/executions/{execution_id}/events", params={"token": token})
    assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
    assert '"type": "final"' in stream.text or '"type":"final"' in stream.text
    # valid for that execution only
    assert api.get(f"/executions/{other.id}/events", params={"token": token}).json()["error"]["code"] == (
        "invalid_stream_token"
    )
    # checked again when the stream opens: a user no longer staff cannot follow it
    viewer.is_staff = False
    viewer.save()
    refused = api.get(f"/executions/{execution_id}/events", params={"token": token})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_stream_token"


def test_the_stream_token_needs_the_view_permission(client, agent):
    execution = ExecutionFactory(agent=agent, state=ExecutionState.RUNNING)
    client.force_login(staff("nobody"))
    assert client.post(f"/admin/executions/execution/{execution.id}/stream-token/").status_code == 403
    assert client.get(PAGE.format(execution.id)).status_code == 403
