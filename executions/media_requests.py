"""Media jobs that a provider finishes on its own time (Fal.ai's queue): the waiting node, its job's
result, and the resume.

A `media_generation` node on such a provider registers its job (MediaRequest) and suspends in
`waiting_for_external_event` without a `suspended` event (an internal wait: a stream of the run
goes on through it), with a timeout after which the reaper resumes it to poll the provider. The
provider's webhook (api/inbound) records the result once (a repeated webhook changes nothing) and
resumes the node; so does the node's own polling.

The race between a webhook and the suspension it should resume: the webhook commits the result
before it looks at the execution (`do_resume_media_wait`, under the execution's row lock), and the
worker looks at the result after its suspension committed (`Suspend.after_suspend`). Whichever
comes second sees the other's write, and the conditional resume lets only one of them re-queue it.
"""

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from executions.checkpoints import Checkpoint
from executions.models import Execution, ExecutionState, MediaRequest
from executions.services import do_resume_execution


def do_register_media_request(*, execution_id, node_id: str, provider: str, request_id: str) -> None:
    MediaRequest.objects.get_or_create(
        provider=provider, request_id=request_id, defaults={"execution_id": execution_id, "node_id": node_id}
    )


def media_request_result(*, provider: str, request_id: str) -> dict | None:
    """The job's result once it came: {"status": "OK"|"ERROR", "payload", "error"}."""
    return (
        MediaRequest.objects.filter(provider=provider, request_id=request_id, received_at__isnull=False)
        .values_list("result", flat=True)
        .first()
    )


def do_record_media_result(*, provider: str, request_id: str, result: dict, via: str) -> bool:
    """Store the job's result if none is stored yet (one conditional UPDATE); False when it was
    already (a repeated webhook, or the poll and the webhook both found it) or the job is unknown."""
    return bool(
        MediaRequest.objects.filter(provider=provider, request_id=request_id, received_at__isnull=True).update(
            result=result, received_via=via, received_at=timezone.now()
        )
    )


@transaction.atomic
def do_resume_media_wait(*, provider: str, request_id: str) -> bool:
    """Re-queue the execution whose node waits for this job, once its result is stored; locks the
    execution's row. False if it does not wait for it (still running, or resumed already)."""
    request = MediaRequest.objects.filter(provider=provider, request_id=request_id, received_at__isnull=False).first()
    if request is None:
        return False
    row = Execution.objects.select_for_update().filter(id=request.execution_id).first()
    if row is None or row.state != ExecutionState.WAITING_FOR_EXTERNAL_EVENT:
        return False
    if Checkpoint.from_json(row.checkpoint).media_request_id() != request_id:
        return False
    resume_input = {"media_request_id": request_id}
    return bool(
        do_resume_execution(row, ExecutionState.WAITING_FOR_EXTERNAL_EVENT, resume_input, queue=settings.MEDIA_QUEUE)
    )


def check_deliver_media_webhook(*, provider: str, request_id: str, result: dict) -> str:
    """A provider's webhook (its signature checked by the caller): record the result and resume the
    node waiting for it. Returns "recorded", "duplicate" (already recorded: nothing done) or
    "unknown_request" (no job of ours)."""
    with transaction.atomic():
        recorded = do_record_media_result(provider=provider, request_id=request_id, result=result, via="webhook")
    if not recorded:
        exists = MediaRequest.objects.filter(provider=provider, request_id=request_id).exists()
        return "duplicate" if exists else "unknown_request"
    do_resume_media_wait(provider=provider, request_id=request_id)
    return "recorded"
