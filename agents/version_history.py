"""An agent's or a skill's published versions, each with what changed since the one before: a
unified diff (difflib) of the JSON definitions, keys sorted so that only real changes show."""

import difflib
import json
from dataclasses import dataclass


@dataclass
class VersionChange:
    version: object  # AgentVersion or SkillVersion
    definition: str  # indented JSON
    diff: list[tuple[str, str]]  # (kind: add, del, hunk, file, same; line) against the previous version


def definition_json(definition) -> str:
    return json.dumps(definition, indent=2, sort_keys=True, ensure_ascii=False)


def diff_lines(older, newer, older_label: str, newer_label: str) -> list[tuple[str, str]]:
    lines = difflib.unified_diff(
        definition_json(older).splitlines(),
        definition_json(newer).splitlines(),
        fromfile=older_label,
        tofile=newer_label,
        lineterm="",
    )
    return [(_kind(line), line) for line in lines]


def _kind(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "file"
    if line.startswith("@@"):
        return "hunk"
    return {"+": "add", "-": "del"}.get(line[:1], "same")


def version_history(versions, definition_of) -> list[VersionChange]:
    """`versions` in any order; newest first, each diffed against its predecessor."""
    ordered = sorted(versions, key=lambda version: version.number)
    changes, previous = [], None
    for version in ordered:
        definition = definition_of(version)
        diff = (
            diff_lines(definition_of(previous), definition, f"v{previous.number}", f"v{version.number}")
            if previous is not None
            else []
        )
        changes.append(VersionChange(version, definition_json(definition), diff))
        previous = version
    return changes[::-1]
