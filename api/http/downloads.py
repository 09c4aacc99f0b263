"""GET /files/download/<token>: the signed download links of stored files (every surface issues them)."""

from core.errors import ApiError, error_json
from files.responses import stored_file_response
from files.selectors import file_from_download_token


def download(request, token):
    """GET /files/download/<token>: the signed links of files kept on the local disk."""
    stored = file_from_download_token(token)
    if stored is None:
        return error_json(ApiError(404, "not_found", "This download link is invalid or has expired."))
    return stored_file_response(stored.storage_key, stored.content_type, stored.filename)
