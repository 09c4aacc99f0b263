from django.contrib import admin

from conversations.models import Conversation, MemoryFact, Message
from core.admin import ReadOnlyTabularInline


class MessageInline(ReadOnlyTabularInline):
    model = Message
    fields = ("id", "role", "content", "tool_name", "execution_id", "created_at")


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("id", "agent", "principal", "state", "created_at", "archived_at")
    list_filter = ("state", "workspace")
    search_fields = ("id",)
    readonly_fields = ("workspace", "principal", "agent", "state", "created_at", "archived_at")
    inlines = [MessageInline]


@admin.register(MemoryFact)
class MemoryFactAdmin(admin.ModelAdmin):
    """What agents remember about users; deleting here is a user's right to be forgotten too."""

    list_display = ("external_user_id", "content", "workspace", "created_at")
    list_filter = ("workspace",)
    search_fields = ("external_user_id", "content")
