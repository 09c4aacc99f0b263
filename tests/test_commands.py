"""Management commands: create_tenant, create_api_key (one JSON object each); seed_demo: tests/test_seed_demo.py."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.api_keys import find_active_key
from accounts.models import ApiKey, Workspace

pytestmark = pytest.mark.django_db


def run_json(*args) -> dict:
    out = StringIO()
    call_command(*args, "--json", stdout=out)
    return json.loads(out.getvalue())  # fails unless the output is exactly one JSON object


def test_create_tenant():
    result = run_json("create_tenant", "--name", "Initech")
    assert set(result) == {"tenant_id", "workspace_id", "workspace_api_key", "end_user_api_key"}
    workspace = Workspace.objects.get(id=result["workspace_id"])
    assert str(workspace.tenant_id) == result["tenant_id"]
    assert find_active_key(result["workspace_api_key"]).kind == "workspace"
    assert find_active_key(result["end_user_api_key"]).kind == "end_user"


@pytest.mark.parametrize("kind, prefix", [("workspace", "wak_"), ("end_user", "eak_")])
def test_create_api_key(tenant, kind, prefix):
    result = run_json("create_api_key", "--workspace", str(tenant.workspace.id), "--kind", kind)
    assert result["api_key"].startswith(prefix)
    api_key = find_active_key(result["api_key"])
    assert api_key.workspace_id == tenant.workspace.id and api_key.kind == kind
    assert ApiKey.objects.filter(secret_hash=result["api_key"]).count() == 0


def test_create_api_key_for_an_unknown_workspace_fails_clearly():
    with pytest.raises(CommandError, match="No workspace"):
        call_command("create_api_key", "--workspace", "00000000-0000-4000-8000-000000000000", "--kind", "workspace")
