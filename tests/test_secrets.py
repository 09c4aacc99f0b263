"""Secrets: a per-checkout SECRET_KEY (refused outside local development when absent or public),
Secure cookies, the allow-list of `api_key_env`, and download tokens bound to what they were issued for."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import signing
from django.core.exceptions import ValidationError

from accounts.model_keys import check_api_key_env
from accounts.models import ModelAlias
from agents.models import Agent, Skill
from agents.services import publish_agent_version, publish_skill_version
from agents.skill_inputs import InvalidManifest
from agents.workflows import InvalidWorkflow
from files.models import FilePurpose
from files.selectors import DOWNLOAD_SALT, download_url
from files.services import store_generated_file
from workers.providers import ProviderError, get_provider

REPO = Path(__file__).resolve().parent.parent
SETTINGS_PROBE = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'key': s.SECRET_KEY, 'session': s.SESSION_COOKIE_SECURE, 'csrf': s.CSRF_COOKIE_SECURE, "
    "'proxy': getattr(s, 'SECURE_PROXY_SSL_HEADER', None)}))"
)


def _settings_in_a_process(data_dir, **env):
    """Settings as a new process of the platform sees them (the secret key is read at import)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "PRODUCTION", "SECURE_COOKIES")}
    environ.update(LOCAL_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="config.settings", **env)
    return subprocess.run(
        [sys.executable, "-c", SETTINGS_PROBE], cwd=REPO, env=environ, capture_output=True, text=True, timeout=60
    )


def _probe(data_dir, **env) -> dict:
    import json

    done = _settings_in_a_process(data_dir, **env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- SECRET_KEY --------------------------------------------------------------------------------


def test_local_development_generates_a_key_per_checkout_and_reuses_it(tmp_path):
    first = _probe(tmp_path / "a")
    assert first["key"] == _probe(tmp_path / "a")["key"]  # reused: links and sessions survive a restart
    assert len(first["key"]) >= 50
    assert first["key"] not in {"insecure-local-development-key-change-me", "change-me-in-production"}
    assert (tmp_path / "a" / "secret_key").stat().st_mode & 0o077 == 0  # readable by its owner only
    assert _probe(tmp_path / "b")["key"] != first["key"]  # another checkout, another key
    assert first["session"] is False and first["csrf"] is False  # local development is plain HTTP


@pytest.mark.parametrize(
    "secret_key",
    [None, "", "insecure-local-development-key-change-me", "change-me-in-production", "k" * 31],
)
def test_production_refuses_an_absent_public_or_short_key(tmp_path, secret_key):
    env = {"PRODUCTION": "1"} if secret_key is None else {"PRODUCTION": "1", "SECRET_KEY": secret_key}
    done = _settings_in_a_process(tmp_path, **env)
    assert done.returncode != 0
    assert "SECRET_KEY must be set" in done.stderr
    assert not (tmp_path / "secret_key").exists()  # nothing generated in production


def test_production_runs_on_its_own_key_with_secure_cookies(tmp_path):
    settings = _probe(tmp_path, PRODUCTION="1", SECRET_KEY="k" * 32)
    assert settings["key"] == "k" * 32
    assert settings["session"] is True and settings["csrf"] is True
    assert settings["proxy"] is None  # X-Forwarded-Proto is trusted only when asked
    behind_proxy = _probe(tmp_path, PRODUCTION="1", SECRET_KEY="k" * 32, TRUST_X_FORWARDED_PROTO="1")
    assert behind_proxy["proxy"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert _probe(tmp_path, SECURE_COOKIES="1")["session"] is True


@pytest.mark.django_db
def test_the_admin_sets_secure_cookies_over_https(client, settings):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    response = client.get("/admin/login/", secure=True)
    assert response.status_code == 200
    assert response.cookies["csrftoken"]["secure"] is True


# --- api_key_env -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["REDIS_URL", "DATABASE_URL", "SECRET_KEY", "LANGFUSE_SECRET_KEY", "HOME", "API_KEY"])
def test_api_key_env_refuses_what_the_operator_did_not_allow(name):
    with pytest.raises(ValueError, match="not an allowed variable"):
        check_api_key_env({"api_key_env": name})


def test_api_key_env_accepts_the_default_pattern_and_the_operator_setting(settings):
    check_api_key_env({"api_key_env": "OLLAMA_API_KEY"})
    check_api_key_env({})  # the provider's default variable
    settings.MODEL_API_KEY_ENV_ALLOWED = ["VLLM_KEY", "*"]
    check_api_key_env({"api_key_env": "VLLM_KEY"})
    with pytest.raises(ValueError):  # the platform's own secrets, whatever the patterns say
        check_api_key_env({"api_key_env": "REDIS_URL"})


@pytest.mark.django_db
def test_a_disallowed_api_key_env_is_refused_at_save(tenant):
    options = {"base_url": "http://attacker.example/v1", "api_key_env": "REDIS_URL"}
    with pytest.raises(ValidationError) as caught:
        ModelAlias(workspace=tenant.workspace, alias="evil", provider="openai", model="m", options=options).full_clean()
    assert "options" in caught.value.message_dict
    agent = Agent.objects.create(workspace=tenant.workspace, name="a")
    with pytest.raises(InvalidWorkflow, match="api_key_env"):
        publish_agent_version(agent, {"nodes": [{"id": "n", "type": "ai", "model": {"provider": "openai", **options}}]})
    skill = Skill.objects.create(workspace=tenant.workspace, slug="s", name="s")
    with pytest.raises(InvalidManifest, match="api_key_env"):
        publish_skill_version(skill, {"instructions": "x", "model": {"provider": "openai", **options}})
    assert not ModelAlias.objects.exists() and agent.versions.count() == 0 and skill.versions.count() == 0


def test_a_disallowed_api_key_env_is_refused_at_run(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://secret-host:6379/0")
    model = get_provider(
        {"provider": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "REDIS_URL"}
    )
    with pytest.raises(ProviderError) as caught:
        next(model.stream([{"role": "user", "content": "hi"}]))
    assert caught.value.failure_reason == "provider_auth_error"
    assert "secret-host" not in str(caught.value)


# --- /files/download/<token> -------------------------------------------------------------------


@pytest.mark.django_db
def test_download_links_serve_only_generated_media(client, tenant):
    media = store_generated_file(tenant.workspace, None, b"png bytes", "m.png")
    assert b"".join(client.get(download_url(media)).streaming_content) == b"png bytes"
    archive = store_generated_file(tenant.workspace, None, b"zip", "w.zip", purpose=FilePurpose.WORKSPACE_ARCHIVE)
    with pytest.raises(ValueError):
        download_url(archive)
    # a token for another file, or in the old form (a bare id), or of another purpose: 404
    for forged in (
        signing.dumps({"f": str(archive.id), "p": "generated"}, salt=f"{DOWNLOAD_SALT}.generated"),
        signing.dumps(str(media.id), salt=DOWNLOAD_SALT),
        signing.dumps({"f": str(archive.id), "p": "archive"}, salt=f"{DOWNLOAD_SALT}.archive"),
        signing.dumps({"f": str(media.id), "p": "generated"}, salt="executions.stream-token"),
    ):
        response = client.get(f"/files/download/{forged}")
        assert response.status_code == 404, forged
        assert response.json()["error"]["code"] == "not_found"
