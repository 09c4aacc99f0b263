"""What the broker holds: the messages waiting in a queue (all its priority steps), for the sweeps
that re-publish a message they take for lost.

A queue with messages waiting is draining a backlog: a message published a minute ago and not yet
consumed is most likely still in it, and publishing it again would only add a duplicate to the
backlog (each sweep tick, for every row in it). So the sweeps re-publish a stale-looking message
only when its queue is empty, i.e. when it really cannot be there.
"""

import logging

from celery import current_app
from kombu.exceptions import ChannelError

logger = logging.getLogger(__name__)


def waiting_messages(*queues: str) -> int | None:
    """Messages waiting (not yet delivered) in these queues, or None when the broker does not answer.
    A passive queue_declare: the count kombu's transports report (Redis: all of a queue's priority
    lists); a queue the broker does not know (Redis: no list, so nothing waiting) counts 0."""
    try:
        with current_app.connection_for_read() as connection:
            return sum(_waiting(connection, queue) for queue in queues)
    except Exception:  # kombu's OperationalError, a Redis error
        logger.warning("broker: the size of %s could not be read", queues, exc_info=True)
        return None


def _waiting(connection, queue: str) -> int:
    channel = connection.channel()
    try:
        return channel.queue_declare(queue=queue, passive=True).message_count
    except ChannelError:  # NOT_FOUND
        return 0
    finally:
        channel.close()
