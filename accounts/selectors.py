"""Reads of the accounts app (the API-key lookup of authentication is api_keys.py)."""

from accounts.models import ModelAlias, PrincipalKind
from core.errors import ApiError

PRINCIPAL_USER_PREFIX = "principal:"


def own_external_user_id(principal) -> str:
    """An end user's own `external_user_id`: its customer's external id (keys created with
    `--customer`: the app's id of that user, shared by the user's keys), else `principal:<uuid>`."""
    if principal.customer_id is not None:
        return principal.customer.external_id
    return f"{PRINCIPAL_USER_PREFIX}{principal.id}"


def may_act_for_user(principal, external_user_id: str) -> bool:
    """Whether a caller may run as this external user (its memory in the prompt and the memory tool).
    An end user stays in its own lane; a workspace's service principal acts for any of the
    workspace's users, as do operators' runs that have no principal."""
    if principal is None or principal.kind != PrincipalKind.END_USER:
        return True
    return external_user_id == own_external_user_id(principal)


def check_external_user(principal, external_user_id: str | None, field: str = "external_user_id") -> None:
    """403 `forbidden` when an end user names another user's `external_user_id`."""
    if external_user_id is not None and not may_act_for_user(principal, external_user_id):
        raise ApiError(
            403,
            "forbidden",
            "An end-user key acts only for its own user: external_user_id must be "
            f"{own_external_user_id(principal)!r} or left out.",
            field=field,
        )


def model_config_for(workspace, requested) -> dict | None:
    """The model an execution runs on: the requested alias (it must be on the workspace's
    allow-list), else the workspace's default alias, else None (the responder's own model).

    `requested` is an alias name, or {"alias": name} (the skills API documents an object)."""
    if isinstance(requested, dict):
        requested = requested.get("alias")
    if requested is not None and (not isinstance(requested, str) or not requested):
        raise ApiError(400, "invalid_model", 'model must be an alias name or {"alias": "<name>"}.', field="model")
    if requested:
        alias = ModelAlias.objects.filter(workspace=workspace, alias=requested, allowed=True).first()
        if alias is None:
            raise ApiError(
                422,
                "model_not_allowed",
                f"The model alias {requested!r} is not on this space's allow-list.",
                field="model",
                alias=requested,
            )
        return alias.config()
    if workspace.default_model_alias:
        alias = ModelAlias.objects.filter(workspace=workspace, alias=workspace.default_model_alias).first()
        if alias is not None:
            return alias.config()
    return None
