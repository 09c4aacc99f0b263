"""factory_boy factories for the rows tests set up: tenants, keys, agents, skills, executions.

Keys go through `accounts.services.issue_api_key` (the only place that knows the key format), so
`ApiKeyFactory()` returns the `IssuedKey` with the plain key; `TenantFactory()` returns the
`NewTenant` of `create_tenant` (tenant, workspace and one key of each kind). Agents and skills are
published through their services, so a live version is always a validated one.
"""

from datetime import timedelta

import factory
from django.utils import timezone

from accounts.models import ApiKeyKind, Customer, Principal, PrincipalKind, Tenant, Workspace
from accounts.services import NewTenant, issue_api_key
from agents.models import Agent, Skill
from agents.services import publish_agent_version, publish_skill_version
from executions.models import Execution, ExecutionSource, ExecutionState
from tests.helpers import builtin_workflow


class TenantRowFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant

    name = factory.Sequence(lambda n: f"Tenant {n}")


class WorkspaceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Workspace

    tenant = factory.SubFactory(TenantRowFactory)
    name = factory.LazyAttribute(lambda o: f"{o.tenant.name} workspace")


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    workspace = factory.SubFactory(WorkspaceFactory)
    external_id = factory.Sequence(lambda n: f"customer-{n}")


class PrincipalFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Principal

    workspace = factory.SubFactory(WorkspaceFactory)
    tenant = factory.SelfAttribute("workspace.tenant")
    kind = PrincipalKind.END_USER
    name = factory.Sequence(lambda n: f"principal {n}")
    customer = None


class ApiKeyFactory(factory.Factory):
    """An issued key (`.api_key`, `.raw_key`); `kind` workspace or end_user, optionally of a principal or customer."""

    class Meta:
        model = issue_api_key

    workspace = factory.SubFactory(WorkspaceFactory)
    kind = ApiKeyKind.END_USER
    principal = None
    customer = None
    name = factory.LazyAttribute(lambda o: "service" if o.kind == ApiKeyKind.WORKSPACE else "end user")

    class Params:
        workspace_kind = factory.Trait(kind=ApiKeyKind.WORKSPACE)


class TenantFactory(factory.Factory):
    """What `create_tenant` makes: a tenant, its workspace, a workspace key and an end-user key."""

    class Meta:
        model = NewTenant

    class Params:
        name = factory.Sequence(lambda n: f"Tenant {n}")

    tenant = factory.LazyAttribute(lambda o: TenantRowFactory(name=o.name))
    workspace = factory.LazyAttribute(lambda o: WorkspaceFactory(tenant=o.tenant))
    workspace_key = factory.LazyAttribute(lambda o: ApiKeyFactory(workspace=o.workspace, workspace_kind=True))
    end_user_key = factory.LazyAttribute(lambda o: ApiKeyFactory(workspace=o.workspace))


class AgentFactory(factory.django.DjangoModelFactory):
    """An agent with a published live version running `workflow` (default: one built-in `ai` node)."""

    class Meta:
        model = Agent
        skip_postgeneration_save = True

    workspace = factory.SubFactory(WorkspaceFactory)
    name = "Test agent"

    @factory.post_generation
    def workflow(agent, create, workflow, **model_options):
        """`workflow={...}`, or `workflow__<model option>=...` for the built-in node (reply, chunk_delay_ms...)."""
        publish_agent_version(agent, workflow or builtin_workflow(**model_options))


class SkillFactory(factory.django.DjangoModelFactory):
    """A skill with a published live version of `manifest`."""

    class Meta:
        model = Skill
        skip_postgeneration_save = True

    workspace = factory.SubFactory(WorkspaceFactory)
    slug = factory.Sequence(lambda n: f"skill-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.title())

    @factory.post_generation
    def manifest(skill, create, manifest, **kwargs):
        publish_skill_version(skill, manifest if manifest is not None else {"inputs_schema": {"type": "object"}})


class ExecutionFactory(factory.django.DjangoModelFactory):
    """An execution row in any state, written directly (no start event, no dispatch: nothing runs it).

    `agent=` / `skill=` set the live version that it runs, `parent=` a sub-execution or batch item
    (same workspace), `principal` defaults to None; the `finished` trait fills the timestamps of a
    completed run, `dispatched` the time its task message went out.
    """

    class Meta:
        model = Execution

    class Params:
        agent = None
        skill = None
        finished = factory.Trait(
            state=ExecutionState.COMPLETED,
            started_at=factory.LazyFunction(lambda: timezone.now() - timedelta(seconds=3)),
            finished_at=factory.LazyFunction(timezone.now),
        )
        dispatched = factory.Trait(dispatched_at=factory.LazyFunction(timezone.now))

    workspace = factory.LazyAttribute(
        lambda o: (
            o.parent.workspace
            if o.parent
            else (o.agent or o.skill).workspace
            if (o.agent or o.skill)
            else WorkspaceFactory()
        )
    )
    tenant = factory.SelfAttribute("workspace.tenant")
    principal = None
    source = factory.LazyAttribute(lambda o: ExecutionSource.SUB if o.parent else ExecutionSource.API)
    parent = None
    agent_version = factory.LazyAttribute(lambda o: o.agent.live_version if o.agent else None)
    skill_version = factory.LazyAttribute(lambda o: o.skill.live_version if o.skill else None)
    state = ExecutionState.QUEUED
    inputs = factory.LazyFunction(dict)
