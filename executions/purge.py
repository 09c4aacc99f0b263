"""Purging executions: their content is erased, their accounting stays.

A purged execution keeps its row (`is_purged`, `purged_at`) with its state, timestamps, tokens,
cost, credits and ids, so usage and billing reports stay whole. Erased: `inputs`, `outputs`,
`error`, the checkpoint and its history, the resume input and the staged file names; its events; its artifacts
(rows and storage objects); its workspace archive (row and object); the media its workflow
generated (found through its `media_gen_complete` events); and the skill workspace
`workspaces/<execution id>/` in the default storage. The caller's own uploads (attachments,
personal files) are not the execution's and are kept.

Only finished executions are purged: a queued, running or suspended one still needs its content.
Children are executions of their own, purged on their own (the retention purge reaches them too).

Apps above executions that keep copies of an execution's content (webhooks: the bodies of its
deliveries) erase them in the purge's transaction through `register_purge_effect`.

Callers: `POST /api/v1/executions/{id}/purge`, the admin action, and `purge_expired_executions`
(Celery beat, every PURGE_INTERVAL_SECONDS) for workspaces with `execution_retention_days`.
"""

import logging
import posixpath
from collections.abc import Callable
from datetime import timedelta
from uuid import UUID

from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import Workspace
from core.errors import ApiError
from executions.models import TERMINAL_STATES, Artifact, Execution, ExecutionCheckpoint, ExecutionEvent
from files.models import StoredFile

logger = logging.getLogger(__name__)

RETENTION_BATCH_SIZE = 200


class NotPurgeable(ApiError):
    def __init__(self, execution: Execution):
        super().__init__(
            409, "execution_not_finished", f"Only a finished execution can be purged; this one is {execution.state}."
        )


PurgeEffect = Callable[[UUID], None]
_purge_effects: list[PurgeEffect] = []


def register_purge_effect(effect: PurgeEffect) -> None:
    """An effect run with the id of each execution purged, inside the purge's transaction."""
    if effect not in _purge_effects:
        _purge_effects.append(effect)


def workspace_prefix(execution_id) -> str:
    return f"workspaces/{execution_id}"


def purge_execution(execution: Execution) -> Execution:
    """Purge one finished execution (idempotent: a purged one is returned as it is)."""
    with transaction.atomic():
        locked = Execution.objects.select_for_update().get(id=execution.id)
        if locked.is_purged:
            return locked
        if locked.state not in TERMINAL_STATES:
            raise NotPurgeable(locked)
        storage_keys = list(Artifact.objects.filter(execution=locked).values_list("storage_key", flat=True))
        media_keys = [
            key
            for key in ExecutionEvent.objects.filter(execution=locked, type="media_gen_complete").values_list(
                "data__storage_key", flat=True
            )
            if isinstance(key, str) and key
        ]
        files = StoredFile.objects.filter(workspace_id=locked.workspace_id, storage_key__in=media_keys)
        if locked.workspace_archive_id:
            files = files | StoredFile.objects.filter(id=locked.workspace_archive_id)
        storage_keys += list(files.values_list("storage_key", flat=True))
        now = timezone.now()
        Execution.objects.filter(id=locked.id).update(
            inputs={},
            outputs=None,
            error=None,
            checkpoint={},
            resume_input=None,
            file_source_ids=[],
            workspace_archive=None,
            is_purged=True,
            purged_at=now,
            updated_at=now,
        )
        ExecutionEvent.objects.filter(execution=locked).delete()
        ExecutionCheckpoint.objects.filter(execution=locked).delete()
        Artifact.objects.filter(execution=locked).delete()
        files.delete()
        for effect in _purge_effects:
            effect(locked.id)
    _delete_objects(storage_keys)
    _delete_prefix(workspace_prefix(locked.id))
    return Execution.objects.get(id=locked.id)


def purge_executions(executions) -> tuple[int, int]:
    """Purge each finished execution of a queryset; returns (purged, skipped as unfinished)."""
    purged = skipped = 0
    for execution_id in list(executions.filter(is_purged=False).values_list("id", flat=True)):
        try:
            purge_execution(Execution(id=execution_id))
            purged += 1
        except NotPurgeable:
            skipped += 1
    return purged, skipped


def purge_expired_executions(now=None) -> int:
    """Purge the finished executions older than their workspace's `execution_retention_days`
    (counted from when they ended). Returns how many were purged."""
    now = now or timezone.now()
    purged = 0
    workspaces = Workspace.objects.filter(execution_retention_days__isnull=False).values_list(
        "id", "execution_retention_days"
    )
    failed = set()
    for workspace_id, days in workspaces:
        cutoff = now - timedelta(days=days)
        expired = Execution.objects.filter(
            Q(finished_at__lt=cutoff) | Q(finished_at__isnull=True, created_at__lt=cutoff),
            workspace_id=workspace_id,
            is_purged=False,
            state__in=TERMINAL_STATES,
        )
        while True:
            batch = list(
                expired.exclude(id__in=failed)
                .order_by("created_at")
                .values_list("id", flat=True)[:RETENTION_BATCH_SIZE]
            )
            for execution_id in batch:
                try:
                    purge_execution(Execution(id=execution_id))
                    purged += 1
                except Exception:  # one failure must not stop the rest; the next run retries it
                    logger.exception("could not purge execution %s", execution_id)
                    failed.add(execution_id)
            if len(batch) < RETENTION_BATCH_SIZE:
                break
    return purged


# --- storage -----------------------------------------------------------------------------------------


def _delete_objects(keys) -> None:
    for key in keys:
        try:
            default_storage.delete(key)
        except Exception:  # the rows are gone; an orphan object is logged, not fatal
            logger.exception("could not delete the storage object %s", key)


def _delete_prefix(prefix: str) -> None:
    """Every object below `prefix` (a directory on disk, a key prefix on S3), then the directories."""
    directories = []
    pending = [prefix]
    while pending:
        current = pending.pop()
        try:
            dirs, files = default_storage.listdir(current)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except Exception:
            logger.exception("could not list the storage prefix %s", current)
            continue
        _delete_objects(posixpath.join(current, name) for name in files)
        pending += [posixpath.join(current, name) for name in dirs]
        directories.append(current)
    if hasattr(default_storage, "bucket_name"):
        return  # S3 has no directories
    for directory in reversed(directories):  # deepest first
        try:
            default_storage.delete(directory)  # FileSystemStorage removes an empty directory
        except Exception:
            logger.exception("could not remove the directory %s", directory)
