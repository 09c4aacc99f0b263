"""What a file really is, from its bytes: the declared Content-Type is checked, not trusted.

Two rules live here. `stored_content_type`: the type a file is stored with, read from its bytes
(never the uploader's header), so that no stored row claims HTML or SVG. `served_content_type`: the
type a download is served with, whatever the row says (rows written before the first rule, an
artifact's path): a small allow-list of passive types (a browser shows them, never runs them) keeps
its type, other text is text/plain, anything else application/octet-stream.
"""

import re

import filetype

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
DOCUMENT_TYPES = frozenset({"application/pdf", "text/plain", "text/csv", "text/markdown"})
ATTACHMENT_TYPES = IMAGE_TYPES | DOCUMENT_TYPES
TEXT_TYPES = frozenset({"text/plain", "text/csv", "text/markdown"})
TEXT_BY_EXTENSION = {".txt": "text/plain", ".csv": "text/csv", ".md": "text/markdown", ".markdown": "text/markdown"}
STORED_TEXT_BY_EXTENSION = {**TEXT_BY_EXTENSION, ".json": "application/json"}
SNIFF_BYTES = 8192

# Served with their own type. Nothing here is parsed into a document that runs script: no HTML,
# XHTML, SVG, XML, JavaScript; PDF only because downloads are attachments (never the viewer).
PASSIVE_TYPES = (
    IMAGE_TYPES
    | TEXT_TYPES
    | frozenset(
        {
            "application/pdf",
            "application/json",
            "application/zip",
            "application/gzip",
            "audio/mpeg",
            "audio/ogg",
            "audio/x-wav",
            "video/mp4",
            "video/webm",
        }
    )
)
OCTET_STREAM = "application/octet-stream"

# Anything a browser could take for markup: a tag, a comment, a doctype or an XML declaration.
_MARKUP = re.compile(rb"<\s*[!?/]?\s*[A-Za-z]")


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the end of the sample is fine
        return exc.start >= len(head) - 3
    return True


def looks_like_markup(head: bytes) -> bool:
    return _MARKUP.search(head) is not None


def _extension(filename: str) -> str:
    return "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""


def stored_content_type(head: bytes, filename: str) -> str:
    """The type a file is stored with, from its first SNIFF_BYTES bytes; the client's header is not read.

    - A format with a magic number (filetype: images, PDF, archives, audio, video, office
      documents) is that format. A GIF header before a script is a GIF, served as an image: a
      browser never runs it.
    - Other UTF-8 text is text: text/plain, or by its extension text/csv, text/markdown or
      application/json, unless it holds anything that looks like markup (a tag, `<!`, `<?`): then
      text/plain, whatever its name. So HTML, XHTML, SVG and XML are never stored as such.
    - Anything else is application/octet-stream.
    """
    kind = filetype.guess(head)
    if kind is not None:
        return kind.mime
    if not _looks_like_text(head):
        return OCTET_STREAM
    if looks_like_markup(head):
        return "text/plain"
    return STORED_TEXT_BY_EXTENSION.get(_extension(filename), "text/plain")


def served_content_type(content_type: str) -> str:
    """The Content-Type a stored file is downloaded with: its own when passive, else a harmless one."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type in PASSIVE_TYPES:
        return media_type
    return "text/plain" if media_type.startswith("text/") else OCTET_STREAM


def detect_content_type(head: bytes, declared: str, filename: str) -> str | None:
    """The allowed type these bytes are, consistent with what the client declared; None if none."""
    declared = (declared or "").split(";")[0].strip().lower()
    kind = filetype.guess(head)
    if kind is not None:
        sniffed = kind.mime
        if sniffed not in ATTACHMENT_TYPES - TEXT_TYPES:
            return None
        return sniffed if declared in ("", "application/octet-stream", sniffed) else None
    if not _looks_like_text(head):
        return None
    if declared in TEXT_TYPES:
        return declared
    if declared in ("", "application/octet-stream"):
        return TEXT_BY_EXTENSION.get(_extension(filename), "text/plain")
    return None
