"""Idempotency keys: the principal required, unique per (workspace, principal, key)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("executions", "0008_idempotency_keys_per_principal")]

    operations = [
        migrations.AlterField(
            model_name="idempotencykey",
            name="principal",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="+", to="accounts.principal"
            ),
        ),
        migrations.RemoveConstraint(model_name="idempotencykey", name="idempotency_key_per_workspace"),
        migrations.AddConstraint(
            model_name="idempotencykey",
            constraint=models.UniqueConstraint(
                fields=("workspace", "principal", "key"), name="idempotency_key_per_principal"
            ),
        ),
    ]
