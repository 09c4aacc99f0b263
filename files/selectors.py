"""Reads of the files app: personal files by name, and where a stored file can be downloaded from."""

from django.conf import settings
from django.core import signing
from django.core.files.storage import default_storage

from files.models import FilePurpose, StoredFile

DOWNLOAD_SALT = "files.download"


def storage_is_s3() -> bool:
    """S3 through django-storages (presigned URLs), rather than the local disk."""
    return hasattr(default_storage, "bucket_name")


def download_url(stored_file) -> str:
    """A URL that needs no API key: S3's presigned URL, or our signed, expiring download link."""
    if storage_is_s3():
        return default_storage.url(stored_file.storage_key)
    token = signing.dumps(str(stored_file.id), salt=DOWNLOAD_SALT)
    return f"{settings.PUBLIC_BASE_URL}/files/download/{token}"


def file_id_from_download_token(token: str):
    """The file id a download token was issued for, or None when it is forged or expired."""
    try:
        return signing.loads(token, salt=DOWNLOAD_SALT, max_age=settings.DOWNLOAD_URL_MAX_AGE_SECONDS)
    except signing.BadSignature:
        return None


def personal_file(principal, filename: str) -> StoredFile | None:
    """The principal's personal file (POST /v1/files/) with this filename, or None."""
    if principal is None or not filename:
        return None
    return StoredFile.objects.filter(principal=principal, purpose=FilePurpose.PERSONAL, filename=filename).first()


def personal_files(principal):
    """The principal's personal files, ordered by filename (a queryset, for the page to slice)."""
    return StoredFile.objects.filter(principal=principal, purpose=FilePurpose.PERSONAL).order_by("filename", "id")
