"""Writes of the agents app: agents, skills and their published versions."""

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from agents.models import Agent, AgentVersion, Skill, SkillVersion


@transaction.atomic
def publish_agent_version(agent: Agent, workflow: dict) -> AgentVersion:
    """A new immutable version that becomes the agent's live one."""
    number = (agent.versions.aggregate(n=Max("number"))["n"] or 0) + 1
    version = AgentVersion.objects.create(agent=agent, number=number, workflow=workflow, published_at=timezone.now())
    Agent.objects.filter(pk=agent.pk).update(live_version=version)
    agent.live_version = version
    return version


@transaction.atomic
def publish_skill_version(skill: Skill, manifest: dict) -> SkillVersion:
    number = (skill.versions.aggregate(n=Max("number"))["n"] or 0) + 1
    version = SkillVersion.objects.create(skill=skill, number=number, manifest=manifest, published_at=timezone.now())
    Skill.objects.filter(pk=skill.pk).update(live_version=version)
    skill.live_version = version
    return version
