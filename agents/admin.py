from django.contrib import admin

from agents.models import Agent, AgentVersion, Skill, SkillVersion


class AgentVersionInline(admin.TabularInline):
    model = AgentVersion
    fields = ("number", "published_at", "workflow")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ("name", "id", "workspace", "live_version", "created_at")
    list_filter = ("workspace",)
    inlines = [AgentVersionInline]


class SkillVersionInline(admin.TabularInline):
    model = SkillVersion
    fields = ("number", "published_at", "manifest")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Skill)
class SkillAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "workspace", "live_version", "created_at")
    list_filter = ("workspace",)
    inlines = [SkillVersionInline]
