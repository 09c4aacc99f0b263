"""`skillrun`: the command line of the client (see README.md, "CLI"). stdout carries the answer (the
streamed text, or with --json one JSON object per line); stderr carries what is around it (tool
calls, usage, errors, the spinner). The exit code says how the execution ended (EXIT_*)."""

import argparse
import json
import mimetypes
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from rich.console import Console

from skillrun_client import models as m
from skillrun_client._sync import SkillrunClient
from skillrun_client.errors import SkillrunError

EXIT_COMPLETED, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED, EXIT_SUSPENDED, EXIT_API_ERROR = 0, 1, 2, 3, 4, 5
# an execution's state -> the exit code of a command that followed it there
EXIT_BY_STATE = {
    "completed": EXIT_COMPLETED,
    "failed": EXIT_FAILED,
    "cancelled": EXIT_CANCELLED,
    "awaiting_client_tool": EXIT_SUSPENDED,
    "awaiting_approval": EXIT_SUSPENDED,
    "waiting_for_external_event": EXIT_SUSPENDED,
    "waiting_for_sub_execution": EXIT_SUSPENDED,
}


class Output:
    """Where a command writes: JSON lines, or text with a spinner on stderr while it waits (only
    when stderr is a terminal and not in --json mode)."""

    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        self.spinning = not as_json and sys.stderr.isatty()
        self._status = None

    def json(self, value) -> None:
        if hasattr(value, "model_dump"):
            value = value.model_dump(mode="json", by_alias=True)
        sys.stdout.write(json.dumps(value) + "\n")
        sys.stdout.flush()

    def note(self, text: str) -> None:
        """A line on stderr (above the spinner, if one is shown)."""
        self.err.print(text, markup=False, style="dim")

    def text(self, text: str) -> None:
        """Streamed answer text on stdout; the spinner stops for good (the text is the progress)."""
        self.stop()
        self.spinning = False
        sys.stdout.write(text)
        sys.stdout.flush()

    def waiting(self, message: str) -> AbstractContextManager:
        if not self.spinning:
            return nullcontext()
        self._status = self.err.status(message)
        return self._status

    def update(self, message: str) -> None:
        if self._status is not None:
            self._status.update(message)

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def follow(out: Output, events, execution_state) -> int:
    """Render a stream of events to its end; the exit code from the end it reached (`final`,
    `error`, `suspended`) or, when the stream ends without one (a finished execution followed past
    its end), from the execution's state (`execution_state(execution_id)`)."""
    last, mid_line = None, False
    with out.waiting("waiting for the execution…"):
        for event in events:
            last = event
            if out.as_json:
                out.json(event)
                continue
            out.update(f"{event.type} (event {event.seq})…")
            if event.type == "text" and event.text:
                if event.model_extra.get("reset") and mid_line:
                    out.text("\n")
                out.text(event.text)
                mid_line = not event.text.endswith("\n")
                continue
            if mid_line and event.type in NOTED:
                out.text("\n")
                mid_line = False
            if note := describe(event):
                out.note(note)
        out.stop()
    if mid_line:
        out.text("\n")
    if last is None or last.type not in ("final", "error", "suspended"):
        return EXIT_BY_STATE.get(execution_state(last.execution_id if last else None), EXIT_FAILED)
    return EXIT_BY_STATE.get(last.status or "", EXIT_FAILED)


NOTED = frozenset({"tool_call", "tool_result", "tool_call_awaiting_client", "suspended", "final", "error", "artifact"})


