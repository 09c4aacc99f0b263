"""Fair dispatch between workspaces: which priority an execution's task message gets.

The broker (kombu's Redis transport) keeps one list per priority step (0, 3, 6, 9) of each queue,
and every worker pops the highest non-empty list first (0 is the highest). So a message's priority
decides who waits behind whom:

- RESUME (0): a run already started and waiting on nobody but us: a resume, a re-queue after a lost
  lease, a hand-back. They go first.
- START (3): a workspace's first FAIR_SHARE_STARTS starts within a FAIR_SHARE_WINDOW_SECONDS window.
- OVER_SHARE (6): its starts beyond that, in the same window: a burst of 10,000 queues mostly here,
  so another workspace's single start (at START) is the next one any worker takes.
- REDISPATCH (9): a message published again because the first seemed lost; usually a duplicate (the
  claim makes it a no-op), so it never goes ahead of anyone's first message.

Counting is one Redis INCR per start on a key that expires with its window: no table, no lock, and a
count that cannot drift (each window starts from zero). A Redis that does not answer gives START:
fairness is best effort, a start is never refused for it.
"""

import logging
import time
from functools import lru_cache

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

RESUME, START, OVER_SHARE, REDISPATCH = 0, 3, 6, 9
REDIS_TIMEOUT_SECONDS = 0.5


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
    )


def start_priority(workspace_id) -> int:
    """The priority of a new execution of this workspace: START within its fair share of the current
    window, OVER_SHARE beyond it."""
    window = settings.FAIR_SHARE_WINDOW_SECONDS
    key = f"fair-share:{workspace_id}:{int(time.time() // window)}"
    try:
        with _redis().pipeline(transaction=False) as pipe:
            starts, _ = pipe.incr(key).expire(key, window * 2).execute()
    except redis.RedisError:
        logger.warning("fair share: Redis did not answer; workspace %s starts at the normal priority", workspace_id)
        return START
    return START if starts <= settings.FAIR_SHARE_STARTS else OVER_SHARE
