"""Starting skill executions (spec/skills-start-standalone-execution.txt).

The request's shape is validated by the surface (api/skills/views.py); here: the caller's space,
the skill's live version, the inputs against its manifest (every failing field reported), the
model alias against the space's allow-list, and the Idempotency-Key, claimed in the transaction
that inserts the execution. The files of `file_source_ids` are staged by the worker.
"""

from django.db import transaction

from accounts.selectors import model_config_for
from agents.models import Skill
from agents.skill_inputs import inputs_errors
from core.errors import ApiError, not_found
from executions import services
from executions.idempotency import claim_idempotency_key
from executions.models import Execution, ExecutionSource, IdempotencyKey


def caller_space(caller, space_id: str):
    """The space in the path must be the caller's workspace; any other is 404, as if absent."""
    if space_id.removeprefix("workspace:") != str(caller.workspace.id):
        raise not_found("space")
    return caller.workspace


def get_startable_skill(space, slug: str) -> Skill:
    """The space's skill with a published (live) version: 404 without the skill, 409 without a version."""
    skill = Skill.objects.select_related("live_version").filter(workspace=space, slug=slug).first()
    if skill is None:
        raise not_found("skill")
    if skill.live_version is None:
        raise ApiError(409, "skill_not_published", "The skill has no published version.")
    return skill


def check_inputs(skill: Skill, inputs: dict) -> None:
    errors = inputs_errors(skill.live_version.manifest, inputs)
    if errors:
        raise ApiError(
            422,
            "invalid_inputs",
            f"{len(errors)} input(s) do not match the skill's inputs schema.",
            field=errors[0]["field"],
            errors=errors,
        )


def start_skill_execution(
    *,
    caller,
    space,
    skill: Skill,
    inputs: dict,
    file_source_ids: list[str],
    model: str | None = None,
    idempotency_key: str | None = None,
    fingerprint: str = "",
    source: str = ExecutionSource.STANDALONE,
) -> Execution:
    """A queued execution of the skill's live version. `fingerprint` (of the request) tells a
    reused Idempotency-Key from a mismatched one."""
    check_inputs(skill, inputs)
    model_config = model_config_for(space, model)
    with transaction.atomic():
        claimed = None
        if idempotency_key:
            claimed = claim_idempotency_key(
                caller=caller, key=idempotency_key, fingerprint=fingerprint, prefixed_ids=False
            )
        execution = services.create_execution(
            workspace=space,
            principal=caller.principal,
            source=source,
            inputs=inputs,
            skill_version=skill.live_version,
            start_payload={"skill_slug": skill.slug},
            idempotency_key=idempotency_key or "",
            model_config=model_config,
            file_source_ids=file_source_ids,
        )
        if claimed:
            IdempotencyKey.objects.filter(id=claimed.id).update(execution=execution)
    return execution