def describe(event: m.Event) -> str | None:
    """The stderr line of an event a user wants to see (None for the rest)."""
    extra = event.model_extra
    if event.type in ("tool_call", "tool_call_awaiting_client"):
        where = " (client tool: answer with POST /executions/{id}/tool-result)" if "awaiting" in event.type else ""
        return f"→ {extra.get('name')}({json.dumps(extra.get('arguments') or {})}){where}"
    if event.type == "tool_result":
        return f"← {extra.get('name') or extra.get('tool_call_id')}: {extra.get('outcome')}"
    if event.type == "artifact":
        return f"artifact {extra.get('relpath_in_workspace')} ({extra.get('size_bytes')} bytes)"
    if event.type == "suspended":
        waits = extra.get("prompt") or extra.get("event") or extra.get("pending_tool_call_ids")
        return f"suspended: {event.status} {waits or ''}".rstrip()
    if event.type == "error":
        return f"{event.status}: {extra.get('code')}: {extra.get('message')}"
    if event.type == "final":
        output = extra.get("output") or {}
        usage = output.get("usage") or {}
        parts = [f"{event.status}"]
        if usage:
            parts.append(f"{usage.get('input_tokens')} in / {usage.get('output_tokens')} out tokens")
        if extra.get("cost_microdollars") is not None:
            parts.append(f"${extra['cost_microdollars'] / 1_000_000:.6f}")
        if extra.get("credits_used") is not None:
            parts.append(f"{extra['credits_used']} credits")
        if extra.get("latency_ms") is not None:
            parts.append(f"{extra['latency_ms']} ms")
        return " · ".join(parts)
    return None


# --- commands -------------------------------------------------------------------------------------


def cmd_run(client: SkillrunClient, out: Output, args) -> int:
    events = client.execute_stream(args.agent_id, message=args.message)
    return follow(out, events, lambda execution_id: client.get_execution(execution_id).state)


def cmd_tail(client: SkillrunClient, out: Output, args) -> int:
    events = client.events(args.execution_id, after=args.after)
    return follow(out, events, lambda _: client.get_execution(args.execution_id).state)


def cmd_executions_list(client: SkillrunClient, out: Output, args) -> int:
    with out.waiting("listing executions…"):
        page = client.query_executions(page_number=args.page, page_size=args.page_size)
    if out.as_json:
        for item in page.items:
            out.json(item)
        return EXIT_COMPLETED
    for item in page.items:
        print(f"{item.id}  {item.status:<28} {item.detail.type:<10} {item.created_at}")
    out.note(f"page {page.page_number} of {page.total_pages} ({page.total_count} executions)")
    return EXIT_COMPLETED


def cmd_executions_get(client: SkillrunClient, out: Output, args) -> int:
    with out.waiting("fetching the execution…"):
        execution = client.get_execution(args.execution_id)
    if out.as_json:
        out.json(execution)
    else:
        usage = execution.usage
        print(f"{execution.id}  {execution.state}  created {execution.created_at}")
        print(f"tokens {usage.input_tokens} in / {usage.output_tokens} out, cost ${usage.cost_usd}")
        if execution.error:
            print(f"error: {execution.error}")
        if execution.outputs is not None:
            print(json.dumps(execution.outputs, indent=2))
    return EXIT_COMPLETED


def _upload(client: SkillrunClient, out: Output, path: str) -> m.PersonalFile:
    file = Path(path)
    content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    with out.waiting(f"uploading {file.name}…"):
        return client.upload_file(file.name, file.read_bytes(), content_type)


def cmd_skills_run(client: SkillrunClient, out: Output, args) -> int:
    uploaded = [_upload(client, out, path).filename for path in args.file]
    with out.waiting(f"starting {args.slug}…"):
        started = client.start_skill(args.slug, dict(args.input), file_source_ids=uploaded or None)
    if not out.as_json:
        out.note(f"skill execution {started.id}")
    events = client.skill_events(started.id)
    code = follow(out, events, lambda _: client.get_skill_execution(started.id).state)
    if not out.as_json:
        for artifact in client.get_skill_execution(started.id).artifacts:
            out.note(f"artifact {artifact.relpath_in_workspace}: {artifact.download_url}")
    return code


def cmd_files_upload(client: SkillrunClient, out: Output, args) -> int:
    for path in args.path:
        uploaded = _upload(client, out, path)
        if out.as_json:
            out.json(uploaded)
        else:
            print(f"{uploaded.filename}  {uploaded.size_bytes} bytes  {uploaded.content_type}")
    return EXIT_COMPLETED


def cmd_files_list(client: SkillrunClient, out: Output, args) -> int:
    with out.waiting("listing files…"):
        files = client.list_files(limit=args.limit)
    for file in files:
        if out.as_json:
            out.json(file)
        else:
            print(f"{file.filename}  {file.size_bytes} bytes  {file.content_type}  {file.created_at}")
    return EXIT_COMPLETED


