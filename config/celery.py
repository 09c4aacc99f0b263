"""The Celery app: configured from Django settings (CELERY_* names), on our Redis transport."""

import logging
import os

from celery import Celery
from kombu.transport import redis as kombu_redis

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

logger = logging.getLogger(__name__)


class _QoS(kombu_redis.QoS):
    """kombu's Redis QoS, except that the messages of a connection that Redis dropped (a Redis
    restart) cannot end the worker.

    Celery 5.7 / kombu 5.7 close the lost connection's channel, which gives back its unacked
    messages through a new client of that connection: the first attempt meets the dead server, the
    next one a transport already detached (`AttributeError: 'NoneType' object has no attribute
    'hostname'`); and a run that ends after the reconnection acks its message on that detached
    channel (`... no attribute 'client'`). Neither is a connection error, so each escaped as the
    worker's "Unrecoverable error": the main process exited and nothing consumed the queue until a
    person restarted it. Here both give up instead: the message stays in Redis's unacked set, which
    restore_visible hands out again after the visibility timeout, and the execution's row decides
    (a redelivered message of a finished run is not claimed; a run the worker lost is re-queued by
    the reaper from its lease)."""

    def _detached(self) -> bool:
        transport = self.channel.connection
        return transport is None or transport.client is None

    def restore_unacked_once(self, stderr=None):
        try:
            return super().restore_unacked_once(stderr)
        except Exception as exc:  # Redis is gone, or the connection detached; see above
            logger.warning("unacked messages not restored now (%r): left to the visibility timeout", exc)
            self._delivered.clear()
            self._delivered.restored = True

    def ack(self, delivery_tag):
        if self._detached():
            logger.warning("message %s of a closed broker connection: left to the visibility timeout", delivery_tag)
            self._delivered.pop(delivery_tag, None)
            return
        super().ack(delivery_tag)

    def reject(self, delivery_tag, requeue=False):
        if self._detached():
            logger.warning("message %s of a closed broker connection: left to the visibility timeout", delivery_tag)
            self._delivered.pop(delivery_tag, None)
            return
        super().reject(delivery_tag, requeue=requeue)


class _Channel(kombu_redis.Channel):
    QoS = _QoS


class RedisTransport(kombu_redis.Transport):
    """settings.CELERY_BROKER_TRANSPORT: kombu's Redis transport with the QoS above."""

    Channel = _Channel


app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])
