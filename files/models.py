"""Files uploaded by callers, kept in the default storage (S3 through django-storages, or disk)."""

import uuid

from django.db import models

from accounts.models import Principal, Workspace


class FilePurpose(models.TextChoices):
    ATTACHMENT = "attachment", "Agent attachment (POST /attachments/upload)"


class StoredFile(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="files")
    principal = models.ForeignKey(Principal, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    purpose = models.CharField(max_length=16, choices=FilePurpose.choices)
    storage_key = models.CharField(max_length=512, unique=True, help_text="The object's key in the storage")
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=100)
    size_bytes = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.storage_key
