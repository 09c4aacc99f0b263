"""The workflow node types. Each takes the run and its node and returns the node's output (JSON),
or raises Suspend / StepFailed. Node options are documented on each function.

Strings in node options may hold templates (workers/templates.py): `{{message}}`,
`{{variables.tone}}`, `{{nodes.<node_id>.text}}`, `{{inputs}}` (a skill's).
"""

import time
from dataclasses import replace

import jsonschema
from django.conf import settings

from agents.models import Agent, Skill
from agents.selectors import skill_tool_name
from agents.skill_inputs import inputs_errors
from conversations.selectors import history_for_model, memory_facts
from core import json as finite_json
from core.connections import release_connection
from core.ids import is_uuid, uuid7
from executions.checkpoints import ApprovalGate, EventWait, MediaJob, ModelTurns, SubExecutionWait
from executions.media_requests import (
    do_record_media_result,
    do_register_media_request,
    do_resume_media_wait,
    media_request_result,
)
from executions.models import Execution, ExecutionSource, ExecutionState
from files.selectors import download_url
from files.services import store_generated_file
from workers.outcomes import StepFailed, Suspend
from workers.providers import ProviderError, get_media_provider
from workers.run import ExecutionRun
from workers.server_tool import ServerTool, ToolError
from workers.templates import render
from workers.tools import memory_user, server_tools

MAX_SUB_EXECUTION_DEPTH = 5


def run_node(run: ExecutionRun, node: dict):
    handler = NODE_TYPES.get(node.get("type"))
    if handler is None:
        raise StepFailed("unsupported_node", f"Node type {node.get('type')!r} is not supported.")
    return handler(run, node)


# --- ai -------------------------------------------------------------------------------------------


def parse_output(node: dict, text: str):
    """`output_schema`: the text parsed as JSON and valid against it, else None."""
    schema = node.get("output_schema")
    if not schema:
        return None
    try:
        value = finite_json.loads(text)  # `NaN` is no JSON output
        jsonschema.validate(value, schema)
    except (ValueError, jsonschema.ValidationError, jsonschema.SchemaError):
        return None
    return value


def _tool_message(call: dict, outcome: str, result) -> dict:
    return {
        "role": "tool",
        "tool_call_id": call["id"],
        "name": call["name"],
        "content": finite_json.dumps({"outcome": outcome, "result": result}),
    }


NON_FINITE_ARGUMENTS = "The arguments hold NaN or an infinite number, which JSON cannot carry."


def _finite_arguments(call: dict) -> tuple[dict, ServerTool | None]:
    """The call as it is (and None) when JSON can carry its arguments; else (a provider that parsed
    `NaN`) the call made writable, its arguments as text, and a tool that answers the model with an
    error in place of the one it named."""
    if finite_json.is_finite(call["arguments"]):
        return call, None
    return {**call, "arguments": {"_raw": repr(call["arguments"])}}, ServerTool(call["name"], "", {}, _refuse)


def _refuse(arguments: dict, idempotency_key: str):
    raise ToolError(NON_FINITE_ARGUMENTS)


CALL_SKILL = "call_skill"
CALL_SKILL_PARAMETERS = {
    "type": "object",
    "required": ["skill"],
    "properties": {
        "skill": {"type": "string", "description": "The slug of a skill of this workspace"},
        "inputs": {"type": "object", "description": "Inputs for that skill, valid against its inputs schema"},
    },
}


def _context_messages(run: ExecutionRun, node: dict) -> list[dict]:
    """What precedes the user's message: the instructions, what is remembered about the user
    (`external_user_id`), and the conversation's history (`conversation_scope`)."""
    inputs, messages = run.execution.inputs, []
    if node.get("instructions"):
        messages.append({"role": "system", "content": node["instructions"]})
    user = memory_user(run.execution)
    if user:
        facts = memory_facts(run.execution.workspace_id, user)
        if facts:
            listed = "\n".join(f"- {fact.content} (fact {fact.id})" for fact in facts)
            messages.append({"role": "system", "content": f"What you remember about this user:\n{listed}"})
    if inputs.get("conversation_scope"):
        messages += history_for_model(inputs["conversation_scope"].removeprefix("conversation:"))
    return messages


