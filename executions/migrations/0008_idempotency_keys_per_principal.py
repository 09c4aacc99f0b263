"""Idempotency keys per principal: unique per (workspace, principal, key) instead of (workspace, key).

Existing keys take the principal of the execution they name; a key without one (its execution is
gone or has no principal) is dropped: it only deduplicated requests for at most 24 hours. The constraint changes in 0009 (its
own transaction: PostgreSQL alters no table with the pending FK checks of this update)."""

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def principal_from_execution(apps, schema_editor):
    IdempotencyKey = apps.get_model("executions", "IdempotencyKey")
    Execution = apps.get_model("executions", "Execution")
    IdempotencyKey.objects.update(
        principal_id=Subquery(Execution.objects.filter(id=OuterRef("execution_id")).values("principal_id")[:1])
    )
    IdempotencyKey.objects.filter(principal__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_execution_retention"),
        ("executions", "0007_time_ordered_execution_ids"),
    ]

    operations = [
        migrations.AddField(
            model_name="idempotencykey",
            name="principal",
            field=models.ForeignKey(
                null=True, on_delete=django.db.models.deletion.CASCADE, related_name="+", to="accounts.principal"
            ),
        ),
        migrations.RunPython(principal_from_execution, migrations.RunPython.noop),
    ]
