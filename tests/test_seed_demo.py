"""seed_demo (run by every `make run`): the demo rows once, its two API keys issued once and kept;
`--new-keys` revokes them and issues new ones."""

import json
from io import StringIO

import pytest
from django.core.management import call_command

from accounts.api_keys import find_active_key
from accounts.models import ApiKey, Workspace

pytestmark = pytest.mark.django_db

STABLE = ("tenant_id", "workspace_id", "agent_id", "skill_slug")


def seed(*args) -> dict:
    out = StringIO()
    call_command("seed_demo", "--json", *args, stdout=out)
    return json.loads(out.getvalue())  # fails unless the output is exactly one JSON object


def test_the_first_run_issues_both_keys_and_prints_one_json_object():
    first = seed()
    assert set(first) == {
        *STABLE,
        "workspace_api_key",
        "end_user_api_key",
        "workspace_api_key_prefix",
        "end_user_api_key_prefix",
        "keys_issued",
    }
    assert first["keys_issued"] is True
    assert first["workspace_api_key"].startswith(first["workspace_api_key_prefix"])
    assert first["end_user_api_key"].startswith(first["end_user_api_key_prefix"])
    assert find_active_key(first["workspace_api_key"]).kind == "workspace"
    assert find_active_key(first["end_user_api_key"]).kind == "end_user"
    assert str(find_active_key(first["end_user_api_key"]).workspace_id) == first["workspace_id"]


def test_run_twice_issues_the_keys_once_and_the_first_ones_keep_working():
    first, second = seed(), seed()
    assert ApiKey.objects.count() == 2 and Workspace.objects.count() == 1
    for stable in STABLE:
        assert first[stable] == second[stable]
    assert second["keys_issued"] is False
    assert second["workspace_api_key"] is None and second["end_user_api_key"] is None
    assert second["workspace_api_key_prefix"] == first["workspace_api_key_prefix"]
    assert second["end_user_api_key_prefix"] == first["end_user_api_key_prefix"]
    assert find_active_key(first["workspace_api_key"]) is not None
    assert find_active_key(first["end_user_api_key"]) is not None


def test_the_human_output_of_a_rerun_says_the_earlier_keys_still_work():
    seed()
    out = StringIO()
    call_command("seed_demo", stdout=out)
    assert "still work" in out.getvalue() and "--new-keys" in out.getvalue()
    assert "eak_" in out.getvalue()  # the prefix, to recognise the key
    assert ApiKey.objects.count() == 2


def test_new_keys_revokes_the_demo_keys_and_issues_new_ones_to_the_same_principals():
    first = seed()
    renewed = seed("--new-keys")
    assert renewed["keys_issued"] is True
    assert renewed["end_user_api_key"] and renewed["end_user_api_key"] != first["end_user_api_key"]
    assert find_active_key(first["workspace_api_key"]) is None  # revoked
    assert find_active_key(first["end_user_api_key"]) is None
    new_end_user = find_active_key(renewed["end_user_api_key"])
    assert new_end_user.principal_id == ApiKey.objects.get(prefix=first["end_user_api_key_prefix"]).principal_id
    assert ApiKey.objects.filter(revoked_at__isnull=True).count() == 2
    assert seed()["end_user_api_key_prefix"] == renewed["end_user_api_key_prefix"]  # the new ones are kept then


def test_a_revoked_demo_key_is_replaced_alone():
    first = seed()
    ApiKey.objects.filter(prefix=first["end_user_api_key_prefix"]).update(revoked_at="2026-01-01T00:00:00Z")
    again = seed()
    assert again["workspace_api_key"] is None and again["workspace_api_key_prefix"] == first["workspace_api_key_prefix"]
    assert again["end_user_api_key"].startswith("eak_") and find_active_key(again["end_user_api_key"]) is not None


def test_make_runs_banner_names_kept_keys_by_prefix_and_how_to_get_new_ones():
    from ops.management.commands.run_platform import Command

    first = seed()
    banners = []
    for demo in (first, seed()):
        out = StringIO()
        Command(stdout=out)._print_banner("http://127.0.0.1:8000", demo)
        banners.append(out.getvalue())
    issued, kept = banners
    assert first["end_user_api_key"] in issued and f"X-API-Key: {first['end_user_api_key']}" in issued
    assert first["end_user_api_key"] not in kept  # it cannot be shown again: only its digest is stored
    assert first["end_user_api_key_prefix"] in kept and first["workspace_api_key_prefix"] in kept
    assert "still valid" in kept and "seed_demo --new-keys" in kept
