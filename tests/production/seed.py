"""The drill's tenant, made inside the migrate service's environment (uid 10001, read-only code), as
an operator would with `manage.py shell`: a workspace, a customer's end-user key with credits, a
paid streaming agent, a free agent for batches and attachments, a slow one and a skill that reads an uploaded file and writes a
report. Run: `python manage.py shell -c "from tests.production.seed import main; main()"`; it prints
one JSON line. The constants are shared with tests/test_production_drill.py, which checks them."""

import json
from decimal import Decimal

REPLY = " ".join(f"w{i:02d}" for i in range(20))
SLOW_REPLY = " ".join(f"s{i:02d}" for i in range(40))  # 40 words 500 ms apart: 20 s, running when a worker stops
RULES = {"base": 10, "per_1k_tokens": 2, "max_tokens": 4000}  # hold 18, a 20-word run costs 12 (tests/test_drills.py)
HOLD, CHARGE = Decimal(18), Decimal(12)
GRANT = Decimal(100_000)
CUSTOMER = "cus_production_drill"
SKILL_SLUG = "drill-report"
MATERIAL = "notes.md"
REPORT = "# Drill report\n\nEvery execution ended exactly once.\n"
SKILL_MANIFEST = {
    "inputs_schema": {"type": "object", "properties": {"topic": {"type": "string"}}, "required": ["topic"]},
    "instructions": "Read the notes, write the report.",
    "tools": ["list_files", "read_file", "write_file"],
    "limits": {"max_iterations": 6},
    "model": {
        "provider": "builtin",
        "chunk_delay_ms": 50,
        "script": [
            {"tool_calls": [{"name": "read_file", "arguments": {"path": f"inputs/materials/{MATERIAL}"}}]},
            {"tool_calls": [{"name": "write_file", "arguments": {"path": "outputs/report.md", "content": REPORT}}]},
            {"text": "The report is in outputs/report.md."},
        ],
    },
}


def builtin(**options) -> dict:
    return {"nodes": [{"id": "answer", "type": "ai", "model": {"provider": "builtin", **options}}]}


def main() -> None:
    from accounts.credits import account_for, do_grant_credits
    from accounts.models import ApiKeyKind, Customer
    from accounts.services import create_tenant, issue_api_key
    from agents.models import Agent, Skill
    from agents.services import publish_agent_version, publish_skill_version

    tenant = create_tenant("Production drill")
    workspace = tenant.workspace
    customer = Customer.objects.create(workspace=workspace, external_id=CUSTOMER)
    issued = issue_api_key(workspace, ApiKeyKind.END_USER, name="drill", customer=customer)
    do_grant_credits(account_for(workspace, issued.api_key.principal), GRANT)
    paid = Agent.objects.create(workspace=workspace, name="paid", credit_rules=RULES)
    publish_agent_version(paid, builtin(chunk_delay_ms=150, reply=REPLY))
    free = Agent.objects.create(workspace=workspace, name="free")
    publish_agent_version(free, builtin(chunk_delay_ms=20, reply=REPLY))
    slow = Agent.objects.create(workspace=workspace, name="slow")
    publish_agent_version(slow, builtin(chunk_delay_ms=500, reply=SLOW_REPLY))
    skill = Skill.objects.create(workspace=workspace, slug=SKILL_SLUG, name="Drill report")
    publish_skill_version(skill, SKILL_MANIFEST)
    print(
        json.dumps(
            {
                "workspace_id": str(workspace.id),
                "customer_key": issued.raw_key,
                "workspace_key": tenant.workspace_key.raw_key,
                "paid_agent_id": str(paid.id),
                "free_agent_id": str(free.id),
                "slow_agent_id": str(slow.id),
            }
        )
    )
