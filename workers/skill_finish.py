"""The end of a skill execution: outputs checked against the manifest's outputs schema, the files
under outputs/ kept as artifacts, the whole workspace archived to storage."""

import jsonschema

from core import json as finite_json
from executions.models import Artifact
from files.models import FilePurpose
from files.services import store_generated_file
from workers.outcomes import StepFailed
from workers.skill_workspace import OUTPUTS_DIR, SkillWorkspace


def skill_outputs(manifest: dict, text: str) -> dict:
    """With an outputs schema the final answer must be JSON valid against it; else {"text": ...}."""
    schema = (manifest or {}).get("outputs_schema")
    if not schema:
        return {"text": text}
    try:
        outputs = finite_json.loads(text)  # `NaN` is not JSON
        jsonschema.validate(outputs, schema)
    except ValueError:
        raise StepFailed(
            "outputs_invalid",
            "The skill's final answer is not JSON (or holds NaN or an infinity), as its outputs schema requires.",
        )
    except jsonschema.ValidationError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "(root)"
        raise StepFailed("outputs_invalid", f"The outputs do not match the outputs schema at {where}: {exc.message}")
    return outputs


def collect_artifacts(execution, workspace: SkillWorkspace) -> list[dict]:
    """An Artifact per file under outputs/ (a retried attempt updates the same rows)."""
    artifacts = []
    for relpath in workspace.relpaths(OUTPUTS_DIR):
        artifact, _ = Artifact.objects.update_or_create(
            execution=execution,
            relpath_in_workspace=relpath,
            defaults={
                "document_type": workspace.document_type(relpath),
                "size_bytes": workspace.size(relpath),
                "storage_key": workspace.storage_key(relpath),
            },
        )
        artifacts.append(
            {
                "artifact_id": str(artifact.id),
                "relpath_in_workspace": relpath,
                "document_type": artifact.document_type,
                "size_bytes": artifact.size_bytes,
            }
        )
    return artifacts


def archive_workspace(execution, workspace: SkillWorkspace):
    return store_generated_file(
        execution.workspace,
        execution.principal,
        workspace.archive(),
        f"workspace-{execution.id}.zip",
        purpose=FilePurpose.WORKSPACE_ARCHIVE,
    )
