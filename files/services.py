"""Writes of the files app."""

import os
import re
import uuid

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from config.errors import ApiError
from files.content_types import ATTACHMENT_TYPES, SNIFF_BYTES, detect_content_type
from files.models import FilePurpose, StoredFile

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
            415, "unsupported_media_type",
            f"The file's bytes must be one of {', '.join(sorted(ATTACHMENT_TYPES))}, matching its declared type.",
            field="file",
        )
    extension = os.path.splitext(filename)[1].lower()[:10]
    key = f"attachments/{caller.workspace.id}/{uuid.uuid4().hex}{extension}"
    stored_key = default_storage.save(key, upload)
    try:
        with transaction.atomic():
            return StoredFile.objects.create(
                workspace=caller.workspace, principal=caller.principal, purpose=FilePurpose.ATTACHMENT,
                storage_key=stored_key, filename=filename, content_type=content_type, size_bytes=upload.size,
            )
    except Exception:
        default_storage.delete(stored_key)  # no orphan object when the row cannot be written
        raise


def store_generated_file(workspace, principal, content: bytes, content_type: str, filename: str) -> StoredFile:
    """Keep a file a workflow produced (generated media) under generated/<workspace>/."""
    filename = safe_filename(filename)
    key = f"generated/{workspace.id}/{uuid.uuid4().hex}{os.path.splitext(filename)[1].lower()[:10]}"
    stored_key = default_storage.save(key, ContentFile(content))
    return StoredFile.objects.create(
        workspace=workspace, principal=principal, purpose=FilePurpose.GENERATED, storage_key=stored_key,
        filename=filename, content_type=content_type, size_bytes=len(content),
    )
