"""`manage.py migrate`, safe to run from many pods at once: Django's migrate under a PostgreSQL
advisory lock.

Two migrates started together on an empty database both try to create django_migrations and the
first tables, and one fails (`relation "django_migrations" already exists`); on a populated one
they may apply the same migration twice. Here each holds a session-level advisory lock for its whole
run: the second waits, then finds nothing left to apply. The lock is the session's, so migrate must
connect to PostgreSQL itself, not through a transaction-mode pooler (compose's migrate does).
"""

from django.conf import settings
from django.core.management.base import CommandError
from django.core.management.commands import migrate
from django.db import connections

# pg_advisory_lock's key: any constant bigint of our own; this one is "skillrun" in ASCII.
MIGRATE_LOCK_KEY = 0x736B696C6C72756E


class Command(migrate.Command):
    def handle(self, *args, **options):
        if settings.DB_TRANSACTION_POOLING:
            raise CommandError(
                "migrate holds a session-level lock: give it a DATABASE_URL to PostgreSQL itself, not to "
                "a transaction-mode pooler, and DB_TRANSACTION_POOLING=0."
            )
        connection = connections[options["database"]]
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [MIGRATE_LOCK_KEY])
        try:
            return super().handle(*args, **options)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [MIGRATE_LOCK_KEY])