# --- arguments ------------------------------------------------------------------------------------


def key_value(text: str) -> tuple[str, object]:
    """`k=v` of --input; v is JSON when it parses (`n=3`, `tags=["a"]`), else the string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def build_parser() -> argparse.ArgumentParser:
    # the shared options, accepted before or after the command (SUPPRESS: a later default does not
    # override an earlier value)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--base-url", default=argparse.SUPPRESS, help="default: $SKILLRUN_BASE_URL")
    common.add_argument("--api-key", default=argparse.SUPPRESS, help="default: $SKILLRUN_API_KEY")
    common.add_argument("--workspace-id", default=argparse.SUPPRESS, help="default: $SKILLRUN_WORKSPACE_ID")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="one JSON object per line")

    parser = argparse.ArgumentParser(
        prog="skillrun",
        parents=[common],
        description="Run skillrun agents and skills from the terminal.",
        epilog="exit codes: 0 completed, 1 failed, 2 usage error, 3 cancelled, 4 suspended, 5 API error",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", parents=[common], help="execute an agent, streaming its answer")
    run.add_argument("agent_id")
    run.add_argument("message")
    run.set_defaults(handler=cmd_run)

    tail = commands.add_parser("tail", parents=[common], help="follow or replay an execution's events")
    tail.add_argument("execution_id")
    tail.add_argument("--after", type=int, default=0, help="only the events after this seq")
    tail.set_defaults(handler=cmd_tail)

    executions = commands.add_parser("executions", help="query executions").add_subparsers(
        dest="subcommand", required=True
    )
    listing = executions.add_parser("list", parents=[common], help="the workspace's executions, newest first")
    listing.add_argument("--page", type=int, default=None)
    listing.add_argument("--page-size", type=int, default=None)
    listing.set_defaults(handler=cmd_executions_list)
    get = executions.add_parser("get", parents=[common], help="one execution")
    get.add_argument("execution_id")
    get.set_defaults(handler=cmd_executions_get)

    skills = commands.add_parser("skills", help="run skills").add_subparsers(dest="subcommand", required=True)
    skill_run = skills.add_parser("run", parents=[common], help="start a skill and follow it to its end")
    skill_run.add_argument("slug")
    skill_run.add_argument("--input", type=key_value, action="append", default=[], metavar="KEY=VALUE")
    skill_run.add_argument("--file", action="append", default=[], metavar="PATH", help="uploaded, then staged")
    skill_run.set_defaults(handler=cmd_skills_run)

    files = commands.add_parser("files", help="personal files").add_subparsers(dest="subcommand", required=True)
    upload = files.add_parser("upload", parents=[common], help="upload files (the same name replaces)")
    upload.add_argument("path", nargs="+")
    upload.set_defaults(handler=cmd_files_upload)
    file_list = files.add_parser("list", parents=[common], help="your files")
    file_list.add_argument("--limit", type=int, default=None)
    file_list.set_defaults(handler=cmd_files_list)
    return parser


def print_error(out: Output, error: SkillrunError) -> None:
    detail = {"code": error.code, "message": error.message, "field": error.field, "status": error.status}
    if out.as_json:
        sys.stderr.write(json.dumps({"error": detail}) + "\n")
        return
    field = f" (field: {error.field})" if error.field else ""
    status = f"{error.status} " if error.status else ""
    out.err.print(f"error: {status}{error.code}: {error.message}{field}", markup=False, style="red")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Output(getattr(args, "json", False))
    try:
        client = SkillrunClient(
            getattr(args, "base_url", None), getattr(args, "api_key", None), getattr(args, "workspace_id", None)
        )
    except ValueError as exc:  # configuration missing
        out.err.print(f"skillrun: {exc}", markup=False, style="red")
        return EXIT_USAGE
    try:
        with client:
            return args.handler(client, out, args)
    except SkillrunError as exc:
        out.stop()
        print_error(out, exc)
        return EXIT_API_ERROR
    except OSError as exc:  # a --file or upload path that cannot be read
        out.stop()
        out.err.print(f"skillrun: {exc}", markup=False, style="red")
        return EXIT_USAGE
    except KeyboardInterrupt:
        out.stop()
        return 130


if __name__ == "__main__":
    sys.exit(main())
