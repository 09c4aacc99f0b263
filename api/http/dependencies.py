"""A dependency that is down answers 503: one mapping of PostgreSQL, Redis and broker errors to the
error envelope with `Retry-After`, for every view (DRF's and the plain async ones alike).

DRF's exception handler leaves these to Django (they are no APIException), the async views'
wrapper catches only ApiError, so both reach the middleware's `process_exception`, which Django
calls for any exception a view raises. Without it they became Django's HTML 500 page.
"""

import logging

import psycopg
import redis
from django import db
from kombu.exceptions import OperationalError as BrokerError

from api.http.middleware import SyncAndAsyncMiddleware
from core.errors import ApiError, error_json

logger = logging.getLogger(__name__)

# A psycopg_pool PoolTimeout is a psycopg.OperationalError; Django wraps the driver's errors as its own.
DEPENDENCY_ERRORS = (
    db.OperationalError,
    db.InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    redis.ConnectionError,
    redis.TimeoutError,
    BrokerError,
)
RETRY_AFTER_SECONDS = 5


def unavailable_response(exc: Exception):
    response = error_json(
        ApiError(503, "service_unavailable", "A service this request needs is unavailable; try again shortly.")
    )
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class DependencyErrorsMiddleware(SyncAndAsyncMiddleware):
    """Innermost in MIDDLEWARE, so its process_exception is the first Django asks."""

    async def process_exception(self, request, exception):
        if isinstance(exception, DEPENDENCY_ERRORS):
            logger.warning("%s %s: dependency down: %r", request.method, request.path, exception)
            return unavailable_response(exception)
        return None
