"""The front door: a page where a person pastes a key, picks an agent, sends a message and follows
the execution with the browser's own EventSource (api/static/frontdoor/frontdoor.js).

The page holds no data and no key: the browser calls the API with the key the user pasted (kept
in the tab's sessionStorage, never sent to this view), so the view is a plain template."""

from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

from core.errors import ApiError, error_json

# Scripts and styles from this origin only, no frames: a page a key is pasted into runs nothing else.
CONTENT_SECURITY_POLICY = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"


@csrf_exempt  # it takes no POST: another method gets the JSON 405, not the CSRF check's 403
def index(request):
    if request.method not in ("GET", "HEAD"):
        return error_json(ApiError(405, "method_not_allowed", "Use GET."))
    response = render(request, "frontdoor/index.html")
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response["Referrer-Policy"] = "no-referrer"
    return response
