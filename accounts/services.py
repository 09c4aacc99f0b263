"""Writes of the accounts app: tenants, workspaces, principals, API keys."""

import hashlib
import secrets
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from accounts.models import ApiKey, ApiKeyKind, Customer, Principal, PrincipalKind, Tenant, Workspace
from core.ids import parse_prefixed_id

KEY_PREFIXES = {ApiKeyKind.WORKSPACE: "wak_", ApiKeyKind.END_USER: "eak_"}
PUBLIC_ID_LENGTH = 16  # "wak_" + 12 hex characters


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


@dataclass
class IssuedKey:
    api_key: ApiKey
    raw_key: str  # shown once, never stored


def issue_api_key(
    workspace: Workspace, kind: str, principal: Principal | None = None, name: str = "", customer=None
) -> IssuedKey:
    """Create a key (and its principal, unless given); the raw key is returned once, only its digest stored."""
    kind = ApiKeyKind(kind)
    if principal is None:
        principal = Principal.objects.create(
            tenant_id=workspace.tenant_id,
            workspace=workspace,
            kind=PrincipalKind.SERVICE if kind == ApiKeyKind.WORKSPACE else PrincipalKind.END_USER,
            name=name or f"{kind.label} principal",
            customer=customer,
        )
    prefix = KEY_PREFIXES[kind] + secrets.token_hex(6)
    raw_key = prefix + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        workspace=workspace,
        principal=principal,
        kind=kind,
        prefix=prefix,
        secret_hash=hash_key(raw_key),
        name=name,
    )
    return IssuedKey(api_key=api_key, raw_key=raw_key)


def revoke_api_key(api_key: ApiKey) -> None:
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


@dataclass
class NewTenant:
    tenant: Tenant
    workspace: Workspace
    workspace_key: IssuedKey
    end_user_key: IssuedKey

    def as_json(self) -> dict:
        return {
            "tenant_id": str(self.tenant.id),
            "workspace_id": str(self.workspace.id),
            "workspace_api_key": self.workspace_key.raw_key,
            "end_user_api_key": self.end_user_key.raw_key,
        }


@transaction.atomic
def create_tenant(name: str, workspace_name: str | None = None) -> NewTenant:
    tenant = Tenant.objects.create(name=name)
    workspace = Workspace.objects.create(tenant=tenant, name=workspace_name or f"{name} workspace")
    return NewTenant(
        tenant=tenant,
        workspace=workspace,
        workspace_key=issue_api_key(workspace, ApiKeyKind.WORKSPACE, name="service"),
        end_user_key=issue_api_key(workspace, ApiKeyKind.END_USER, name="end user"),
    )


def workspace_and_customer(workspace_id: str, customer_external_id: str | None):
    """For management commands: the workspace (`<uuid>` or `workspace:<uuid>`) and, when an
    external id is given, its customer (created if new). LookupError for an unknown workspace."""
    parsed = parse_prefixed_id(workspace_id, "workspace")
    workspace = Workspace.objects.filter(id=parsed).first() if parsed else None
    if workspace is None:
        raise LookupError(f"No workspace {workspace_id!r}.")
    customer = None
    if customer_external_id:
        customer, _ = Customer.objects.get_or_create(workspace=workspace, external_id=customer_external_id)
    return workspace, customer
