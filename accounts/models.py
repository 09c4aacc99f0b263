"""Tenants, workspaces (the skills API's "spaces"), principals and API keys."""

import uuid

from django.core.exceptions import ValidationError
from django.db import models

from accounts.model_keys import DisallowedKeyEnv, check_api_key_env


class Tenant(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.name


class Workspace(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="workspaces")
    name = models.CharField(max_length=200)
    # The workspace's current published AppVersion id (the agents API's X-App-Version header).
    app_version_id = models.CharField(max_length=64, blank=True, default="")
    # The model alias skills run on when a request names none (see ModelAlias).
    default_model_alias = models.CharField(max_length=64, blank=True, default="")
    # Finished executions older than this are purged (executions/purge.py); null keeps them forever.
    execution_retention_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Purge finished executions after this many days (empty: keep forever)"
    )
    # At most this many of its executions run at once; more wait queued (executions/concurrency.py).
    max_running_executions = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Executions running at once; more wait queued, in order (empty: WORKSPACE_MAX_RUNNING_EXECUTIONS; "
        "0: unlimited)",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"{self.name} ({self.id})"


class ModelAlias(models.Model):
    """A workspace's name for a provider's model, with its prices. Only `allowed` aliases may be
    requested (the allow-list); the workspace's `default_model_alias` is used otherwise."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="model_aliases")
    alias = models.CharField(max_length=64)
    provider = models.CharField(max_length=32, help_text="builtin, openai, anthropic, ...")
    model = models.CharField(max_length=200, blank=True, default="")
    options = models.JSONField(default=dict, blank=True, help_text="Provider options (base URL, builtin script, ...)")
    input_usd_per_million_tokens = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    output_usd_per_million_tokens = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    allowed = models.BooleanField(default=True, help_text="On the allow-list: requests may name it")

    class Meta:
        verbose_name_plural = "model aliases"
        constraints = [models.UniqueConstraint(fields=["workspace", "alias"], name="model_alias_unique")]

    def __str__(self):
        return self.alias

    def clean(self):
        """The admin saves an alias only with an allowed `api_key_env` (accounts/model_keys.py)."""
        try:
            check_api_key_env(self.options)
        except DisallowedKeyEnv as exc:
            raise ValidationError({"options": str(exc)}) from None

    def config(self) -> dict:
        """What an execution records and the runtime runs: the provider options plus the prices."""
        return {
            **self.options,
            "provider": self.provider,
            "model": self.model,
            "alias": self.alias,
            "input_usd_per_million_tokens": str(self.input_usd_per_million_tokens),
            "output_usd_per_million_tokens": str(self.output_usd_per_million_tokens),
        }


class PrincipalKind(models.TextChoices):
    SERVICE = "service", "Workspace service account"
    END_USER = "end_user", "End user"


class Principal(models.Model):
    """Who acts: a workspace's service account (wak_ keys) or one end user (eak_ keys)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="principals")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="principals")
    kind = models.CharField(max_length=16, choices=PrincipalKind.choices)
    name = models.CharField(max_length=200)
    customer = models.ForeignKey(
        "Customer", null=True, blank=True, on_delete=models.SET_NULL, related_name="principals"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"{self.name} ({self.kind})"


class ApiKeyKind(models.TextChoices):
    WORKSPACE = "workspace", "Workspace key (wak_)"
    END_USER = "end_user", "End-user key (eak_)"


class ApiKey(models.Model):
    """An API key: shown once at creation, stored as a SHA-256 digest, found by its public prefix.

    The key is `<wak_|eak_><12-char public id><secret>`; the secret has 256 bits of entropy, so a
    fast digest is as safe as a slow password hash here and keeps authentication cheap.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="api_keys")
    principal = models.ForeignKey(Principal, on_delete=models.CASCADE, related_name="api_keys")
    kind = models.CharField(max_length=16, choices=ApiKeyKind.choices)
    prefix = models.CharField(max_length=16, unique=True, help_text="Public part, e.g. wak_3f9a1c0b7d2e")
    secret_hash = models.CharField(max_length=64, help_text="SHA-256 of the whole key")
    name = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Requests per minute this key may make (accounts/rate_limits.py).
    rate_limit_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Requests per minute; more are answered 429 (empty: API_KEY_RATE_LIMIT_PER_MINUTE; 0: unlimited)",
    )

    def __str__(self):
        return f"{self.prefix}…"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Customer(models.Model):
    """A paying customer of a workspace; end-user principals may belong to one (their credits)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="customers")
    external_id = models.CharField(max_length=255, help_text="The customer's id in your system")
    name = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "external_id"], name="customer_external_id_unique")]

    def __str__(self):
        return self.name or self.external_id


