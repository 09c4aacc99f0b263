"""A skill's file tools stay in its workspace: every path is normalised and one outside the
workspace (`..`, absolute, a link that leads out) is a tool error the model sees, for list_files,
read_file and write_file alike (workers/skill_workspace.py)."""

import os
import uuid

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from executions.models import ExecutionEvent, ExecutionState
from tests.factories import SkillFactory
from tests.helpers import auth, post
from workers.server_tool import call_tool
from workers.skill_workspace import SkillWorkspace, workspace_tools

OUTSIDE = [
    "..",
    "../..",
    "../../..",
    "../other/outputs/secret.md",
    "outputs/../../x",
    "outputs/../..",
    "./../x",
    "a/./b/../../../x",
    "..\\..",
    "outputs\\..\\..\\x",
    "/etc/passwd",
    "/",
    "//workspaces",
    "\\etc\\passwd",
    "outputs/\x00x",
]


@pytest.fixture
def workspaces():
    """Two executions' workspaces; the other one holds a secret file. Removed afterwards."""
    mine, other = SkillWorkspace(uuid.uuid4()), SkillWorkspace(uuid.uuid4())
    mine.write_bytes("outputs/mine.md", b"mine")
    other.write_bytes("outputs/secret.md", b"secret")
    yield mine, other
    for workspace in (mine, other):
        for relpath in workspace.relpaths():
            default_storage.delete(workspace.storage_key(relpath))


def _call(workspace, name: str, arguments: dict):
    return call_tool(workspace_tools(workspace)[name], name, arguments, "key")


@pytest.mark.parametrize("path", OUTSIDE)
def test_every_file_tool_refuses_a_path_outside_the_workspace(workspaces, path):
    mine, other = workspaces
    for name, arguments in (
        ("list_files", {"directory": path}),
        ("read_file", {"path": path}),
        ("write_file", {"path": path, "content": "pwned"}),
    ):
        outcome, result = _call(mine, name, arguments)
        assert outcome == "error", (name, path, result)
        assert (
            "outside the workspace" in result["message"]
            or "absolute" in result["message"]
            or ("NUL" in result["message"])
        )
    assert other.read_bytes("outputs/secret.md") == b"secret"
    assert mine.relpaths() == ["outputs/mine.md"]


def test_paths_that_stay_inside_are_normalised(workspaces):
    mine, _ = workspaces
    assert _call(mine, "write_file", {"path": "outputs/drafts/../final.md", "content": "x"})[0] == "success"
    assert _call(mine, "read_file", {"path": "./outputs//final.md"}) == (
        "success",
        {"path": "./outputs//final.md", "content": "x"},
    )
    listed = _call(mine, "list_files", {"directory": "outputs/drafts/.."})[1]["files"]
    assert [f["path"] for f in listed] == ["outputs/final.md", "outputs/mine.md"]
    for root in ("", ".", "outputs/.."):
        assert len(_call(mine, "list_files", {"directory": root})[1]["files"]) == 2


def test_a_link_inside_the_workspace_does_not_lead_out(workspaces):
    """On a local disk: a symbolic link that something else put into the workspace."""
    mine, other = workspaces
    try:
        root = default_storage.path(mine.root)
    except NotImplementedError:
        pytest.skip("the storage has no local paths")
    os.symlink(default_storage.path(other.root), os.path.join(root, "elsewhere"))
    os.symlink(default_storage.path(other.storage_key("outputs/secret.md")), os.path.join(root, "secret.md"))
    try:
        for name, arguments in (
            ("list_files", {"directory": "elsewhere"}),
            ("read_file", {"path": "elsewhere/outputs/secret.md"}),
            ("read_file", {"path": "secret.md"}),
            ("write_file", {"path": "elsewhere/outputs/secret.md", "content": "pwned"}),
        ):
            outcome, result = _call(mine, name, arguments)
            assert outcome == "error" and "outside the workspace" in result["message"], (name, result)
        assert other.read_bytes("outputs/secret.md") == b"secret"
    finally:
        os.unlink(os.path.join(root, "elsewhere"))
        os.unlink(os.path.join(root, "secret.md"))


def test_a_name_the_disk_cannot_hold_is_a_tool_error(workspaces):
    mine, _ = workspaces
    outcome, result = _call(mine, "write_file", {"path": "outputs/" + "n" * 300, "content": "x"})
    assert outcome == "error" and "cannot be written" in result["message"]
    default_storage.save(mine.storage_key("outputs/plain"), ContentFile(b"a file"))
    outcome, result = _call(mine, "write_file", {"path": "outputs/plain/below.md", "content": "x"})
    assert outcome == "error" and "cannot be written" in result["message"]


@pytest.mark.django_db(transaction=True)
def test_a_skill_that_lists_the_parent_directory_sees_a_tool_error(api, tenant):
    """`list_files` with `../..` walked the whole storage (every execution's workspace) before."""
    script = [
        {"tool_calls": [{"name": "list_files", "arguments": {"directory": "../.."}}]},
        {"tool_calls": [{"name": "read_file", "arguments": {"path": "/etc/hostname"}}]},
        {"text": "done"},
    ]
    SkillFactory(
        workspace=tenant.workspace,
        slug="walker",
        manifest={
            "inputs_schema": {"type": "object"},
            "tools": ["list_files", "read_file"],
            "limits": {"max_iterations": 4},
            "model": {"provider": "builtin", "script": script},
        },
    )
    response = post(api, f"/v1/spaces/{tenant.workspace.id}/skills/walker/executions", {"inputs": {}}, auth(tenant))
    execution_id = response.json()["data"]["id"]
    results = [
        event.data
        for event in ExecutionEvent.objects.filter(execution_id=execution_id, type="tool_result").order_by("seq")
    ]
    assert [r["outcome"] for r in results] == ["error", "error"]
    assert "outside the workspace" in results[0]["result"]["message"]
    assert "absolute" in results[1]["result"]["message"]
    data = api.get(f"/v1/spaces/{tenant.workspace.id}/skills/executions/{execution_id}", headers=auth(tenant))
    assert data.json()["data"]["state"] == ExecutionState.COMPLETED
