"""ASGI entry point (uvicorn): thousands of SSE streams cost coroutines, not threads.

Django's own handler would not keep that promise. It runs a request's sync code (the hooks of
Django's middleware, the request_started/request_finished receivers, DRF views, the ORM calls of
our async views) with sync_to_async(thread_sensitive=True) inside a ThreadSensitiveContext per
request, and asgiref gives each such context its own single-thread executor, whose thread lives
until the request ends: for an SSE stream or a waiting `POST /agents/{id}/execute`, as long as the
wait. The Django connection that thread opened stays checked out of the pool until
request_finished, so with 10 pooled connections the 11th open stream waited 30 s and failed
(PoolTimeout).

So each request gets instead an executor that runs each of its sync calls on a thread of one
shared pool of ASGI_SYNC_THREADS threads and closes that thread's Django connections when the call
returns (with Django's pool, close() gives the connection back). Between two sync calls, and so
while a stream or a sync call waits, a request holds neither a thread nor a connection. A
request's calls still run one at a time, as thread-sensitive code expects; they only cannot keep
thread-local state from one call to the next (an open transaction, a connection): nothing here
does (ATOMIC_REQUESTS is off, and a transaction never spans two sync_to_async calls).

Django connects two sync receivers to request_started, close_old_connections and reset_queries;
under this executor no thread holds a connection when a request starts, so they have nothing to
do, and merely having sync receivers costs every request a hop through a thread: they are
disconnected here, in the ASGI process only. request_finished keeps its receivers (it is sent from
response.close(), which runs in a sync call anyway).

In front of the handler, api/http/request_limits.RequestLimits refuses a body over its route's
limit, or of a type the route does not parse, before Django reads it; a chunked body within it is
then given its length (`create_request`).
"""

import os
import threading
from concurrent.futures import Executor, ThreadPoolExecutor

import django
from asgiref.sync import ThreadSensitiveContext

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup(set_prefix=False)

from django.conf import settings  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.core.signals import request_started  # noqa: E402
from django.db import close_old_connections, connections, reset_queries  # noqa: E402

from api.http.request_limits import RequestLimits  # noqa: E402


class RequestExecutor(Executor):
    """A request's sync calls: one at a time, each on a thread of the shared pool, each returning
    the connections it opened."""

    def __init__(self, threads: ThreadPoolExecutor):
        self._threads = threads
        self._one_at_a_time = threading.Lock()

    def submit(self, fn, /, *args, **kwargs):
        return self._threads.submit(self._run, fn, args, kwargs)

    def _run(self, fn, args, kwargs):
        with self._one_at_a_time:
            try:
                return fn(*args, **kwargs)
            finally:
                connections.close_all()


class PooledThreadsASGIHandler(ASGIHandler):
    """Django's ASGI handler with RequestExecutor as every request's thread-sensitive executor."""

    def __init__(self):
        super().__init__()
        self.sync_threads = ThreadPoolExecutor(settings.ASGI_SYNC_THREADS, thread_name_prefix="django-sync")

    async def __call__(self, scope, receive, send):
        # The outermost ThreadSensitiveContext decides; Django's own, inside, then changes nothing.
        async with ThreadSensitiveContext(executor=RequestExecutor(self.sync_threads)):
            await super().__call__(scope, receive, send)

    def create_request(self, scope, body_file):
        """A chunked body (no Content-Length) has been read whole into `body_file` (RequestLimits cut
        it at its route's limit): give the request its length, since Django reads a body, and parses
        a multipart one, only as far as CONTENT_LENGTH says (without it a chunked upload had no file)."""
        if not any(name == b"content-length" for name, _ in scope["headers"]):
            size = body_file.seek(0, os.SEEK_END)
            body_file.seek(0)
            if size:
                scope = {**scope, "headers": [*scope["headers"], (b"content-length", str(size).encode())]}
        return super().create_request(scope, body_file)


request_started.disconnect(close_old_connections)
request_started.disconnect(reset_queries)

application = RequestLimits(PooledThreadsASGIHandler())
