"""The workspace of one skill execution: `workspaces/<execution_id>/` in the default storage.

On the local disk it is a directory; on S3 a key prefix. Either way it outlives the worker, so an
attempt retried on another machine finds what the lost attempt wrote. The skill sees relative
paths (`inputs/materials/notes.md`, `outputs/report.md`); nothing outside its workspace: every
path a file tool gets goes through `inside`, which refuses the others with a tool error.
"""

import io
import os
import posixpath
import zipfile

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from files.content_types import SNIFF_BYTES, stored_content_type
from files.selectors import personal_file
from workers.server_tool import ToolError, local_tool

MATERIALS_DIR = "inputs/materials"
OUTPUTS_DIR = "outputs"


def inside(relpath: str) -> str:
    """`relpath` normalised inside the workspace ("" for its root); a ToolError for any path that
    is not: absolute, or leaving it through `..` (`outputs/../../x`, `..\\..`), or holding a NUL. The one check of every file tool (list, read, write): the storage below joins keys as
    strings, so `workspaces/<id>/../..` would be another execution's files, or all of them."""
    raw = relpath or ""
    if "\x00" in raw:
        raise ToolError("A path cannot hold a NUL character.")
    path = raw.replace("\\", "/")  # a separator to the skill, whatever the storage makes of it
    if path.startswith("/"):
        raise ToolError(f"{raw!r} is an absolute path; paths are relative to the workspace.")
    path = posixpath.normpath(path) if path else "."
    if path == ".." or path.startswith("../"):
        raise ToolError(f"{raw!r} is outside the workspace.")
    return "" if path == "." else path


class SkillWorkspace:
    def __init__(self, execution_id):
        self.root = f"workspaces/{execution_id}"

    def _key(self, relpath: str) -> str:
        path = inside(relpath)
        if not path:
            raise ToolError("A file path inside the workspace is required.")
        return self._resolved(f"{self.root}/{path}", relpath)

    def _resolved(self, key: str, relpath: str) -> str:
        """On a local disk, the key's real path (symbolic links followed) must stay in the workspace
        too: a link put there by anything else must not lead a tool out. (S3 has no links.)"""
        try:
            real, root = (os.path.realpath(default_storage.path(k)) for k in (key, self.root))
        except NotImplementedError:  # a storage without local paths
            return key
        if real != root and not real.startswith(root + os.sep):
            raise ToolError(f"{relpath!r} is outside the workspace.")
        return key

    def relpaths(self, directory: str = "") -> list[str]:
        """Every file below `directory` (inside the workspace: `inside`), as paths relative to the
        workspace, sorted."""
        found, pending = [], [inside(directory)]
        while pending:
            current = pending.pop()
            base = self._resolved(f"{self.root}/{current}", current) if current else self.root
            try:
                dirs, files = default_storage.listdir(base)
            except FileNotFoundError:
                continue
            found += [posixpath.join(current, name) for name in files]
            pending += [posixpath.join(current, name) for name in dirs]
        return sorted(found)

    def size(self, relpath: str) -> int:
        return default_storage.size(self._key(relpath))

    def read_bytes(self, relpath: str) -> bytes:
        key = self._key(relpath)
        if not default_storage.exists(key):
            raise ToolError(f"No file {relpath!r} in the workspace.")
        with default_storage.open(key, "rb") as handle:
            return handle.read()

    def document_type(self, relpath: str) -> str:
        """An artifact's type, from its first bytes as any stored file's (files/content_types.py):
        `outputs/summary.html` is text/plain, never text/html."""
        with default_storage.open(self._key(relpath), "rb") as handle:
            return stored_content_type(handle.read(SNIFF_BYTES), relpath)

    def write_bytes(self, relpath: str, content: bytes) -> str:
        if len(content) > settings.SKILL_WORKSPACE_MAX_FILE_BYTES:
            raise ToolError(f"A workspace file is limited to {settings.SKILL_WORKSPACE_MAX_FILE_BYTES} bytes.")
        key = self._key(relpath)
        try:
            if default_storage.exists(key):
                default_storage.delete(key)  # a rewrite replaces the file (storages would pick another name)
            default_storage.save(key, ContentFile(content))
        except OSError as exc:  # a name too long for the disk, a directory where a file goes, ...
            raise ToolError(f"{relpath!r} cannot be written: {exc.strerror or type(exc).__name__}.") from None
        return key

    def storage_key(self, relpath: str) -> str:
        return self._key(relpath)

    def stage_materials(self, principal, filenames: list[str]) -> tuple[list[str], list[str]]:
        """Copy the caller's personal files into inputs/materials/; returns (staged, missing)."""
        staged, missing = [], []
        for filename in filenames:
            stored = personal_file(principal, filename) if principal else None
            if stored is None or not default_storage.exists(stored.storage_key):
                missing.append(filename)
                continue
            with default_storage.open(stored.storage_key, "rb") as handle:
                self.write_bytes(posixpath.join(MATERIALS_DIR, stored.filename), handle.read())
            staged.append(stored.filename)
        return staged, missing

    def archive(self) -> bytes:
        """A zip of the whole workspace."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for relpath in self.relpaths():
                archive.writestr(relpath, self.read_bytes(relpath))
        return buffer.getvalue()


def workspace_tools(workspace: SkillWorkspace) -> dict:
    """list_files, read_file, read_materials and write_file, bound to one execution's workspace."""

    def list_files(arguments):
        directory = arguments.get("directory", "")
        return {"files": [{"path": path, "size_bytes": workspace.size(path)} for path in workspace.relpaths(directory)]}

    def read_file(arguments):
        content = workspace.read_bytes(arguments["path"])
        try:
            return {"path": arguments["path"], "content": content.decode("utf-8")}
        except UnicodeDecodeError:
            raise ToolError(f"{arguments['path']!r} is not a UTF-8 text file.") from None

    def read_materials(arguments):
        parts, names = [], []
        for relpath in workspace.relpaths(MATERIALS_DIR):
            try:
                text = workspace.read_bytes(relpath).decode("utf-8")
            except UnicodeDecodeError:
                continue
            names.append(relpath)
            parts.append(f"## {posixpath.basename(relpath)}\n\n{text.strip()}")
        return {"files": names, "text": "\n\n".join(parts) if parts else "No materials were staged."}

    def write_file(arguments):
        workspace.write_bytes(arguments["path"], arguments["content"].encode("utf-8"))
        return {"path": arguments["path"], "size_bytes": len(arguments["content"].encode("utf-8"))}

    path = {"type": "string", "minLength": 1, "maxLength": 1024}
    return {
        "list_files": local_tool(
            "list_files",
            "List the files of the workspace (optionally below a directory).",
            {"type": "object", "properties": {"directory": {"type": "string", "maxLength": 1024}}},
            list_files,
        ),
        "read_file": local_tool(
            "read_file",
            "Read a UTF-8 text file of the workspace.",
            {"type": "object", "properties": {"path": path}, "required": ["path"]},
            read_file,
        ),
        "read_materials": local_tool(
            "read_materials",
            "Read every text file staged under inputs/materials/ at once.",
            {"type": "object", "properties": {}},
            read_materials,
        ),
        "write_file": local_tool(
            "write_file",
            "Write a UTF-8 text file into the workspace; files under outputs/ become the execution's artifacts.",
            {
                "type": "object",
                "properties": {"path": path, "content": {"type": "string"}},
                "required": ["path", "content"],
            },
            write_file,
        ),
    }