def run_ai(run: ExecutionRun, node: dict) -> dict:
    """A model call, in turns until the model answers without calling tools.

    Options: model, instructions, prompt (default: the user's message), tools (server tool names;
    a skill also has list_files, read_file, read_materials, write_file and call_skill), skills (slugs
    of skills the model may call as tools, chat-dispatched), accepts_client_tools, output_schema,
    max_iterations (model turns, default 10)."""
    state = run.node_state(node)
    if not isinstance(state, ModelTurns):
        prompt = render(node.get("prompt", "{{message}}"), run.template_context())
        messages = [
            *_context_messages(run, node),
            {"role": "user", "content": prompt if isinstance(prompt, str) else finite_json.dumps(prompt)},
        ]
        state = ModelTurns(node_id=node["id"], messages=messages)
    resumed = run.resume_input(node)
    if resumed is not None and state.skill_calls:  # a called skill finished
        call = state.skill_calls[0]
        state = replace(state, skill_calls=state.skill_calls[1:], sub_execution_id=None, waiting=False)
        run.emit(
            "sub_execution_finished",
            {"node_id": node["id"], "sub_execution_id": resumed["sub_execution_id"], "status": resumed["status"]},
        )
        outcome = "success" if resumed["status"] == ExecutionState.COMPLETED else "error"
        result = {key: resumed.get(key) for key in ("sub_execution_id", "status", "outputs", "error")}
        run.emit(
            "tool_result",
            {
                "node_id": node["id"],
                "tool_call_id": call["id"],
                "name": call["name"],
                "outcome": outcome,
                "result": result,
            },
        )
        state.messages.append(_tool_message(call, outcome, result))
    elif resumed is not None and state.pending:  # the client's results, in the order the model called
        results = resumed.get("tool_results", {})
        for call in state.pending:
            result = results.get(call["id"], {"outcome": "error", "result": {"message": "No result was posted."}})
            state.messages.append(_tool_message(call, result["outcome"], result.get("result")))
        state = replace(state, pending=[], waiting=False)

    tool_names = node.get("tools", [])
    server = server_tools(run.execution, tool_names, run.skill_workspace)
    client = (
        {tool["name"]: tool for tool in run.execution.inputs.get("client_tools", [])}
        if node.get("accepts_client_tools")
        else {}
    )
    specs = [tool.spec() for tool in server.values()] + [
        {"name": t["name"], "description": t.get("description", ""), "parameters": t.get("parameters", {})}
        for t in client.values()
    ]
    if CALL_SKILL in tool_names:
        specs.append(
            {
                "name": CALL_SKILL,
                "description": "Run another skill and get its outputs.",
                "parameters": CALL_SKILL_PARAMETERS,
            }
        )
    chat_skills = _chat_skill_tools(run, node)
    specs += [spec for _, spec in chat_skills.values()]
    while True:
        if state.skill_calls:
            _start_skill_call(run, node, state)
        if state.pending:
            for call in state.pending:
                run.emit(
                    "tool_call_awaiting_client",
                    {
                        "node_id": node["id"],
                        "tool_call_id": call["id"],
                        "name": call["name"],
                        "arguments": call["arguments"],
                    },
                )
            raise Suspend(
                ExecutionState.AWAITING_CLIENT_TOOL,
                {"node_id": node["id"], "pending_tool_call_ids": state.pending_tool_call_ids()},
                state,
            )
        if state.turns >= node.get("max_iterations", 10):
            raise StepFailed(
                "max_iterations_exceeded",
                f"Node {node['id']!r} called tools more than {node.get('max_iterations', 10)} times.",
            )
        if run.skill_workspace:
            run.emit("iteration", {"node_id": node["id"], "iteration": state.turns + 1})
        turn = run.stream_model(node, state.messages, specs or None)
        refused = {}
        for index, call in enumerate(turn.tool_calls):
            turn.tool_calls[index], refusing = _finite_arguments(call)
            if refusing is not None:
                refused[call["id"]] = refusing
        state.turns += 1
        run.iterations += 1
        state.messages.append(
            {
                "role": "assistant",
                "content": turn.text,
                "tool_calls": turn.tool_calls,
                **({"provider_data": turn.provider_data} if turn.provider_data else {}),
            }
        )
        if not turn.tool_calls:
            return {"text": turn.text, "parsed_output": parse_output(node, turn.text)}
        for call in turn.tool_calls:
            if call["id"] in refused:
                outcome, result = run.run_server_tool(node, refused[call["id"]], call)
                state.messages.append(_tool_message(call, outcome, result))
            elif call["name"] in client:
                state.pending.append(call)
            elif call["name"] == CALL_SKILL and CALL_SKILL in tool_names:
                arguments = call["arguments"] if isinstance(call["arguments"], dict) else {}
                state.skill_calls.append(
                    {
                        **call,
                        "skill": arguments.get("skill", ""),
                        "inputs": arguments.get("inputs", {}),
                        "via_chat": False,
                    }
                )
            elif call["name"] in chat_skills:
                state.skill_calls.append(
                    {**call, "skill": chat_skills[call["name"]][0], "inputs": call["arguments"], "via_chat": True}
                )
            else:
                outcome, result = run.run_server_tool(node, server.get(call["name"]), call)
                state.messages.append(_tool_message(call, outcome, result))
        run.save_node_state(state)


