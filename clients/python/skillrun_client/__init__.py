"""skillrun_client: sync and async Python clients of the skillrun APIs (see README.md)."""

from skillrun_client import models
from skillrun_client._async import AsyncSkillrunClient
from skillrun_client._core import OPERATION_MODELS
from skillrun_client._sync import SkillrunClient
from skillrun_client.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    PaymentRequiredError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    SkillrunError,
    TransportError,
    UnprocessableError,
)

__all__ = [
    "OPERATION_MODELS",
    "AsyncSkillrunClient",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "SkillrunError",
    "SkillrunClient",
    "TransportError",
    "UnprocessableError",
    "models",
]
