"""Which environment variables a model's `api_key_env` may name.

A model's options (an alias's, a workflow node's, a skill manifest's) name the variable of the
workers that holds its key. Whoever can edit those options must not make the worker send another
variable's value to a server of their choosing (a `base_url`): only names the operator allowed
(MODEL_API_KEY_ENV_ALLOWED, fnmatch patterns, default `*_API_KEY`) are accepted, and the platform's
own secrets never are. Checked when the options are saved and again when a model is called.
"""

from fnmatch import fnmatchcase

from django.conf import settings

# The platform's own secrets and connection strings: refused even if a pattern matches them.
NEVER_ALLOWED = frozenset(
    {
        "SECRET_KEY",
        "DATABASE_URL",
        "REDIS_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "LANGFUSE_PUBLIC_KEY",
        "LANGFUSE_SECRET_KEY",
    }
)


class DisallowedKeyEnv(ValueError):
    pass


def api_key_env_allowed(name: str) -> bool:
    return name not in NEVER_ALLOWED and any(fnmatchcase(name, p) for p in settings.MODEL_API_KEY_ENV_ALLOWED)


def check_api_key_env(options) -> None:
    """Raise DisallowedKeyEnv when model options name a variable that may not hold a model key."""
    name = options.get("api_key_env") if isinstance(options, dict) else None
    if name is None:
        return
    if not isinstance(name, str) or not api_key_env_allowed(name):
        raise DisallowedKeyEnv(
            f"api_key_env {name!r} is not an allowed variable: it must match MODEL_API_KEY_ENV_ALLOWED "
            f"({', '.join(settings.MODEL_API_KEY_ENV_ALLOWED) or 'nothing'}) and not be one of the platform's secrets."
        )
