"""What never goes into a log line: signed tokens, query strings, terminal colours.

Signed tokens travel in URLs and work without an API key: a stream token in `?token=` (the SSE
routes), a download token as a path segment (/files/download/<token>, valid 24 h). A log is read by
more people, and kept longer, than the links were meant for. So:

- `redact_path`: a request path as logged: no query string, and every path segment that a route of
  the URL conf names like a secret (`token`, `secret`, `signature`) replaced by `<redacted>`. The
  routes are found by walking the URL conf, so a new route with a `<str:token>` is covered when it
  is added.
- `redact_text`: the same in free text, plus the value of any query parameter named like a secret;
  the formatters (core/structured_logs.py) pass every finished line through it, tracebacks included.
- `LogHygieneFilter` (on every handler): Django's `request` extra (django.request,
  django.security), whose repr is the full URL with its query, becomes `METHOD /redacted/path`;
  uvicorn's `color_message` (its message again, with ANSI escapes) is dropped.
- `DisallowedHostFilter` (on the django.security.DisallowedHost logger): a request with a bad Host
  header is the client's mistake or a scan, not our error: WARNING, without the traceback.
"""

import logging
import re
import threading

REDACTED = "<redacted>"
SECRET_NAME = re.compile(r"token|secret|signature", re.IGNORECASE)
# A path segment's value in free text: up to the next slash, query, quote or blank.
_SEGMENT = r"[^/?#&\s'\"<>]+"
_ROUTE_PARAMETER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")
_SECRET_QUERY = re.compile(
    r"(?P<name>[?&;][^=&\s'\"#]*(?:token|secret|signature)[^=&\s'\"#]*=)[^&\s'\"#<>]+", re.IGNORECASE
)


def _route_source(pattern) -> str:
    """A URL pattern as a regex source, unanchored: a path() route's parameters as named groups."""
    route = getattr(pattern, "_route", None)
    if route is None:  # re_path(): its own regex
        return pattern.regex.pattern.removeprefix("^").removesuffix(r"\Z").removesuffix("$")
    source, last = "", 0
    for match in _ROUTE_PARAMETER.finditer(route):
        source += re.escape(route[last : match.start()]) + f"(?P<{match['name']}>{_SEGMENT})"
        last = match.end()
    return source + re.escape(route[last:])


def _walk(patterns, prefix: str = ""):
    from django.urls import URLResolver

    for pattern in patterns:
        source = prefix + _route_source(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, source)
        else:
            yield source


_routes: tuple[re.Pattern, ...] | None = None
_walking = threading.local()


def secret_routes() -> tuple[re.Pattern, ...]:
    """The URL conf's routes with a secret path parameter, as regexes that find such a path in text.

    Walked once, at the first line logged after the apps are loaded (a line logged while the URL
    conf itself is imported finds none: no request has been served yet)."""
    global _routes
    if _routes is None:
        from django.apps import apps
        from django.urls import get_resolver

        if not apps.ready or getattr(_walking, "active", False):
            return ()
        _walking.active = True
        try:
            regexes = (re.compile("/" + source) for source in _walk(get_resolver().url_patterns))
            _routes = tuple(r for r in regexes if any(SECRET_NAME.search(name) for name in r.groupindex))
        finally:
            _walking.active = False
    return _routes


def _redact_match(match: re.Match) -> str:
    text, start = match.group(0), match.start()
    spans = sorted(match.span(name) for name in match.re.groupindex if SECRET_NAME.search(name))
    for group_start, group_end in reversed(spans):
        if group_start >= 0:
            text = text[: group_start - start] + REDACTED + text[group_end - start :]
    return text


def redact_text(text: str) -> str:
    """`text` with the secret path segments of the URL conf's routes and secret query values replaced."""
    if "/" not in text and "=" not in text:
        return text
    for regex in secret_routes():
        text = regex.sub(_redact_match, text)
    return _SECRET_QUERY.sub(lambda match: match["name"] + REDACTED, text)


def redact_path(path: str) -> str:
    """A request path for a log line: without its query, the secret segments replaced."""
    return redact_text(path.split("?", 1)[0])


class LogHygieneFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        request = record.__dict__.get("request")
        if request is not None and not isinstance(request, str):
            record.request = f"{getattr(request, 'method', '')} {redact_path(getattr(request, 'path', ''))}"
        record.__dict__.pop("color_message", None)
        return True


class DisallowedHostFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        return True
