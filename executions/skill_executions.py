"""Starting skill executions (spec/skills-start-standalone-execution.txt).

The inputs are validated against the skill version's manifest (every failing field reported); the
model alias is resolved against the space's allow-list; the Idempotency-Key is claimed in the
transaction that inserts the execution. The files of `file_source_ids` are staged by the worker.
"""

from django.db import transaction

from accounts.selectors import model_config_for
from agents.models import Skill
from agents.skill_inputs import inputs_errors
from api.http.schemas import json_object
from core.errors import ApiError, not_found
from executions import services
from executions.idempotency import claim_idempotency_key, parse_idempotency_key, request_fingerprint
from executions.models import ExecutionSource, IdempotencyKey

MAX_FILE_SOURCES = 100
MAX_FILENAME_CHARS = 255


def caller_space(caller, space_id: str):
    """The space in the path must be the caller's workspace; any other is 404, as if absent."""
    if space_id.removeprefix("workspace:") != str(caller.workspace.id):
        raise not_found("space")
    return caller.workspace


def _file_source_ids(body) -> list[str]:
    names = body.get("file_source_ids")
    if names is None:
        return []
    if not isinstance(names, list) or len(names) > MAX_FILE_SOURCES:
        raise ApiError(
            422,
            "invalid_file_source_ids",
            f"file_source_ids must be a list of at most {MAX_FILE_SOURCES} filenames.",
            field="file_source_ids",
        )
    for index, name in enumerate(names):
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_FILENAME_CHARS:
            raise ApiError(
                422,
                "invalid_file_source_ids",
                f"Each filename is a string of 1 to {MAX_FILENAME_CHARS} characters.",
                field=f"file_source_ids[{index}]",
            )
    return list(dict.fromkeys(names))


def start_skill_execution(
    caller, space_id: str, slug: str, request, source: str = ExecutionSource.STANDALONE, chat_ids: dict | None = None
):
    workspace = caller_space(caller, space_id)
    skill = Skill.objects.select_related("live_version").filter(workspace=workspace, slug=slug).first()
    if skill is None:
        raise not_found("skill")
    if skill.live_version is None:
        raise ApiError(409, "skill_not_published", "The skill has no published version.")
    idempotency_key = parse_idempotency_key(request.headers)
    body = json_object(request.body)
    inputs = body.get("inputs")
    if not isinstance(inputs, dict):
        raise ApiError(
            422,
            "invalid_inputs",
            "inputs is required and must be an object.",
            field="inputs",
            errors=[{"field": "inputs", "message": "inputs must be an object"}],
        )
    errors = inputs_errors(skill.live_version.manifest, inputs)
    if errors:
        raise ApiError(
            422,
            "invalid_inputs",
            f"{len(errors)} input(s) do not match the skill's inputs schema.",
            field=errors[0]["field"],
            errors=errors,
        )
    file_source_ids = _file_source_ids(body)
    model_config = model_config_for(workspace, body.get("model"))
    with transaction.atomic():
        claimed = None
        if idempotency_key:
            claimed = claim_idempotency_key(
                workspace, idempotency_key, request_fingerprint(f"skills {skill.id}", body), prefixed_ids=False
            )
        execution = services.create_execution(
            workspace=workspace,
            principal=caller.principal,
            source=source,
            inputs=inputs,
            skill_version=skill.live_version,
            start_payload={"skill_slug": skill.slug},
            idempotency_key=idempotency_key or "",
            model_config=model_config,
            file_source_ids=file_source_ids,
            **(chat_ids or {}),
        )
        if claimed:
            IdempotencyKey.objects.filter(id=claimed.id).update(execution=execution)
    return execution
