"""What a file really is, from its bytes: the declared Content-Type is checked, not trusted."""

import filetype

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
DOCUMENT_TYPES = frozenset({"application/pdf", "text/plain", "text/csv", "text/markdown"})
ATTACHMENT_TYPES = IMAGE_TYPES | DOCUMENT_TYPES
TEXT_TYPES = frozenset({"text/plain", "text/csv", "text/markdown"})
TEXT_BY_EXTENSION = {".txt": "text/plain", ".csv": "text/csv", ".md": "text/markdown", ".markdown": "text/markdown"}
SNIFF_BYTES = 8192


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the end of the sample is fine
        return exc.start >= len(head) - 3
    return True


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
        extension = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        return TEXT_BY_EXTENSION.get(extension, "text/plain")
    return None
