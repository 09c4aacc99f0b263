"""Tenants, workspaces, principals and API keys; a stored key secret is never shown."""

from django import forms
from django.contrib import admin, messages
from django.utils import timezone

from accounts.models import (
    ApiKey,
    CreditAccount,
    CreditEntry,
    CreditProduct,
    Customer,
    ModelAlias,
    Principal,
    PurchaseEvent,
    RevenueCatIntegration,
    Tenant,
    Workspace,
)
from accounts.services import issue_api_key
from core.admin import ReadOnlyTabularInline


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("name", "id", "created_at")
    search_fields = ("name",)


class ModelAliasInline(admin.TabularInline):
    """The workspace's model aliases; `allowed` ones form the allow-list requests may name."""

    model = ModelAlias
    fields = (
        "alias",
        "provider",
        "model",
        "input_usd_per_million_tokens",
        "output_usd_per_million_tokens",
        "allowed",
        "options",
    )
    extra = 0


class RevenueCatIntegrationInline(admin.StackedInline):
    """RevenueCat's webhook for this workspace: POST /inbound/revenuecat/<workspace id> with this
    Authorization header value (the same in RevenueCat's dashboard)."""

    model = RevenueCatIntegration
    fields = ("authorization", "grant_sandbox")
    extra = 0
    max_num = 1


class CreditProductInline(admin.TabularInline):
    """The product -> credits table: what one purchase or renewal of a store product grants."""

    model = CreditProduct
    fields = ("product_id", "credits")
    extra = 0


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ("name", "id", "tenant", "default_model_alias", "created_at")
    list_filter = ("tenant",)
    search_fields = ("name",)
    fields = (
        "tenant",
        "name",
        "default_model_alias",
        "execution_retention_days",
        "max_running_executions",
        "app_version_id",
    )
    readonly_fields = ("app_version_id",)
    inlines = [ModelAliasInline, RevenueCatIntegrationInline, CreditProductInline]


@admin.register(PurchaseEvent)
class PurchaseEventAdmin(admin.ModelAdmin):
    """RevenueCat's events as received, and what each did (granted, or why not)."""

    list_display = ("event_id", "type", "outcome", "app_user_id", "product_id", "credits", "workspace", "received_at")
    list_filter = ("outcome", "type", "workspace")
    search_fields = ("event_id", "app_user_id", "product_id")
    readonly_fields = [field.name for field in PurchaseEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Principal)
class PrincipalAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "workspace", "created_at")
    list_filter = ("kind", "workspace")


class NewApiKeyForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ("workspace", "kind", "name")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "kind", "workspace", "name", "created_at", "last_used_at", "revoked_at")
    list_filter = ("kind", "workspace")
    search_fields = ("prefix", "name")
    exclude = ("secret_hash",)
    actions = ["revoke_keys"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = NewApiKeyForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("workspace", "kind", "name")
        return (
            "prefix",
            "kind",
            "workspace",
            "principal",
            "name",
            "rate_limit_per_minute",
            "created_at",
            "last_used_at",
            "revoked_at",
        )

    def get_readonly_fields(self, request, obj=None):
        return (
            ()
            if obj is None
            else ("prefix", "kind", "workspace", "principal", "created_at", "last_used_at", "revoked_at")
        )

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        issued = issue_api_key(obj.workspace, obj.kind, name=obj.name)
        obj.pk = issued.api_key.pk
        obj.__dict__.update(issued.api_key.__dict__)
        self.message_user(
            request,
            f"New key (copy it now, it is not stored and will not be shown again): {issued.raw_key}",
            messages.WARNING,
        )

    @admin.action(description="Revoke the selected keys")
    def revoke_keys(self, request, queryset):
        revoked = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)


class CreditEntryInline(ReadOnlyTabularInline):
    model = CreditEntry
    fields = ("created_at", "kind", "amount", "balance_after", "execution_id", "note")
    ordering = ("-id",)


@admin.register(CreditAccount)
class CreditAccountAdmin(admin.ModelAdmin):
    """Balances change only through the ledger (do_grant_credits, executions)."""

    list_display = ("__str__", "workspace", "customer", "balance")
    list_filter = ("workspace",)
    readonly_fields = ("workspace", "customer", "balance")
    inlines = [CreditEntryInline]

    def has_add_permission(self, request):
        return False


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ("external_id", "name", "workspace", "created_at")
    list_filter = ("workspace",)
    search_fields = ("external_id", "name")
