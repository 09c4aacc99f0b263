"""Writes of the files app."""

import functools
import logging
import os
import re
import uuid

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction

from core.errors import ApiError
from files.content_types import ATTACHMENT_TYPES, SNIFF_BYTES, detect_content_type, stored_content_type
from files.models import FilePurpose, StoredFile

logger = logging.getLogger(__name__)

MAX_ATTACHMENT_BYTES = 50 * 1024 * 1024  # 50 MiB, spec/agents-execute.txt


def safe_filename(name: str) -> str:
    """A filename without directories or control characters, at most 255 characters."""
    name = os.path.basename((name or "").replace("\\", "/"))
    name = re.sub(r"[\x00-\x1f\x7f]", "", name).strip().lstrip(".") or "file"
    stem, dot, extension = name.rpartition(".")
    if len(name) > 255:
        name = (stem[: 254 - len(extension)] + dot + extension) if dot else name[:255]
    return name


def upload_attachment(caller, upload) -> StoredFile:
    """Store an agent attachment under attachments/<workspace>/<uuid><ext>."""
    if upload.size > MAX_ATTACHMENT_BYTES:
        raise ApiError(413, "file_too_large", "Attachments are limited to 50 MiB.", field="file")
    if upload.size == 0:
        raise ApiError(400, "empty_file", "The file is empty.", field="file")
    filename = safe_filename(upload.name)
    upload.seek(0)
    head = upload.read(SNIFF_BYTES)
    upload.seek(0)
    content_type = detect_content_type(head, upload.content_type, filename)
    if content_type is None:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"The file's bytes must be one of {', '.join(sorted(ATTACHMENT_TYPES))}, matching its declared type.",
            field="file",
        )
    extension = os.path.splitext(filename)[1].lower()[:10]
    key = f"attachments/{caller.workspace.id}/{uuid.uuid4().hex}{extension}"
    stored_key = default_storage.save(key, upload)
    try:
        with transaction.atomic():
            return StoredFile.objects.create(
                workspace=caller.workspace,
                principal=caller.principal,
                purpose=FilePurpose.ATTACHMENT,
                storage_key=stored_key,
                filename=filename,
                content_type=content_type,
                size_bytes=upload.size,
            )
    except Exception:
        default_storage.delete(stored_key)  # no orphan object when the row cannot be written
        raise


def store_generated_file(
    workspace, principal, content: bytes, filename: str, purpose: str = FilePurpose.GENERATED
) -> StoredFile:
    """Keep a file an execution produced (generated media, a workspace archive) under generated/<workspace>/.

    Stored with the type its bytes are (files/content_types.py), never one a provider named."""
    filename = safe_filename(filename)
    content_type = stored_content_type(content[:SNIFF_BYTES], filename)
    key = f"generated/{workspace.id}/{uuid.uuid4().hex}{os.path.splitext(filename)[1].lower()[:10]}"
    stored_key = default_storage.save(key, ContentFile(content))
    return StoredFile.objects.create(
        workspace=workspace,
        principal=principal,
        purpose=purpose,
        storage_key=stored_key,
        filename=filename,
        content_type=content_type,
        size_bytes=len(content),
    )


# --- The personal collection (POST /v1/files/): any type, addressed by filename per principal.


def size_limit_text(limit: int) -> str:
    mib = 1024 * 1024
    return f"{limit // mib} MiB" if limit >= mib and limit % mib == 0 else f"{limit} bytes"


def _delete_object(storage_key: str) -> None:
    try:
        default_storage.delete(storage_key)
    except Exception:  # an orphan object is harmless; a failed request after the commit is not
        logger.exception("could not delete the storage object %s", storage_key)


def upload_personal_file(caller, upload) -> StoredFile:
    """Store a file in the caller's personal collection under files/<workspace>/<principal>/<uuid><ext>.

    The collection is addressed by filename: a file with the same (sanitised) name replaces the
    earlier one, whose storage object is deleted once the new row is committed.
    """
    limit = settings.FILE_UPLOAD_MAX_BYTES
    if upload.size > limit:
        raise ApiError(413, "file_too_large", f"Files are limited to {size_limit_text(limit)}.", field="file")
    if upload.size == 0:
        raise ApiError(400, "empty_file", "The file is empty.", field="file")
    workspace, principal = caller.workspace, caller.principal
    filename = safe_filename(upload.name)
    upload.seek(0)
    head = upload.read(SNIFF_BYTES)
    upload.seek(0)
    content_type = stored_content_type(head, filename)  # the bytes decide, never the client's header
    extension = os.path.splitext(filename)[1].lower()[:10]
    key = f"files/{workspace.id}/{principal.id}/{uuid.uuid4().hex}{extension}"
    stored_key = default_storage.save(key, upload)
    try:
        for attempt in range(2):
            try:
                with transaction.atomic():
                    previous = (
                        StoredFile.objects.select_for_update()
                        .filter(principal=principal, purpose=FilePurpose.PERSONAL, filename=filename)
                        .first()
                    )
                    if previous is not None:
                        previous.delete()
                    stored = StoredFile.objects.create(
                        workspace=workspace,
                        principal=principal,
                        purpose=FilePurpose.PERSONAL,
                        storage_key=stored_key,
                        filename=filename,
                        content_type=content_type,
                        size_bytes=upload.size,
                    )
                    if previous is not None:
                        replaced_key = previous.storage_key
                        transaction.on_commit(functools.partial(_delete_object, replaced_key))
                return stored
            except IntegrityError:  # a concurrent upload of the same name committed first: replace it
                if attempt:
                    raise
    except Exception:
        default_storage.delete(stored_key)  # no orphan object when the row cannot be written
        raise


def delete_personal_file(stored: StoredFile) -> None:
    """Remove a personal file: its row, then (once committed) its storage object."""
    storage_key = stored.storage_key
    with transaction.atomic():
        stored.delete()
        transaction.on_commit(lambda: _delete_object(storage_key))
