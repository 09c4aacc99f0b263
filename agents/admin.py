import json

from django import forms
from django.contrib import admin
from django.utils.html import format_html

from agents.models import Agent, AgentVersion, HttpTool, Skill, SkillVersion
from agents.services import publish_agent_version, publish_skill_version
from agents.skill_inputs import InvalidManifest, validate_manifest
from agents.workflows import InvalidWorkflow, validate_workflow
from core.admin import ReadOnlyTabularInline


class AgentVersionInline(ReadOnlyTabularInline):
    model = AgentVersion
    fields = ("number", "published_at", "workflow")


class AgentForm(forms.ModelForm):
    publish_workflow = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 12, "cols": 100}),
        help_text='JSON {"nodes": [...]} (node types: workers/nodes.py). Saving publishes it as a new version.',
    )

    class Meta:
        model = Agent
        fields = ("workspace", "name", "requires_user_message", "credit_rules", "publish_workflow")

    def clean_publish_workflow(self):
        raw = self.cleaned_data["publish_workflow"].strip()
        if not raw:
            return None
        try:
            workflow = json.loads(raw)
            validate_workflow(workflow)
        except (ValueError, InvalidWorkflow) as exc:
            raise forms.ValidationError(str(exc))
        return workflow


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    form = AgentForm
    list_display = ("name", "id", "workspace", "live_version", "created_at")
    list_filter = ("workspace",)
    readonly_fields = ("live_version",)
    inlines = [AgentVersionInline]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if form.cleaned_data.get("publish_workflow"):
            publish_agent_version(obj, form.cleaned_data["publish_workflow"])


@admin.register(HttpTool)
class HttpToolAdmin(admin.ModelAdmin):
    """Server tools called over HTTP; an agent's nodes name them in `tools` or `tool`."""

    list_display = ("name", "workspace", "method", "url", "allow_private_network")
    list_filter = ("workspace", "allow_private_network")
    search_fields = ("name", "url")


class SkillVersionInline(admin.StackedInline):
    model = SkillVersion
    fields = ("number", "published_at", "manifest_json")
    readonly_fields = fields
    extra = 0
    can_delete = False

    @admin.display(description="manifest")
    def manifest_json(self, version):
        return format_html("<pre>{}</pre>", json.dumps(version.manifest, indent=2))


class SkillForm(forms.ModelForm):
    publish_manifest = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 12, "cols": 100}),
        help_text="JSON manifest (inputs_schema, instructions, tools, limits, model, outputs_schema). Saving publishes "
        "it as a new immutable version.",
    )

    class Meta:
        model = Skill
        fields = ("workspace", "slug", "name", "publish_manifest")

    def clean_publish_manifest(self):
        raw = self.cleaned_data["publish_manifest"].strip()
        if not raw:
            return None
        try:
            manifest = json.loads(raw)
            validate_manifest(manifest)
        except (ValueError, InvalidManifest) as exc:
            raise forms.ValidationError(str(exc))
        return manifest


@admin.register(Skill)
class SkillAdmin(admin.ModelAdmin):
    form = SkillForm
    list_display = ("slug", "name", "workspace", "live_version", "created_at")
    list_filter = ("workspace",)
    readonly_fields = ("live_version",)
    inlines = [SkillVersionInline]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if form.cleaned_data.get("publish_manifest"):
            publish_skill_version(obj, form.cleaned_data["publish_manifest"])