def _chat_skill_tools(run: ExecutionRun, node: dict) -> dict:
    """An agent's `skills` (slugs) as tools named after them, with their inputs schema as parameters:
    how a chat dispatches skills. {tool name: (slug, spec)}"""
    slugs = node.get("skills", [])
    tools = {}
    for skill in Skill.objects.filter(workspace_id=run.execution.workspace_id, slug__in=slugs).select_related(
        "live_version"
    ):
        if skill.live_version:
            manifest = skill.live_version.manifest
            tools[skill_tool_name(skill.slug)] = (
                skill.slug,
                {
                    "name": skill_tool_name(skill.slug),
                    "description": manifest.get("description") or manifest.get("instructions", "")[:500],
                    "parameters": manifest.get("inputs_schema") or {"type": "object"},
                },
            )
    return tools


def _start_skill_call(run: ExecutionRun, node: dict, state: ModelTurns) -> None:
    """call_skill, or an agent's skill tool: the skill runs as a sub-execution (a chat-dispatched one
    records the chat ids) and this one waits; the outcome comes back as the tool's result. A call
    that cannot start (unknown skill, invalid inputs) is answered with an error at once."""
    while state.skill_calls:
        call = state.skill_calls[0]
        run.emit(
            "tool_call",
            {"node_id": node["id"], "tool_call_id": call["id"], "name": call["name"], "arguments": call["arguments"]},
        )
        skill = Skill.objects.filter(workspace_id=run.execution.workspace_id, slug=call["skill"]).first()
        version = skill.live_version if skill else None
        errors = inputs_errors(version.manifest, call["inputs"]) if version else None
        if version is None or errors:
            result = {
                "message": f"No published skill {call['skill']!r}." if version is None else "Invalid inputs.",
                "errors": errors or [],
            }
            run.emit(
                "tool_result",
                {
                    "node_id": node["id"],
                    "tool_call_id": call["id"],
                    "name": call["name"],
                    "outcome": "error",
                    "result": result,
                },
            )
            state.messages.append(_tool_message(call, "error", result))
            state.skill_calls = state.skill_calls[1:]
            continue
        child_id = uuid7()
        run.emit(
            "sub_execution_started",
            {"node_id": node["id"], "sub_execution_id": f"execution:{child_id}", "responder": f"skill:{skill.slug}"},
        )
        run.trace.sub_execution(node["id"], child_id, f"skill:{skill.slug}", call["inputs"])
        child = {
            "id": child_id,
            "inputs": call["inputs"],
            "skill_version": version,
            "model_config": run.execution.model_config,
        }
        if call["via_chat"]:
            inputs = run.execution.inputs
            child.update(
                source=ExecutionSource.CHAT,
                chat_tool_call_id=call["id"],
                chat_thread_id=inputs.get("conversation_scope") or run.execution.public_id,
                chat_message_id=run.execution.public_id,
            )
        raise Suspend(
            ExecutionState.WAITING_FOR_SUB_EXECUTION,
            None,
            replace(state, sub_execution_id=str(child_id)),
            sub_execution=child,
        )


