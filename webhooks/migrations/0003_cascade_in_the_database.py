"""The endpoint -> delivery -> attempt foreign keys cascade in PostgreSQL (ON DELETE CASCADE).

Why: Django's CASCADE deletes in Python, the rows it collected first; an attempt a worker writes
meanwhile (its delivery in flight) then made the DELETE fail on the foreign key (a 500 of `DELETE
/webhooks/{id}`). Deleted by the database, the rows referencing a deleted row go with it, whatever
was written in between (webhooks/services.py deletes an endpoint with one statement). The models keep
`on_delete=CASCADE` for Django's own deletes (the admin), which the database now completes.
A later migration that recreates these foreign keys must keep ON DELETE CASCADE."""

from django.db import migrations

# (table, its foreign key column, the table it references)
FOREIGN_KEYS = [
    ("webhooks_webhookdelivery", "endpoint_id", "webhooks_webhookendpoint"),
    ("webhooks_webhookattempt", "delivery_id", "webhooks_webhookdelivery"),
]


def _recreate(on_delete: str) -> str:
    """Drop each foreign key and add it again, with its name and deferral, with `on_delete`."""
    statements = []
    for table, column, referenced in FOREIGN_KEYS:
        statements.append(
            f"""
DO $$
DECLARE name text;
BEGIN
    SELECT c.conname INTO STRICT name FROM pg_constraint c
     WHERE c.contype = 'f' AND c.conrelid = '{table}'::regclass AND c.confrelid = '{referenced}'::regclass;
    EXECUTE format('ALTER TABLE {table} DROP CONSTRAINT %I', name);
    EXECUTE format(
        'ALTER TABLE {table} ADD CONSTRAINT %I FOREIGN KEY ({column}) REFERENCES {referenced} (id) '
        '{on_delete} DEFERRABLE INITIALLY DEFERRED',
        name
    );
END $$;"""
        )
    return "\n".join(statements)


class Migration(migrations.Migration):
    dependencies = [("webhooks", "0002_endpoint_backoff")]

    operations = [migrations.RunSQL(_recreate("ON DELETE CASCADE"), reverse_sql=_recreate("ON DELETE NO ACTION"))]
