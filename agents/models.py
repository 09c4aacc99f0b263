"""Agent and skill definitions and their immutable versions."""

import uuid

from django.db import models

from accounts.models import Workspace


class Agent(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="agents")
    name = models.CharField(max_length=200)
    requires_user_message = models.BooleanField(default=True)
    credit_rules = models.JSONField(default=dict, blank=True, help_text="See agents/credit_rules.py")
    live_version = models.ForeignKey(
        "AgentVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.name


class AgentVersion(models.Model):
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
    live_version = models.ForeignKey(
        "SkillVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "slug"], name="skill_slug_unique_per_workspace")]

    def __str__(self):
        return self.slug


class SkillVersion(models.Model):
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
