"""Stored files as HTTP responses (the API's download routes and the admin's): attachments with
the headers of files/download_headers.py, from the disk or through a presigned S3 URL."""

from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpResponseRedirect

from files.download_headers import download_headers, s3_response_parameters
from files.selectors import storage_is_s3


def stored_file_response(storage_key: str, content_type: str, filename: str):
    """A file of the storage as a response: the bytes from disk, or a redirect to a presigned S3 URL
    that makes S3 answer with the same disposition and type."""
    if storage_is_s3():
        parameters = s3_response_parameters(content_type, filename)
        response = HttpResponseRedirect(default_storage.url(storage_key, parameters=parameters))
    elif default_storage.exists(storage_key):
        response = FileResponse(default_storage.open(storage_key, "rb"))
    else:
        raise Http404("The file is no longer in the storage.")
    for name, value in download_headers(content_type, filename).items():
        response[name] = value
    return response
