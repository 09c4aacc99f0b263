"""Writes of the agents app: agents, skills and their published versions."""

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from accounts.models import Workspace
from agents.models import Agent, AgentVersion, Skill, SkillVersion
from agents.skill_inputs import validate_manifest
from agents.workflows import validate_workflow


@transaction.atomic
def _publish_version(owner, **content):
    """A new immutable version (number = last + 1) that becomes the owner's live one."""
    type(owner).objects.select_for_update().filter(pk=owner.pk).first()  # concurrent publishes queue here
    number = (owner.versions.aggregate(n=Max("number"))["n"] or 0) + 1
    version = owner.versions.create(number=number, published_at=timezone.now(), **content)
    type(owner).objects.filter(pk=owner.pk).update(live_version=version)
    # the workspace's current AppVersion (X-App-Version) changes with every publish
    Workspace.objects.filter(pk=owner.workspace_id).update(app_version_id=str(version.id))
    owner.live_version = version
    return version


def publish_agent_version(agent: Agent, workflow: dict) -> AgentVersion:
    validate_workflow(workflow)
    return _publish_version(agent, workflow=workflow)


def publish_skill_version(skill: Skill, manifest: dict) -> SkillVersion:
    validate_manifest(manifest)
    return _publish_version(skill, manifest=manifest)
