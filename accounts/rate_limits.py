"""The request rate of an API key, counted in Redis so that every API process shares one budget.

A fixed window per key, opened by its first request: it admits `limit` requests within
API_KEY_RATE_LIMIT_WINDOW_SECONDS (a minute) of that request; the ones after are answered 429
`rate_limited` with `Retry-After`, the seconds until the window closes, and the next request after
it opens a new window. (So a client never waits more than a minute, and a burst of `limit`
requests is always admitted; across a window's end a client may get up to 2 x `limit` in a minute.)
Counting and opening the window are one Lua script (INCR, then PEXPIRE if the key has no expiry),
atomic in Redis: concurrent requests from any number of processes admit exactly `limit`.

A batch (`POST /agents/{id}/execute/batch`) counts its items: `check_batch_rate_limit` takes the
other items' requests at once, all or none, so a batch larger than what is left of the window is a
429 before anything starts.

A Redis that is down or slow (API_KEY_RATE_LIMIT_REDIS_TIMEOUT_SECONDS) lets requests through with
a warning: the limit protects the platform, it is not worth refusing every request over.
"""

import logging
import math
from functools import lru_cache

import redis
from django.conf import settings

from core.errors import RateLimited
from core.metrics import RATE_LIMITED_REQUESTS

logger = logging.getLogger(__name__)

# KEYS[1] the key's counter; ARGV[1] the window in ms. Returns {requests in the window, ms left}.
_COUNT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


# KEYS[1] the key's counter; ARGV[1] the window in ms, ARGV[2] the requests to add, ARGV[3] the limit.
# Adds them only if the window has room for all of them. Returns {1 added | 0 refused, ms left}.
_TAKE_SCRIPT = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
local ttl = redis.call('PTTL', KEYS[1])
if count + tonumber(ARGV[2]) > tonumber(ARGV[3]) then
  if ttl < 0 then ttl = tonumber(ARGV[1]) end
  return {0, ttl}
end
redis.call('INCRBY', KEYS[1], ARGV[2])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {1, ttl}
"""


def _client() -> redis.Redis:
    timeout = settings.API_KEY_RATE_LIMIT_REDIS_TIMEOUT_SECONDS
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=timeout, socket_connect_timeout=timeout)


@lru_cache(maxsize=1)
def _count_script():
    return _client().register_script(_COUNT_SCRIPT)


@lru_cache(maxsize=1)
def _take_script():  # a batch's items: rarer than requests, so its own connection is cheap
    return _client().register_script(_TAKE_SCRIPT)


def _window_ms() -> int:
    return max(1, int(settings.API_KEY_RATE_LIMIT_WINDOW_SECONDS * 1000))


def _refused(api_key, message: str, ms_left: int) -> RateLimited:
    RATE_LIMITED_REQUESTS.labels(workspace_id=str(api_key.workspace_id)).inc()
    retry_after = max(1, math.ceil(ms_left / 1000))
    return RateLimited(f"{message} Retry after {retry_after} s.", retry_after)


def rate_limit_of(api_key) -> int:
    """Requests per window: the key's own limit, else the environment's default; 0 is unlimited."""
    if api_key.rate_limit_per_minute is not None:
        return api_key.rate_limit_per_minute
    return settings.API_KEY_RATE_LIMIT_PER_MINUTE


def counter_key(api_key) -> str:
    return f"rate-limit:{api_key.id}"


def check_rate_limit(api_key) -> None:
    """Count this request against its key's window; RateLimited (429) when it is over the limit."""
    limit = rate_limit_of(api_key)
    if not limit:
        return
    try:
        count, ms_left = _count_script()(keys=[counter_key(api_key)], args=[_window_ms()])
    except redis.RedisError as exc:
        logger.warning("rate limit of key %s not checked, Redis unavailable: %s", api_key.prefix, exc)
        return
    if count > limit:
        raise _refused(api_key, f"This API key made more than {limit} requests in its window.", ms_left)


def check_batch_rate_limit(api_key, items: int) -> None:
    """A batch of `items` counts as that many requests: its own request was counted when it was
    authenticated, the other `items - 1` are taken here, all or none, before anything starts;
    RateLimited (429) when the key's window has not room for them (nothing is counted then)."""
    limit = rate_limit_of(api_key)
    if not limit or items <= 1:
        return
    try:
        taken, ms_left = _take_script()(keys=[counter_key(api_key)], args=[_window_ms(), items - 1, limit])
    except redis.RedisError as exc:
        logger.warning("rate limit of key %s not checked, Redis unavailable: %s", api_key.prefix, exc)
        return
    if not taken:
        raise _refused(
            api_key,
            f"A batch of {items} items counts as {items} requests, more than this API key has left in its "
            f"window ({limit} per window).",
            ms_left,
        )
