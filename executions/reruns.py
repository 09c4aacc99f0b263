"""Operators' reruns of an execution, each a new execution linked to its source:

- a **retry** (`retry_of`): the same responder version, inputs and caller (principal), from the start;
- a **fork** (`forked_from`, `forked_from_seq`): from one of the source's saved checkpoints (its
  history, ExecutionCheckpoint: the latest one at or before the seq asked for), optionally on
  another model alias of the workspace. Nothing before the checkpoint runs or is emitted again:
  the fork's log begins with a `forked_from` event (naming the source and the seq), then the
  worker continues from the checkpoint (workers/runtime.py reads it as any resumed run would).
  Its usage and cost start at zero: only what the fork runs is counted, and charged.

Both hold credits as a new start does (agent_executions.hold_start_credits), charged to the
source's caller. Only top-level executions are rerun (a sub-execution or a batch item belongs to
its parent's run; a batch runs nothing itself), and not purged ones (their inputs and checkpoints
are erased). Forks are of agent executions only: a skill's checkpoint does not hold the files its
run wrote into its workspace, which a fork would need.
"""

from dataclasses import replace

from django.db import transaction

from accounts.selectors import model_config_for
from agents.models import AgentVersion, SkillVersion
from core.errors import ApiError
from core.ids import uuid7
from executions import services
from executions.agent_executions import hold_start_credits
from executions.checkpoints import Checkpoint, CheckpointError
from executions.models import TERMINAL_STATES, Execution, ExecutionCheckpoint, ExecutionSource


def rerun_refusal(execution: Execution) -> ApiError | None:
    """Why this execution cannot be retried or forked at all, or None."""
    if execution.is_purged:
        return ApiError(409, "execution_purged", "A purged execution's inputs and checkpoints are erased.")
    if execution.parent_id or execution.source == ExecutionSource.BATCH:
        return ApiError(
            409, "not_rerunnable", "Only a top-level execution can be rerun (not a batch, an item or a child)."
        )
    if not (execution.agent_version_id or execution.skill_version_id):
        return ApiError(409, "not_rerunnable", "The execution has no responder to run.")
    return None


def fork_refusal(execution: Execution) -> ApiError | None:
    refusal = rerun_refusal(execution)
    if refusal is None and not execution.agent_version_id:
        return ApiError(
            409, "fork_not_supported", "Only agent executions can be forked (a skill's files are not checkpointed)."
        )
    return refusal


def checkpoint_at(execution: Execution, seq: int) -> ExecutionCheckpoint | None:
    """The latest saved checkpoint of the execution at or before event `seq`."""
    return ExecutionCheckpoint.objects.filter(execution_id=execution.id, seq__lte=seq).order_by("-seq", "-id").first()


def _create_rerun(source: Execution, *, start_payload: dict, start_event: str = "start", **fields) -> Execution:
    """A queued execution of the source's responder version, inputs and caller, credits held."""
    execution_id = uuid7()
    if source.agent_version_id:
        version = AgentVersion.objects.select_related("agent").get(id=source.agent_version_id)
        responder = {"agent_version": version}
        payload = {"agent_id": f"agent:{version.agent_id}"}
        fields = {
            **hold_start_credits(
                workspace=source.workspace,
                principal=source.principal,
                agent=version.agent,
                inputs=source.inputs,
                execution_id=execution_id,
            ),
            **fields,
        }
    else:
        version = SkillVersion.objects.select_related("skill").get(id=source.skill_version_id)
        responder = {"skill_version": version, "file_source_ids": source.file_source_ids}
        payload = {"skill_slug": version.skill.slug}
        fields.setdefault("model_config", source.model_config)
    return services.create_execution(
        id=execution_id,
        workspace=source.workspace,
        principal=source.principal,
        source=source.source,
        inputs=source.inputs,
        start_payload={**payload, **start_payload},
        start_event=start_event,
        **responder,
        **fields,
    )


def check_retry_execution(*, execution: Execution) -> Execution:
    """Retry a finished execution from the start (409 when it cannot be; 402 without the credits)."""
    refusal = rerun_refusal(execution)
    if refusal:
        raise refusal
    if execution.state not in TERMINAL_STATES:
        raise ApiError(
            409, "execution_not_finished", f"Only a finished execution is retried; this one is {execution.state}."
        )
    with transaction.atomic():
        return _create_rerun(execution, start_payload={"retry_of": execution.public_id}, retry_of=execution)


def check_fork_execution(*, execution: Execution, from_seq: int, model: str | None = None) -> Execution:
    """Fork from the latest checkpoint at or before `from_seq` (409 `no_checkpoint` without one),
    on the model alias `model` when given (422 `model_not_allowed` unless on the allow-list)."""
    refusal = fork_refusal(execution)
    if refusal:
        raise refusal
    saved = checkpoint_at(execution, from_seq)
    try:
        checkpoint = Checkpoint.from_json(saved.data) if saved else None
    except CheckpointError:
        checkpoint = None
    if checkpoint is None:
        raise ApiError(
            409, "no_checkpoint", f"The execution has no checkpoint at or before event {from_seq}.", field="from_seq"
        )
    model_config = model_config_for(execution.workspace, model) if model else None
    # the fork's own log: `forked_from` is its event 1; nothing of the source's usage is counted again
    start = replace(checkpoint, usage={}, cost_usd="0", event_seq=1).to_json()
    with transaction.atomic():
        fork = _create_rerun(
            execution,
            start_event="forked_from",
            start_payload={
                "source_execution_id": execution.public_id,
                "from_seq": from_seq,
                "checkpoint_seq": saved.seq,
                "model": model,
            },
            checkpoint=start,
            forked_from=execution,
            forked_from_seq=saved.seq,
            model_config=model_config,
        )
        ExecutionCheckpoint.objects.create(execution=fork, seq=1, data=start)  # a fork of the fork may start here
    return fork
