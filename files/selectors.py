"""Reads of the files app: personal files by name, and where a stored file can be downloaded from."""

from django.conf import settings
from django.core import signing
from django.core.files.storage import default_storage

from files.download_headers import s3_response_parameters
from files.models import FilePurpose, StoredFile

DOWNLOAD_SALT = "files.download"
# The only files /files/download/<token> links are issued for: the media a workflow generated. A
# token names its file's purpose and is signed for it, so it cannot fetch an upload, a personal file
# or a workspace archive, whatever id it is made for.
DOWNLOAD_PURPOSES = frozenset({FilePurpose.GENERATED})


def storage_is_s3() -> bool:
    """S3 through django-storages (presigned URLs), rather than the local disk."""
    return hasattr(default_storage, "bucket_name")


def _download_salt(purpose: str) -> str:
    return f"{DOWNLOAD_SALT}.{purpose}"


def download_url(stored_file) -> str:
    """A URL that needs no API key: S3's presigned URL (a download, as files/download_headers.py
    says), or our signed, expiring download link."""
    if stored_file.purpose not in DOWNLOAD_PURPOSES:
        raise ValueError(f"download links are not issued for {stored_file.purpose} files")
    if storage_is_s3():
        parameters = s3_response_parameters(stored_file.content_type, stored_file.filename)
        return default_storage.url(stored_file.storage_key, parameters=parameters)
    claims = {"f": str(stored_file.id), "p": stored_file.purpose}
    token = signing.dumps(claims, salt=_download_salt(stored_file.purpose))
    return f"{settings.PUBLIC_BASE_URL}/files/download/{token}"


def file_from_download_token(token: str) -> StoredFile | None:
    """The file a download token was issued for, or None when it is forged, expired or for a file
    of another purpose."""
    for purpose in DOWNLOAD_PURPOSES:
        try:
            claims = signing.loads(token, salt=_download_salt(purpose), max_age=settings.DOWNLOAD_URL_MAX_AGE_SECONDS)
        except signing.BadSignature:
            continue
        if isinstance(claims, dict) and claims.get("p") == purpose and isinstance(claims.get("f"), str):
            return StoredFile.objects.filter(id=claims["f"], purpose=purpose).first()
    return None


def personal_file(principal, filename: str) -> StoredFile | None:
    """The principal's personal file (POST /v1/files/) with this filename, or None."""
    if principal is None or not filename:
        return None
    return StoredFile.objects.filter(principal=principal, purpose=FilePurpose.PERSONAL, filename=filename).first()


def personal_files(principal):
    """The principal's personal files, ordered by filename (a queryset, for the page to slice)."""
    return StoredFile.objects.filter(principal=principal, purpose=FilePurpose.PERSONAL).order_by("filename", "id")


def attachable_files(caller, storage_keys: list[str]):
    """The uploads (POST /attachments/upload) among these storage keys that the caller may attach
    to an execution: an end user's own; any of the workspace for a workspace key."""
    files = StoredFile.objects.filter(
        workspace=caller.workspace, purpose=FilePurpose.ATTACHMENT, storage_key__in=storage_keys
    )
    return files if caller.is_workspace_key else files.filter(principal=caller.principal)