class CreditAccount(models.Model):
    """The credits of one customer, or of a workspace for callers without a customer.

    `balance` is the sum of the account's ledger entries, kept in the same transaction as each
    entry; a debit is one conditional UPDATE (`balance >= amount`), so it never goes negative.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="credit_accounts")
    customer = models.OneToOneField(Customer, null=True, blank=True, on_delete=models.CASCADE, related_name="account")
    balance = models.DecimalField(max_digits=18, decimal_places=6, default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace"], condition=models.Q(customer__isnull=True), name="one_workspace_credit_account"
            ),
        ]

    def __str__(self):
        return f"credits of {self.customer or self.workspace}"


class CreditEntryKind(models.TextChoices):
    GRANT = "grant"  # credits added
    HOLD = "hold"  # estimated cost reserved at the start of an execution
    RELEASE = "release"  # the hold given back when the execution ends
    CHARGE = "charge"  # the actual cost, when the execution completes
    REFUND = "refund"  # an operator gave (part of) an execution's charge back (at most once per execution)


class CreditEntry(models.Model):
    """One line of the append-only ledger; amounts are signed (debits negative)."""

    id = models.BigAutoField(primary_key=True)
    account = models.ForeignKey(CreditAccount, on_delete=models.CASCADE, related_name="entries")
    kind = models.CharField(max_length=16, choices=CreditEntryKind.choices)
    amount = models.DecimalField(max_digits=18, decimal_places=6)
    balance_after = models.DecimalField(max_digits=18, decimal_places=6)
    execution_id = models.UUIDField(null=True, blank=True, db_index=True)
    note = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # the once-only guard of refunds, in the database: a second one cannot commit, whatever races
            models.UniqueConstraint(
                fields=["execution_id"], condition=models.Q(kind="refund"), name="credit_refund_once_per_execution"
            )
        ]

    def __str__(self):
        return f"{self.kind} {self.amount}"


class RevenueCatIntegration(models.Model):
    """A workspace's RevenueCat webhook: RevenueCat posts to /inbound/revenuecat/<workspace id> with
    this `Authorization` header value (set in RevenueCat's dashboard and here)."""

    workspace = models.OneToOneField(Workspace, on_delete=models.CASCADE, related_name="revenuecat")
    authorization = models.CharField(
        max_length=255, help_text="The Authorization header value RevenueCat is configured to send"
    )
    grant_sandbox = models.BooleanField(
        default=False, help_text="Grant credits for SANDBOX purchases too (otherwise recorded and ignored)"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"RevenueCat of {self.workspace}"


class CreditProduct(models.Model):
    """A store product (RevenueCat's `product_id`) and the credits one purchase or renewal grants."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="credit_products")
    product_id = models.CharField(max_length=255)
    credits = models.DecimalField(max_digits=18, decimal_places=6)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "product_id"], name="credit_product_unique"),
            models.CheckConstraint(condition=models.Q(credits__gt=0), name="credit_product_positive"),
        ]

    def __str__(self):
        return f"{self.product_id}: {self.credits}"


class PurchaseEventOutcome(models.TextChoices):
    GRANTED = "granted"
    IGNORED_TYPE = "ignored_type"  # not a purchase (CANCELLATION, EXPIRATION, TEST, ...)
    UNKNOWN_PRODUCT = "unknown_product"
    UNKNOWN_CUSTOMER = "unknown_customer"
    SANDBOX = "sandbox"  # a SANDBOX purchase, and the integration does not grant those


class PurchaseEvent(models.Model):
    """One RevenueCat webhook event as received: unique per workspace and event id, so a redelivered
    event (RevenueCat retries) grants nothing the second time; what was done with it."""

    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="purchase_events")
    event_id = models.CharField(max_length=255)
    type = models.CharField(max_length=64)
    app_user_id = models.CharField(max_length=255, blank=True, default="")
    product_id = models.CharField(max_length=255, blank=True, default="")
    environment = models.CharField(max_length=32, blank=True, default="")
    outcome = models.CharField(max_length=32, choices=PurchaseEventOutcome.choices)
    credits = models.DecimalField(max_digits=18, decimal_places=6, default=0)
    credit_entry = models.ForeignKey(CreditEntry, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    payload = models.JSONField(default=dict)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at"]
        constraints = [models.UniqueConstraint(fields=["workspace", "event_id"], name="purchase_event_unique")]

    def __str__(self):
        return f"{self.type} {self.event_id} ({self.outcome})"
