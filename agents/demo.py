"""The demo workspace that `seed_demo` creates: one agent and one skill on the built-in model."""

import uuid

from django.db import transaction

from accounts.models import ApiKeyKind, Tenant, Workspace
from accounts.services import issue_api_key
from agents.models import Agent, Skill
from agents.services import publish_agent_version, publish_skill_version

# Fixed ids make seeding idempotent: running it again finds the same rows.
DEMO_TENANT_ID = uuid.UUID("00000000-0000-4000-8000-00000000d001")
DEMO_WORKSPACE_ID = uuid.UUID("00000000-0000-4000-8000-00000000d002")
DEMO_AGENT_ID = uuid.UUID("00000000-0000-4000-8000-00000000d003")
DEMO_SKILL_SLUG = "demo-report"

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
def seed_demo() -> dict:
    tenant, _ = Tenant.objects.get_or_create(id=DEMO_TENANT_ID, defaults={"name": "Demo tenant"})
    workspace, _ = Workspace.objects.get_or_create(
        id=DEMO_WORKSPACE_ID, defaults={"tenant": tenant, "name": "Demo workspace"}
    )
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
    return {
        "tenant_id": str(tenant.id),
        "workspace_id": str(workspace.id),
        "workspace_api_key": issue_api_key(workspace, ApiKeyKind.WORKSPACE, name="demo service").raw_key,
        "end_user_api_key": issue_api_key(workspace, ApiKeyKind.END_USER, name="demo end user").raw_key,
        "agent_id": str(agent.id),
        "skill_slug": skill.slug,
    }
