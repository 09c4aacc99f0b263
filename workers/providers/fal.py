"""Fal.ai as a media provider, through its queue API (https://docs.fal.ai, "Queue" and "Webhooks"):

    POST {FAL_QUEUE_URL}/{model_id}?fal_webhook={url}   Authorization: Key <FAL_KEY>
        -> {"request_id", "gateway_request_id"?, "status_url", "response_url", "cancel_url"?}
    GET  status_url   -> {"status": "IN_QUEUE" | "IN_PROGRESS" | "COMPLETED", ...}
    GET  response_url -> the model's output ({"images": [{"url", "content_type", "file_name", ...}]})

The webhook is `{PUBLIC_BASE_URL}/inbound/fal` (api/inbound/fal_views.py checks its signature and
stores the result). Without PUBLIC_BASE_URL no webhook is asked for and the waiting node only polls.
A result is {"status": "OK" | "ERROR", "payload", "error"}: the webhook's shape, which a poll
builds too. The node (workers/nodes.py) suspends between polls instead of holding a worker.
"""

from urllib.parse import quote

import httpx
from django.conf import settings

from workers.media import MediaResult
from workers.providers.base import ProviderError, classify_status, error_details

HTTP_TIMEOUT_SECONDS = 30
# what a generated file may be, as its download link serves it (SVG and HTML could carry scripts)
MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif", "video/mp4", "video/webm")
KEY_ENV = "FAL_KEY"


def webhook_url() -> str | None:
    return f"{settings.PUBLIC_BASE_URL}/inbound/fal" if settings.PUBLIC_BASE_URL else None


def _headers() -> dict:
    if not settings.FAL_KEY:
        raise ProviderError("provider_auth_error", "fal: the environment variable FAL_KEY is not set.")
    return {"Authorization": f"Key {settings.FAL_KEY}"}


def _call(method: str, url: str, **kwargs) -> httpx.Response:
    """One request to Fal; a failure as a ProviderError (never with the key in its text)."""
    try:
        response = httpx.request(method, url, headers=_headers(), timeout=HTTP_TIMEOUT_SECONDS, **kwargs)
    except httpx.TimeoutException as exc:
        raise ProviderError("provider_timeout", f"fal: no answer in {HTTP_TIMEOUT_SECONDS} s.") from exc
    except httpx.HTTPError as exc:
        raise ProviderError("provider_unavailable", f"fal: {type(exc).__name__}.") from exc
    return response


def _json(response: httpx.Response):
    try:
        return response.json()
    except ValueError:
        return None


class FalMediaProvider:
    name = "fal"
    calls_back = True  # the node suspends until the webhook (or a poll) brings the result

    def submit(self, request: dict) -> dict:
        """Queue the model's request; the job (kept in the checkpoint) names the URLs Fal gave."""
        model = request.get("model") or ""
        if not model:
            raise ProviderError("invalid_request", "fal: the node names no `model` (e.g. fal-ai/flux/dev).")
        arguments = {**request.get("arguments", {}), "prompt": request.get("prompt", "")}
        if "width" in request and "height" in request and "image_size" not in arguments:
            arguments["image_size"] = {"width": int(request["width"]), "height": int(request["height"])}
        hook = webhook_url()
        response = _call(
            "POST",
            f"{settings.FAL_QUEUE_URL}/{quote(model, safe='/')}",
            params={"fal_webhook": hook} if hook else None,
            json=arguments,
        )
        body = _json(response)
        if response.status_code >= 300:
            code, message = error_details(body)
            raise classify_status("fal", response.status_code, code, message, key_env=KEY_ENV)
        if not isinstance(body, dict) or not isinstance(body.get("request_id"), str):
            raise ProviderError("provider_error", "fal: the queue answered without a request_id.")
        base = f"{settings.FAL_QUEUE_URL}/{model}/requests/{body['request_id']}"
        return {
            "job_id": body["request_id"],
            "request_id": body["request_id"],
            "model": model,
            "status_url": body.get("status_url") or f"{base}/status",
            "response_url": body.get("response_url") or base,
            "webhook": hook is not None,
        }

    def poll(self, job: dict) -> dict | None:
        """The job's result if it is done (None while queued or in progress)."""
        response = _call("GET", job["status_url"])
        status = _json(response)
        if response.status_code >= 300 or not isinstance(status, dict):
            code, message = error_details(status)
            raise classify_status("fal", response.status_code, code, message, key_env=KEY_ENV)
        if status.get("status") != "COMPLETED":
            return None
        response = _call("GET", job["response_url"])
        payload = _json(response)
        if response.status_code < 300:
            return {"status": "OK", "payload": payload, "error": None}
        _, message = error_details(payload)
        return {"status": "ERROR", "payload": payload, "error": message or f"HTTP {response.status_code}"}

    def fetch(self, job: dict, result: dict) -> MediaResult:
        """The first image (or video) of an OK result, downloaded (at most FAL_MEDIA_MAX_BYTES)."""
        payload = result.get("payload") or {}
        media = (payload.get("images") or [None])[0] or payload.get("image") or payload.get("video")
        if not isinstance(media, dict) or not isinstance(media.get("url"), str):
            raise ProviderError("provider_error", "fal: the result holds no image or video URL.")
        limit = settings.FAL_MEDIA_MAX_BYTES
        try:
            with httpx.stream("GET", media["url"], timeout=HTTP_TIMEOUT_SECONDS, follow_redirects=True) as response:
                if response.status_code >= 300:
                    raise ProviderError(
                        "provider_error", f"fal: the media download answered HTTP {response.status_code}."
                    )
                content = bytearray()
                for chunk in response.iter_bytes():
                    content += chunk
                    if len(content) > limit:
                        raise ProviderError("provider_error", f"fal: the media is larger than {limit} bytes.")
                content_type = media.get("content_type") or response.headers.get("content-type", "")
        except httpx.HTTPError as exc:
            raise ProviderError("provider_unavailable", f"fal: media download failed: {type(exc).__name__}.") from exc
        content_type = content_type.split(";")[0].strip().lower()
        if content_type not in MEDIA_TYPES:  # served from our origin later: no HTML, no SVG
            raise ProviderError("provider_error", f"fal: the media's type {content_type[:100]!r} is not accepted.")
        filename = media.get("file_name") or f"{job['request_id']}.{content_type.rsplit('/', 1)[-1]}"
        return MediaResult(content=bytes(content), content_type=content_type, filename=filename)
