"""The demo workspace that `seed_demo` creates: one agent and one skill on the built-in model, and
its two demo keys.

A key's secret is stored as a digest only, so it can be printed once, when it is issued. `make run`
seeds the demo at every start: it issues the demo keys the first time and afterwards keeps them
(the keys printed then still work) instead of adding two keys per start. `new_keys` revokes the
demo keys and issues fresh ones, to the same principals (an end user's conversations and files
stay theirs).
"""

import uuid

from django.db import transaction

from accounts.models import ApiKey, ApiKeyKind, Tenant, Workspace
from accounts.services import issue_api_key, revoke_api_key
from agents.models import Agent, Skill
from agents.services import publish_agent_version, publish_skill_version

# Fixed ids make seeding idempotent: running it again finds the same rows.
DEMO_TENANT_ID = uuid.UUID("00000000-0000-4000-8000-00000000d001")
DEMO_WORKSPACE_ID = uuid.UUID("00000000-0000-4000-8000-00000000d002")
DEMO_AGENT_ID = uuid.UUID("00000000-0000-4000-8000-00000000d003")
DEMO_SKILL_SLUG = "demo-report"
# The demo keys are found again by their name in the demo workspace.
DEMO_KEY_NAMES = {ApiKeyKind.WORKSPACE: "demo service", ApiKeyKind.END_USER: "demo end user"}

# ~45 words at 100 ms each: about 45 `text` events over 4.5 s, slow enough to watch stream.
DEMO_AGENT_WORKFLOW = {
    "nodes": [
        {
            "id": "answer",
            "type": "ai",
            "instructions": "You are the demo agent. Answer the user's message.",
            "model": {"provider": "builtin", "chunk_delay_ms": 100},
        }
    ]
}

DEMO_SKILL_MANIFEST = {
    "inputs_schema": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"topic": {"type": "string", "minLength": 1}},
        "required": ["topic"],
        "additionalProperties": False,
    },
    "instructions": "Read the staged materials and write a Markdown report on the topic to outputs/report.md.",
    "tools": ["list_files", "read_file", "read_materials", "write_file"],
    "limits": {"max_iterations": 10, "max_seconds": 300},
    # The built-in model follows this script (a real model would be told the same by the instructions).
    "model": {
        "provider": "builtin",
        "chunk_delay_ms": 50,
        "script": [
            {
                "reasoning": "First I read the staged materials.",
                "tool_calls": [{"name": "read_materials", "arguments": {}}],
            },
            {
                "tool_calls": [
                    {
                        "name": "write_file",
                        "arguments": {
                            "path": "outputs/report.md",
                            "content": "# Report: {{prompt.topic}}\n\n## Materials\n\n{{last_tool_result.result.text}}\n",
                        },
                    }
                ]
            },
            {"text": "The report on {{prompt.topic}} is in outputs/report.md."},
        ],
    },
}


@transaction.atomic
def seed_demo(new_keys: bool = False) -> dict:
    """The demo rows (created once, updated to the current workflow and manifest) and its keys.

    `workspace_api_key` / `end_user_api_key` hold a key only when this call issued it (null when the
    earlier one is kept); the `_prefix` fields always name the demo's active keys."""
    tenant, _ = Tenant.objects.get_or_create(id=DEMO_TENANT_ID, defaults={"name": "Demo tenant"})
    workspace, _ = Workspace.objects.get_or_create(
        id=DEMO_WORKSPACE_ID, defaults={"tenant": tenant, "name": "Demo workspace"}
    )
    workspace = Workspace.objects.select_for_update().get(id=workspace.id)  # two seeds at once: one issues the keys
    agent, created = Agent.objects.get_or_create(
        id=DEMO_AGENT_ID, defaults={"workspace": workspace, "name": "Demo agent", "requires_user_message": True}
    )
    if created or agent.live_version is None or agent.live_version.workflow != DEMO_AGENT_WORKFLOW:
        publish_agent_version(agent, DEMO_AGENT_WORKFLOW)
    skill, created = Skill.objects.get_or_create(
        workspace=workspace, slug=DEMO_SKILL_SLUG, defaults={"name": "Demo report"}
    )
    if created or skill.live_version is None or skill.live_version.manifest != DEMO_SKILL_MANIFEST:
        publish_skill_version(skill, DEMO_SKILL_MANIFEST)
    workspace_key = _demo_key(workspace, ApiKeyKind.WORKSPACE, new_keys)
    end_user_key = _demo_key(workspace, ApiKeyKind.END_USER, new_keys)
    return {
        "tenant_id": str(tenant.id),
        "workspace_id": str(workspace.id),
        "workspace_api_key": workspace_key[1],
        "end_user_api_key": end_user_key[1],
        "workspace_api_key_prefix": workspace_key[0],
        "end_user_api_key_prefix": end_user_key[0],
        "keys_issued": workspace_key[1] is not None or end_user_key[1] is not None,
        "agent_id": str(agent.id),
        "skill_slug": skill.slug,
    }


def _demo_key(workspace, kind: str, new_key: bool) -> tuple[str, str | None]:
    """(prefix, raw key or None): the active demo key of `kind` kept, or a new one issued (when
    there is none, or `new_key`: then the active ones are revoked first)."""
    name = DEMO_KEY_NAMES[kind]
    active = list(
        ApiKey.objects.filter(workspace=workspace, kind=kind, name=name, revoked_at__isnull=True)
        .select_related("principal")
        .order_by("-created_at")
    )
    if active and not new_key:
        return active[0].prefix, None
    for api_key in active:
        revoke_api_key(api_key)
    issued = issue_api_key(workspace, kind, principal=active[0].principal if active else None, name=name)
    return issued.api_key.prefix, issued.raw_key
