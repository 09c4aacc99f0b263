"""Standard Webhooks signatures (https://www.standardwebhooks.com/): a `whsec_<base64>` secret, and
`webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` keyed with its decoded
bytes, computed by the spec's reference library (`standardwebhooks`), which receivers verify with."""

import base64
import secrets
from datetime import UTC, datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the spec asks for 24 to 64 random bytes


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def sign(secret: str, webhook_id: str, timestamp: int, body: str) -> str:
    return Webhook(secret).sign(webhook_id, datetime.fromtimestamp(timestamp, tz=UTC), body)


def signed_headers(secret: str, webhook_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The three headers of one attempt. The timestamp is the attempt's (a receiver refuses old ones),
    the id is the delivery's (the same on every attempt)."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, webhook_id, timestamp, body),
    }