# --- tool -----------------------------------------------------------------------------------------


def run_tool(run: ExecutionRun, node: dict) -> dict:
    """A server tool with fixed (templated) arguments. Options: tool, arguments, on_error (fail|continue)."""
    arguments = render(node.get("arguments", {}), run.template_context())
    call = {"id": f"tc_{node['id']}", "name": node.get("tool", ""), "arguments": arguments}
    outcome, result = run.run_server_tool(node, server_tools(run.execution, [call["name"]]).get(call["name"]), call)
    if outcome == "error" and node.get("on_error", "fail") == "fail":
        raise StepFailed("tool_error", f"Tool {call['name']!r} failed: {result.get('message', result)}")
    return {"outcome": outcome, "result": result}


# --- human gate and external event ---------------------------------------------------------------


def _expires_at(timeout_seconds) -> str | None:
    if not timeout_seconds:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + timeout_seconds))


def run_human_gate(run: ExecutionRun, node: dict) -> dict:
    """Suspends as awaiting_approval. Options: prompt, timeout_seconds, default_decision (approve|reject,
    taken at the timeout; default reject), on_reject (fail|continue, default fail)."""
    decision = run.resume_input(node)
    if decision is not None:
        if decision["decision"] == "rejected" and node.get("on_reject", "fail") == "fail":
            how = "timed out and was rejected by default" if decision.get("decided_by") == "timeout" else "was rejected"
            raise StepFailed("approval_rejected", f"The approval of node {node['id']!r} {how}.")
        return decision
    timeout = node.get("timeout_seconds")
    default = "approved" if node.get("default_decision") == "approve" else "rejected"
    raise Suspend(
        ExecutionState.AWAITING_APPROVAL,
        {
            "node_id": node["id"],
            "prompt": render(node.get("prompt", ""), run.template_context()),
            "expires_at": _expires_at(timeout),
            "default_decision": default if timeout else None,
        },
        ApprovalGate(node_id=node["id"], timeout_input={"decision": default, "comment": "", "decided_by": "timeout"}),
        timeout_seconds=timeout,
    )


def run_wait_event(run: ExecutionRun, node: dict) -> dict:
    """Suspends as waiting_for_external_event; the posted event is the output. Options: event (the
    expected name; any when unset), timeout_seconds, on_timeout (fail|continue, default fail)."""
    received = run.resume_input(node)
    if received is not None:
        if received.get("timed_out") and node.get("on_timeout", "fail") == "fail":
            raise StepFailed("event_timeout", f"No event reached node {node['id']!r} in time.")
        return received
    timeout = node.get("timeout_seconds")
    raise Suspend(
        ExecutionState.WAITING_FOR_EXTERNAL_EVENT,
        {"node_id": node["id"], "event": node.get("event"), "expires_at": _expires_at(timeout)},
        EventWait(
            node_id=node["id"],
            event=node.get("event"),
            timeout_input={"event": None, "payload": None, "timed_out": True},
        ),
        timeout_seconds=timeout,
    )


# --- media generation -----------------------------------------------------------------------------


