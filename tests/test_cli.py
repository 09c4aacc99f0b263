"""The `skillrun` console script (clients/python, skillrun_client/cli.py) run as a subprocess
against the live server: streamed text, JSON lines, exit codes from the execution's end, tail,
executions, personal files, skills with inputs and files, the API's errors on stderr."""

import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest
from skillrun_client import SkillrunClient

from tests.factories import SkillFactory
from tests.helpers import WORDS_20

SKILLRUN = Path(sys.executable).parent / "skillrun"
MISSING = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def skillrun(live, tenant):
    """skillrun(*args, kind="end_user"|"workspace") -> CompletedProcess, configured by the environment."""

    def run(*args, kind="end_user", env=None):
        key = tenant.end_user_key if kind == "end_user" else tenant.workspace_key
        environment = {
            **os.environ,
            "SKILLRUN_BASE_URL": live,
            "SKILLRUN_API_KEY": key.raw_key,
            "SKILLRUN_WORKSPACE_ID": str(tenant.workspace.id),
            **(env or {}),
        }
        return subprocess.run(
            [str(SKILLRUN), *args],
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    return run


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_run_streams_the_text_and_shows_usage(skillrun, agent):
    done = skillrun("run", str(agent.id), "hi")
    assert done.returncode == 0, done.stderr
    assert done.stdout == WORDS_20 + "\n"  # stdout is the answer only
    assert "completed" in done.stderr and "out tokens" in done.stderr
    assert "\x1b" not in done.stderr  # not a terminal: no spinner, no colours


def test_run_json_is_one_event_per_line_ending_with_final(skillrun, agent):
    done = skillrun("run", str(agent.id), "hi", "--json")
    assert done.returncode == 0, done.stderr
    events = json_lines(done.stdout)
    assert events[0]["type"] == "start" and events[-1]["type"] == "final"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert "".join(e["text"] for e in events if e["type"] == "text") == WORDS_20
    assert done.stderr == ""


def test_exit_codes_of_a_failed_and_a_suspended_run(skillrun, tenant, make_agent, workflow_agent):
    failing = make_agent(tenant.workspace, reply="x", fail_on="FAIL")
    failed = skillrun("run", str(failing.id), "please FAIL")
    assert failed.returncode == 1
    assert "failed" in failed.stderr
    gated = workflow_agent({"id": "review", "type": "human_gate", "prompt": "Send?"})
    suspended = skillrun("run", str(gated.id), "go", "--json")
    assert suspended.returncode == 4
    assert json_lines(suspended.stdout)[-1]["type"] == "suspended"


def test_tail_replays_a_finished_execution_and_executions_get_and_list(skillrun, agent):
    first = json_lines(skillrun("run", str(agent.id), "hi", "--json").stdout)
    execution_id = first[0]["execution_id"]

    replayed = skillrun("tail", execution_id, "--json")
    assert replayed.returncode == 0 and json_lines(replayed.stdout) == first
    text = skillrun("tail", execution_id)
    assert text.returncode == 0 and text.stdout == WORDS_20 + "\n"
    past_the_end = skillrun("tail", execution_id, "--after", str(first[-1]["seq"]), "--json")
    assert past_the_end.returncode == 0 and past_the_end.stdout == ""  # the server's 204: the state says how

    got = skillrun("executions", "get", execution_id, "--json")
    assert got.returncode == 0
    [execution] = json_lines(got.stdout)
    assert execution["id"] == execution_id and execution["state"] == "completed"
    listed = skillrun("--json", "executions", "list")  # --json before the command works too
    assert listed.returncode == 0
    bare_id = execution_id.removeprefix("execution:")  # the query API's ids have no prefix
    assert [e["id"] for e in json_lines(listed.stdout)] == [bare_id]
    assert bare_id in skillrun("executions", "list").stdout


def test_tail_follows_a_running_execution(skillrun, live, tenant, streaming_agent):
    env = {
        **os.environ,
        "SKILLRUN_BASE_URL": live,
        "SKILLRUN_API_KEY": tenant.end_user_key.raw_key,
        "SKILLRUN_WORKSPACE_ID": str(tenant.workspace.id),
    }
    with subprocess.Popen(
        [str(SKILLRUN), "run", str(streaming_agent.id), "hi", "--json"], env=env, stdout=subprocess.PIPE, text=True
    ) as running:
        start = json.loads(running.stdout.readline())  # the execution exists, still streaming
        followed = skillrun("tail", start["execution_id"], "--json")
        rest = running.stdout.read()
    assert running.returncode == 0 and followed.returncode == 0
    events = json_lines(followed.stdout)
    assert events[-1]["type"] == "final" and [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events == [start, *json_lines(rest)]


def test_files_upload_and_list(skillrun, tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("# notes\n")
    uploaded = skillrun("files", "upload", str(notes), "--json", kind="workspace")
    assert uploaded.returncode == 0, uploaded.stderr
    [file] = json_lines(uploaded.stdout)
    assert (file["filename"], file["size_bytes"], file["content_type"]) == ("notes.md", 8, "text/markdown")
    listed = skillrun("files", "list", "--json", kind="workspace")
    assert [f["filename"] for f in json_lines(listed.stdout)] == ["notes.md"]
    assert skillrun("files", "list", kind="workspace").stdout.startswith("notes.md  8 bytes")
    unreadable = skillrun("files", "upload", str(tmp_path / "nope.txt"), kind="workspace")
    assert unreadable.returncode == 2 and "nope.txt" in unreadable.stderr


def test_skills_run_with_inputs_and_a_file(skillrun, tenant, tmp_path):
    SkillFactory(
        workspace=tenant.workspace,
        slug="echo",
        manifest={"inputs_schema": {"type": "object"}, "model": {"provider": "builtin", "reply": "done"}},
    )
    material = tmp_path / "brief.txt"
    material.write_text("the brief")
    done = skillrun(
        "skills", "run", "echo", "--input", "topic=x", "--input", "count=3", "--file", str(material), "--json",
        kind="workspace",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = json_lines(done.stdout)
    assert events[-1]["type"] == "final"
    staged = [e for e in events if e["type"] == "materials_staged"]
    assert staged and staged[0]["missing"] == [] and len(staged[0]["staged"]) == 1
    got = skillrun("executions", "get", events[0]["execution_id"], "--json", kind="workspace")
    assert json_lines(got.stdout)[0]["inputs"]["topic"] == "x"
    assert json_lines(got.stdout)[0]["inputs"]["count"] == 3  # a value that parses as JSON is JSON
    listed = json_lines(skillrun("files", "list", "--json", kind="workspace").stdout)
    assert [f["filename"] for f in listed] == ["brief.txt"]

    bad = skillrun("skills", "run", "echo", "--input", "novalue", kind="workspace")
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr


def test_api_errors_go_to_stderr_with_code_and_field(skillrun, agent):
    missing = skillrun("executions", "get", MISSING)
    assert missing.returncode == 5 and missing.stdout == ""
    assert "404" in missing.stderr and "error:" in missing.stderr
    too_long = skillrun("run", str(agent.id), "x" * 65_537, "--json")
    assert too_long.returncode == 5 and too_long.stdout == ""
    error = json.loads(too_long.stderr)["error"]
    assert (error["status"], error["code"], error["field"]) == (400, "invalid_message", "message")
    plain = skillrun("run", str(agent.id), "x" * 65_537)
    assert "invalid_message" in plain.stderr and "(field: message)" in plain.stderr
    bad_key = skillrun("files", "list", env={"SKILLRUN_API_KEY": "sk_nope"})
    assert bad_key.returncode == 5 and "401" in bad_key.stderr
    unconfigured = skillrun("files", "list", env={"SKILLRUN_BASE_URL": ""})
    assert unconfigured.returncode == 2 and "SKILLRUN_BASE_URL" in unconfigured.stderr


def test_spinner_only_on_a_terminal_and_never_with_json(live, tenant):
    """stderr on a pseudo-terminal: the spinner is drawn there (stdout stays the answer alone); with
    --json nothing is drawn."""
    SkillFactory(workspace=tenant.workspace, slug="slow", manifest={"model": {"provider": "builtin", "reply": "ok"}})
    env = {
        **os.environ,
        "SKILLRUN_BASE_URL": live,
        "SKILLRUN_API_KEY": tenant.workspace_key.raw_key,
        "SKILLRUN_WORKSPACE_ID": str(tenant.workspace.id),
        "TERM": "xterm",
    }

    def on_a_pty(*args) -> tuple[int, str, bytes]:
        leader, follower = pty.openpty()
        done = subprocess.run([str(SKILLRUN), *args], env=env, stdout=subprocess.PIPE, stderr=follower, timeout=60)
        os.close(follower)
        drawn = b""
        while select.select([leader], [], [], 0.5)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
        os.close(leader)
        return done.returncode, done.stdout.decode(), drawn

    code, stdout, drawn = on_a_pty("skills", "run", "slow")
    assert code == 0 and stdout == "ok\n"
    assert b"\x1b[?25l" in drawn  # rich hides the cursor while its spinner runs
    code, stdout, drawn = on_a_pty("skills", "run", "slow", "--json")
    assert code == 0 and json_lines(stdout)[-1]["type"] == "final"
    assert drawn == b""


def test_a_cancelled_run_exits_3(live, tenant, streaming_agent):
    env = {
        **os.environ,
        "SKILLRUN_BASE_URL": live,
        "SKILLRUN_API_KEY": tenant.end_user_key.raw_key,
        "SKILLRUN_WORKSPACE_ID": str(tenant.workspace.id),
    }
    with subprocess.Popen(
        [str(SKILLRUN), "run", str(streaming_agent.id), "hi", "--json"], env=env, stdout=subprocess.PIPE, text=True
    ) as running:
        start = json.loads(running.stdout.readline())
        with SkillrunClient(live, tenant.end_user_key.raw_key, str(tenant.workspace.id)) as client:
            client.cancel_execution(start["execution_id"])
        rest = json_lines(running.stdout.read())
    assert running.returncode == 3
    assert (rest[-1]["type"], rest[-1]["status"]) == ("error", "cancelled")
