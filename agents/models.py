"""Agent and skill definitions and their immutable versions."""

import uuid

from django.core.exceptions import ValidationError
from django.db import models

from accounts.models import Workspace


class Agent(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="agents")
    name = models.CharField(max_length=200)
    requires_user_message = models.BooleanField(default=True)
    credit_rules = models.JSONField(default=dict, blank=True, help_text="See agents/credit_rules.py")
    live_version = models.ForeignKey("AgentVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.name


class ImmutableVersion(models.Model):
    """A published version never changes: a change is a new version (executions record which ran)."""

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ValueError(f"{type(self).__name__} rows are immutable once published; publish a new version.")
        super().save(*args, **kwargs)


class AgentVersion(ImmutableVersion):
    """A workflow graph: {"nodes": [{"id", "type", ...}, ...]} run in order."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    workflow = models.JSONField()
    published_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["agent", "number"], name="agent_version_number_unique")]

    def __str__(self):
        return f"{self.agent.name} v{self.number}"


class Skill(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="skills")
    slug = models.SlugField(max_length=100)
    name = models.CharField(max_length=200)
    live_version = models.ForeignKey("SkillVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "slug"], name="skill_slug_unique_per_workspace")]

    def __str__(self):
        return self.slug


class SkillVersion(ImmutableVersion):
    """A manifest: inputs JSON Schema, instructions, tools, limits, optional outputs schema."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    skill = models.ForeignKey(Skill, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    manifest = models.JSONField()
    published_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["skill", "number"], name="skill_version_number_unique")]

    def __str__(self):
        return f"{self.skill.slug} v{self.number}"


class HttpTool(models.Model):
    """A server tool of a workspace that the runtime calls over HTTP: the JSON arguments are POSTed
    (or sent as the query of a GET) and the JSON answer is the tool's result."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="http_tools")
    name = models.CharField(max_length=64, help_text="^[a-z][a-z0-9_]{0,63}$, as the model sees it")
    description = models.TextField(blank=True, default="")
    parameters = models.JSONField(default=dict, blank=True, help_text="JSON Schema of the arguments")
    url = models.URLField(max_length=2000)
    method = models.CharField(max_length=8, choices=[("POST", "POST"), ("GET", "GET")], default="POST")
    headers = models.JSONField(default=dict, blank=True, help_text="Sent with every call (e.g. an API key)")
    timeout_seconds = models.PositiveIntegerField(default=30)
    allow_private_network = models.BooleanField(
        default=False,
        help_text="Let this tool reach a host on a private, loopback or link-local address (an internal "
        "service). Off: such a URL is refused (blocked_address), as for webhooks.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="http_tool_name_unique")]

    def __str__(self):
        return self.name

    def clean(self):
        """Headers are an object of strings: the runtime sends them and redacts their values."""
        if not isinstance(self.headers, dict) or not all(isinstance(v, str) for v in self.headers.values()):
            raise ValidationError(
                {"headers": 'Headers are a JSON object of strings, e.g. {"Authorization": "Bearer ..."}.'}
            )
