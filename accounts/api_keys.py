"""Finding the API key a request presents, by its public prefix (the authentication's one read).

Apart from selectors.py because DRF imports the authentication class (its settings) while
core.errors is being imported: this module imports nothing of core."""

import functools
import hmac

from django.db import connection
from django.utils import timezone

from accounts.models import ApiKey, Principal, Workspace
from accounts.services import PUBLIC_ID_LENGTH, hash_key

# last_used_at is refreshed at most this often per key, so authentication is a single read.
LAST_USED_RESOLUTION_SECONDS = 60


@functools.cache
def _key_query():
    """The SQL of `ApiKey.objects.select_related("workspace", "principal").filter(prefix=...,
    revoked_at__isnull=True)`, written once from the models' metadata: compiling that queryset
    on every request was about a quarter of the API's CPU. Returns the SQL and, per model, its
    attnames and the database converters of its columns (what the ORM would apply)."""
    quote = connection.ops.quote_name
    models = ((ApiKey, "k"), (Workspace, "w"), (Principal, "p"))
    columns, layout = [], []
    for model, alias in models:
        fields = model._meta.concrete_fields
        columns += [f"{alias}.{quote(field.column)}" for field in fields]
        cols = [field.get_col(alias) for field in fields]
        converters = [connection.ops.get_db_converters(col) + col.get_db_converters(connection) for col in cols]
        layout.append((model, [field.attname for field in fields], list(zip(cols, converters))))
    key, workspace, principal = (model._meta for model, _ in models)
    sql = (
        f"SELECT {', '.join(columns)} FROM {quote(key.db_table)} k"
        f" JOIN {quote(workspace.db_table)} w ON w.{quote(workspace.pk.column)} = k.{quote(key.get_field('workspace').column)}"
        f" JOIN {quote(principal.db_table)} p ON p.{quote(principal.pk.column)} = k.{quote(key.get_field('principal').column)}"
        f" WHERE k.{quote(key.get_field('prefix').column)} = %s AND k.{quote(key.get_field('revoked_at').column)} IS NULL"
    )
    return sql, layout


def _active_key_by_prefix(prefix: str) -> ApiKey | None:
    """The unrevoked key with this (unique) prefix, its workspace and principal loaded."""
    sql, layout = _key_query()
    with connection.cursor() as cursor:
        cursor.execute(sql, [prefix])
        row = cursor.fetchone()
    if row is None:
        return None
    objects, start = [], 0
    for model, attnames, converters in layout:
        values = list(row[start : start + len(attnames)])
        start += len(attnames)
        for index, (col, column_converters) in enumerate(converters):
            for convert in column_converters:
                values[index] = convert(values[index], col, connection)
        objects.append(model.from_db(connection.alias, attnames, values))
    api_key, workspace, principal = objects
    ApiKey.workspace.field.set_cached_value(api_key, workspace)  # as select_related does
    ApiKey.principal.field.set_cached_value(api_key, principal)
    return api_key


def find_active_key(raw_key: str) -> ApiKey | None:
    """The active key that `raw_key` is, found by its public prefix and checked in constant time."""
    if not raw_key or not raw_key.startswith(("wak_", "eak_")) or len(raw_key) <= PUBLIC_ID_LENGTH:
        return None
    api_key = _active_key_by_prefix(raw_key[:PUBLIC_ID_LENGTH])
    if api_key is None or not hmac.compare_digest(api_key.secret_hash, hash_key(raw_key)):
        return None
    now = timezone.now()
    if api_key.last_used_at is None or (now - api_key.last_used_at).total_seconds() > LAST_USED_RESOLUTION_SECONDS:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    return api_key
