"""Stored files as HTTP responses (the API's download routes and the admin's)."""

from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpResponseRedirect

from files.selectors import storage_is_s3


def stored_file_response(storage_key: str, content_type: str, filename: str):
    """A file of the storage as a response: the bytes from disk, or a redirect to a presigned S3 URL."""
    if storage_is_s3():
        return HttpResponseRedirect(default_storage.url(storage_key))
    if not default_storage.exists(storage_key):
        raise Http404("The file is no longer in the storage.")
    return FileResponse(default_storage.open(storage_key, "rb"), content_type=content_type, filename=filename)
