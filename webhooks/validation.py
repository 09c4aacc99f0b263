"""What a webhook endpoint may be: shared by the API's schema and the admin's form."""

from urllib.parse import urlsplit

from webhooks.models import WebhookEvent

URL_MAX_LENGTH = 2048
DESCRIPTION_MAX_LENGTH = 200
EVENTS = tuple(WebhookEvent.values)


def url_problem(url: str) -> str | None:
    """Why this URL cannot be an endpoint, or None. Whether its host is public is decided at
    delivery time, after resolving it (webhooks/transport.py): a name can change its address."""
    if len(url) > URL_MAX_LENGTH:
        return f"At most {URL_MAX_LENGTH} characters."
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return "A URL has no whitespace or control characters."
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        return "Not a valid URL."
    if parts.scheme not in ("http", "https"):
        return "The URL must be http:// or https://."
    if not parts.hostname:
        return "The URL has no host."
    if parts.username is not None or parts.password is not None:
        return "Credentials in the URL are not accepted (authenticate with the signature)."
    if parts.fragment:
        return "A URL with a #fragment is not accepted."
    return None