def run_media_generation(run: ExecutionRun, node: dict) -> dict:
    """Submit to a media provider, wait for it, store the file. Options: provider (builtin | fal,
    default builtin), prompt, width, height, duration_ms (built-in), model and arguments (fal: the
    model id, e.g. fal-ai/flux/dev, and its other inputs), timeout_seconds (default 600).

    The built-in provider is polled here, with a `heartbeat` event every MEDIA_HEARTBEAT_SECONDS;
    a provider that calls back (fal) suspends the run instead (_wait_for_callback)."""
    provider_name = node.get("provider", "builtin")
    try:
        provider = get_media_provider(provider_name)
    except ValueError as exc:
        raise StepFailed("invalid_workflow", str(exc)) from exc
    state = run.node_state(node)
    try:
        if not isinstance(state, MediaJob):
            options = ("width", "height", "duration_ms", "model", "arguments")
            request = render({key: node[key] for key in options if key in node}, run.template_context())
            request["prompt"] = render(node.get("prompt", "{{message}}"), run.template_context()) or ""
            release_connection()
            job = provider.submit(request)
            run.emit(
                "media_gen_submitted",
                {"node_id": node["id"], "job_id": job["job_id"], "provider": provider_name, "media_type": "image"},
            )
            if provider.calls_back:
                do_register_media_request(
                    execution_id=run.execution.id, node_id=node["id"], provider=provider.name, request_id=job["job_id"]
                )
            state = MediaJob(node_id=node["id"], job=job, submitted_at=time.time())
            run.save_node_state(state)
            just_submitted = True
        else:
            just_submitted = False
        if provider.calls_back:
            result = _wait_for_callback(run, node, provider, state, poll=not just_submitted)
        else:
            result = _poll_in_worker(run, node, provider, state)
    except ProviderError as exc:
        raise StepFailed(exc.failure_reason, str(exc)) from exc
    stored = store_generated_file(run.execution.workspace, run.execution.principal, result.content, result.filename)
    media = {
        "url": download_url(stored),
        "storage_key": stored.storage_key,
        "content_type": stored.content_type,
        "size_bytes": stored.size_bytes,
        "media_type": "video" if stored.content_type.startswith("video/") else "image",
    }
    run.emit("media_gen_complete", {"node_id": node["id"], "job_id": state.job["job_id"], **media})
    return media


def _media_timeout(node: dict) -> StepFailed:
    return StepFailed(
        "media_gen_timeout", f"The media provider did not finish in {node.get('timeout_seconds', 600)} s."
    )


def _poll_in_worker(run: ExecutionRun, node: dict, provider, state: MediaJob):
    deadline = state.submitted_at + node.get("timeout_seconds", 600)
    last_beat = time.monotonic()
    while (result := provider.poll(state.job)) is None:
        if time.time() > deadline:
            raise _media_timeout(node)
        time.sleep(min(0.25, settings.MEDIA_HEARTBEAT_SECONDS))
        run.refresh_cancel()
        if time.monotonic() - last_beat >= settings.MEDIA_HEARTBEAT_SECONDS:
            run.emit("heartbeat", {"node_id": node["id"], "job_id": state.job["job_id"]})
            last_beat = time.monotonic()
    return result


def _wait_for_callback(run: ExecutionRun, node: dict, provider, state: MediaJob, poll: bool):
    """The job's result from its webhook, or from one poll of the provider (`poll`: not right after
    the submit). None yet: the run suspends, without a `suspended` event (a stream of it goes on),
    until the webhook resumes it or, FAL_POLL_INTERVAL_SECONDS later, the reaper does to poll again;
    past the node's timeout it fails with media_gen_timeout."""
    request_id = state.job["job_id"]
    result = media_request_result(provider=provider.name, request_id=request_id)
    if result is None and poll:
        release_connection()
        try:
            polled = provider.poll(state.job)
        except ProviderError as exc:
            if not exc.retryable:
                raise
            polled = None  # Fal unavailable for now: the webhook, or the next poll, brings the result
        if polled is not None:
            do_record_media_result(provider=provider.name, request_id=request_id, result=polled, via="poll")
            result = media_request_result(provider=provider.name, request_id=request_id) or polled
    if result is None:
        remaining = state.submitted_at + node.get("timeout_seconds", 600) - time.time()
        if remaining <= 0:
            raise _media_timeout(node)
        raise Suspend(
            ExecutionState.WAITING_FOR_EXTERNAL_EVENT,
            None,
            state,
            timeout_seconds=max(1.0, min(settings.FAL_POLL_INTERVAL_SECONDS, remaining)),
            after_suspend=lambda: do_resume_media_wait(provider=provider.name, request_id=request_id),
        )
    if result.get("status") != "OK":
        error = result.get("error") or result.get("payload_error") or "the provider reported an error"
        raise StepFailed("media_gen_failed", f"The media provider failed: {str(error)[:500]}")
    return provider.fetch(state.job, result)


