"""Writes of the files app."""

import functools
import logging
import mimetypes
import os
import re
import uuid

import filetype
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction

from core.errors import ApiError
from files.content_types import (
    ATTACHMENT_TYPES,
    SNIFF_BYTES,
    TEXT_BY_EXTENSION,
    _looks_like_text,
    detect_content_type,
)
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
    workspace, principal, content: bytes, content_type: str, filename: str, purpose: str = FilePurpose.GENERATED
) -> StoredFile:
    """Keep a file an execution produced (generated media, a workspace archive) under generated/<workspace>/."""
    filename = safe_filename(filename)
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


def _personal_content_type(head: bytes, declared: str, filename: str) -> str:
    """What the bytes are when recognisable, else what the client declared, else a guess by name."""
    kind = filetype.guess(head)
    if kind is not None:
        return kind.mime
    declared = (declared or "").split(";")[0].strip().lower()
    if "/" in declared and declared != "application/octet-stream" and len(declared) <= 100:
        return declared
    extension = os.path.splitext(filename)[1].lower()
    guessed = TEXT_BY_EXTENSION.get(extension) or mimetypes.guess_type(filename, strict=False)[0]
    if guessed and len(guessed) <= 100:
        return guessed
    return "text/plain" if _looks_like_text(head) else "application/octet-stream"


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
    content_type = _personal_content_type(head, upload.content_type, filename)
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
