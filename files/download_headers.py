"""How a stored file reaches a browser: always a download, never a page of our origin.

Files are uploaded by end users and written by skills, and the admin serves them to superusers on
the platform's own origin: an HTML page or an SVG shown inline there could read the admin and its
CSRF cookie. So every route that serves a stored file's bytes (the API's /files/download/<token>
and artifact download, the admin's downloads) answers with these headers, and an S3 presigned URL
carries the same disposition and type as response overrides, so the bucket's origin does not
render them either:

- `Content-Disposition: attachment` with the file's sanitised name;
- the passive type of files/content_types.served_content_type (never HTML, SVG, XML, script);
- `X-Content-Type-Options: nosniff`, so no browser guesses a type from the bytes;
- `Content-Security-Policy: default-src 'none'; sandbox`: opened all the same, the document is
  a sandboxed, unique origin without script, fetches or cookies.
"""

from django.utils.http import content_disposition_header

from files.content_types import served_content_type
from files.services import safe_filename

SANDBOX_POLICY = "default-src 'none'; sandbox"


def attachment_disposition(filename: str) -> str:
    """`attachment; filename="..."` (quotes escaped; `filename*=utf-8''...` for other characters)."""
    return content_disposition_header(True, safe_filename(filename))


def download_headers(content_type: str, filename: str) -> dict[str, str]:
    """The headers of a stored file's download response."""
    return {
        "Content-Type": served_content_type(content_type),
        "Content-Disposition": attachment_disposition(filename),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": SANDBOX_POLICY,
    }


def s3_response_parameters(content_type: str, filename: str) -> dict[str, str]:
    """A presigned GET's overrides: S3 answers with this disposition and type, not the object's."""
    return {
        "ResponseContentDisposition": attachment_disposition(filename),
        "ResponseContentType": served_content_type(content_type),
    }