# --- sub-executions -------------------------------------------------------------------------------


def _depth(execution: Execution) -> int:
    depth, parent_id = 0, execution.parent_id
    while parent_id and depth <= MAX_SUB_EXECUTION_DEPTH:
        depth += 1
        parent_id = Execution.objects.filter(id=parent_id).values_list("parent_id", flat=True).first()
    return depth


def run_sub_execution(run: ExecutionRun, node: dict) -> dict:
    """`agent` (agent_id, message, variables) or `skill` (skill: the slug, inputs): runs the live
    version as a child execution anywhere in the fleet; this one waits without a worker.
    Option on_error (fail|continue, default fail)."""
    finished = run.resume_input(node)
    if finished is not None:
        run.emit(
            "sub_execution_finished",
            {"node_id": node["id"], "sub_execution_id": finished["sub_execution_id"], "status": finished["status"]},
        )
        if finished["status"] != ExecutionState.COMPLETED and node.get("on_error", "fail") == "fail":
            message = (finished.get("error") or {}).get("message", finished["status"])
            raise StepFailed("sub_execution_failed", f"Sub-execution {finished['sub_execution_id']} failed: {message}")
        outputs = finished.get("outputs") or {}
        return {
            "sub_execution_id": finished["sub_execution_id"],
            "status": finished["status"],
            "text": outputs.get("text", ""),
            "parsed_output": outputs.get("parsed_output"),
        }
    if _depth(run.execution) >= MAX_SUB_EXECUTION_DEPTH:
        raise StepFailed("sub_execution_too_deep", f"Sub-executions nest at most {MAX_SUB_EXECUTION_DEPTH} deep.")
    context, workspace_id = run.template_context(), run.execution.workspace_id
    if node["type"] == "agent":
        agent_id = str(node.get("agent_id", "")).removeprefix("agent:")
        agent = Agent.objects.filter(workspace_id=workspace_id, id=agent_id).first() if is_uuid(agent_id) else None
        version, responder = (agent.live_version if agent else None), f"agent:{agent_id}"
        inputs = {
            "message": render(node.get("message", "{{message}}"), context),
            "variables": render(node.get("variables", {}), context),
        }
        child = {"agent_version": version}
    else:
        skill = Skill.objects.filter(workspace_id=workspace_id, slug=node.get("skill", "")).first()
        version, responder = (skill.live_version if skill else None), f"skill:{node.get('skill')}"
        inputs = render(node.get("inputs", {}), context)
        child = {"skill_version": version, "model_config": run.execution.model_config}
    if version is None:
        raise StepFailed("invalid_workflow", f"Node {node['id']!r}: {responder} does not exist or is not published.")
    child_id = uuid7()
    run.emit(
        "sub_execution_started",
        {"node_id": node["id"], "sub_execution_id": f"execution:{child_id}", "responder": responder},
    )
    run.trace.sub_execution(node["id"], child_id, responder, inputs)
    raise Suspend(
        ExecutionState.WAITING_FOR_SUB_EXECUTION,
        None,
        SubExecutionWait(node_id=node["id"], sub_execution_id=str(child_id)),
        sub_execution={"id": child_id, "inputs": inputs, **child},
    )


NODE_TYPES = {
    "ai": run_ai,
    "tool": run_tool,
    "human_gate": run_human_gate,
    "wait_event": run_wait_event,
    "media_generation": run_media_generation,
    "agent": run_sub_execution,
    "skill": run_sub_execution,
}
