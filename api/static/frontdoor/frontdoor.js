// The front door (api/templates/frontdoor/index.html): the agents API called from the browser with
// the key the user pasted, and an execution followed with the browser's own EventSource.
//
// EventSource cannot send a key header, so it streams with a stream token
// (POST /executions/{id}/stream-token, then /executions/{id}/events?token=...). After a dropped
// connection it reconnects by itself with Last-Event-ID (every frame carries `id:`), so the stream
// goes on after the last event shown. A reconnection whose token has expired is refused (401) and
// EventSource gives up; the page then opens a new one with a fresh token and `last_event_id` in the
// query, since a new EventSource cannot set the header. The stream ends at `final` or `error`, and at
// a suspension: the page answers the client tool call or the gate, then follows the resumed run.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "skillrun.key";
const MAX_RENEWALS = 3; // fresh tokens in a row without an event in between: something else is wrong

const run = { id: null, lastSeq: 0, source: null, renewals: 0, over: true, pendingCalls: new Set() };

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

const problem = (text) => ($("problem").textContent = text);
const setStatus = (status) => ($("status").textContent = status);
const note = (text) => $("connection").append(el("li", text));
const key = () => $("key").value.trim();

async function callApi(method, path, body, headers = {}) {
  const init = { method, headers: { "X-API-Key": key(), ...headers } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const credits = response.headers.get("X-Credits-Remaining");
  if (credits !== null) $("credits").textContent = `Credits remaining: ${credits}`;
  const payload = await response.json().catch(() => null);
  if (!response.ok) {
    const error = (payload && payload.error) || {};
    throw new Error(`${response.status} ${error.code || response.statusText}: ${error.message || ""}`);
  }
  return { payload, response };
}

// --- the key and the agents of its workspace --------------------------------------------------------

async function loadAgents(event) {
  if (event) event.preventDefault();
  problem("");
  try {
    const { payload, response } = await callApi("GET", "/agents");
    sessionStorage.setItem(KEY_STORAGE, key());
    const kind = key().startsWith("wak_") ? "workspace key" : "end-user key";
    $("workspace").textContent = `${response.headers.get("X-Workspace-Id")} (${kind})`;
    const select = $("agent");
    select.replaceChildren();
    for (const agent of payload.data) {
      const option = el("option", agent.name);
      option.value = agent.id;
      option.dataset.clientTools = agent.accepts_client_tools;
      select.append(option);
    }
    $("run").hidden = payload.data.length === 0;
    if (payload.data.length === 0) problem("This workspace has no published agent.");
    pickAgent();
  } catch (error) {
    problem(error.message);
  }
}

function pickAgent() {
  const option = $("agent").selectedOptions[0];
  $("client-tools-box").hidden = !(option && option.dataset.clientTools === "true");
}

function forgetKey() {
  sessionStorage.removeItem(KEY_STORAGE);
  $("key").value = "";
  $("run").hidden = true;
  $("workspace").textContent = "";
}

// --- an execution ------------------------------------------------------------------------------------

async function send(event) {
  event.preventDefault();
  problem("");
  const body = {};
  if ($("message").value) body.message = $("message").value;
  const tools = $("client-tools").value.trim();
  if (tools && !$("client-tools-box").hidden) {
    try {
      body.client_tools = JSON.parse(tools);
    } catch {
      return problem("The client tools are not valid JSON.");
    }
  }
  const headers = { Prefer: "respond-async" }; // 202 with the id at once: the events come by EventSource
  if (window.crypto && crypto.randomUUID) headers["Idempotency-Key"] = crypto.randomUUID();
  $("send").disabled = true;
  try {
    const agent = encodeURIComponent($("agent").value);
    const { payload } = await callApi("POST", `/agents/${agent}/execute`, body, headers);
    follow(payload.data.execution_id);
  } catch (error) {
    problem(error.message);
    $("send").disabled = false;
  }
}

function follow(executionId) {
  closeStream();
  Object.assign(run, { id: executionId, lastSeq: 0, renewals: 0, over: false });
  run.pendingCalls.clear();
  for (const part of ["answer", "reasoning", "tools", "actions", "summary", "events", "connection"]) {
    $(part).replaceChildren();
  }
  $("execution-id").textContent = executionId;
  setStatus("queued");
  $("execution").hidden = false;
  openStream("stream opened");
}

async function openStream(reason) {
  const executionId = run.id;
  let token;
  try {
    ({ token } = (await callApi("POST", `/executions/${executionId}/stream-token`)).payload.data);
  } catch (error) {
    return problem(`No stream token: ${error.message}`);
  }
  if (executionId !== run.id || run.source || run.over) return; // another execution, or already followed
  const query = new URLSearchParams({ token });
  if (run.lastSeq) query.set("last_event_id", run.lastSeq);
  const source = new EventSource(`/executions/${executionId}/events?${query}`);
  run.source = source;
  note(run.lastSeq ? `${reason} (after event ${run.lastSeq})` : reason);
  source.onmessage = (message) => {
    run.renewals = 0;
    handle(Number(message.lastEventId), JSON.parse(message.data));
  };
  source.onerror = () => {
    if (source !== run.source) return;
    if (source.readyState === EventSource.CONNECTING) {
      return note(`connection lost: reconnecting after event ${run.lastSeq}`); // EventSource does it
    }
    closeStream(); // the reconnection was refused: its token has expired (401)
    if (++run.renewals > MAX_RENEWALS) return problem("The stream cannot be reopened.");
    openStream("stream token renewed");
  };
}

function closeStream() {
  if (run.source) run.source.close();
  run.source = null;
}

function handle(seq, event) {
  run.lastSeq = seq;
  $("events").append(el("li", `${seq} ${event.type}`));
  switch (event.type) {
    case "start":
    case "resumed":
      return setStatus(event.status);
    case "node_start":
      return setStatus("running");
    case "text":
    case "reasoning": {
      const target = $(event.type === "text" ? "answer" : "reasoning");
      if (event.reset) target.textContent = "";
      return target.append(event.text);
    }
    case "tool_call":
      return $("tools").append(el("li", `${event.name}(${JSON.stringify(event.arguments || {})})`));
    case "tool_result":
      return $("tools").append(el("li", `${event.name || event.tool_call_id} ${event.outcome}: ${JSON.stringify(event.result)}`));
    case "tool_call_awaiting_client":
      return clientToolForm(event);
    case "suspended":
      return suspended(event);
    case "final":
      return finish(event);
    case "error":
      return fail(event);
  }
}

function suspended(event) {
  closeStream(); // the stream ends here; it is opened again once the input is sent
  setStatus(event.status);
  if (event.status === "awaiting_approval") gateForm(event);
  if (event.status === "waiting_for_external_event") externalEventForm(event);
  if (event.status === "awaiting_client_tool" && run.pendingCalls.size === 0) {
    openStream("following the resumed execution"); // every result was sent before the stream ended
  }
}

// The answer forms (client tool, gate, external event): parse, post with the buttons disabled,
// show the API's error and enable them again if it is refused.
function parsedJson(text, what) {
  try {
    return JSON.parse(text);
  } catch {
    problem(`${what} is not valid JSON.`);
    return undefined;
  }
}

async function postAnswer(buttons, path, body) {
  for (const button of buttons) button.disabled = true;
  try {
    await callApi("POST", path, body);
    return true;
  } catch (error) {
    for (const button of buttons) button.disabled = false;
    problem(error.message);
    return false;
  }
}

function clientToolForm(call) {
  run.pendingCalls.add(call.tool_call_id);
  $("tools").append(el("li", `${call.name}(${JSON.stringify(call.arguments || {})}), a client tool`));
  const form = el("form", undefined, "action");
  const result = el("textarea");
  result.rows = 3;
  result.value = "{}";
  result.setAttribute("aria-label", `Result of ${call.name}`);
  const outcome = el("select");
  outcome.setAttribute("aria-label", `Outcome of ${call.name}`);
  for (const value of ["success", "error"]) outcome.append(Object.assign(el("option", value), { value }));
  const button = el("button", `Send the result of ${call.name}`);
  form.append(el("strong", `Client tool ${call.name}`), el("pre", JSON.stringify(call.arguments || {})));
  form.append(result, outcome, button);
  form.onsubmit = async (event) => {
    event.preventDefault();
    const value = parsedJson(result.value, "The result");
    if (value === undefined) return;
    const body = { tool_call_id: call.tool_call_id, outcome: outcome.value, result: value };
    if (!(await postAnswer([button], `/executions/${run.id}/tool-result`, body))) return;
    form.remove();
    run.pendingCalls.delete(call.tool_call_id);
    $("tools").append(el("li", `${call.name} ${outcome.value}: ${JSON.stringify(value)} (sent)`));
    note(`result of ${call.name} sent`);
    if (run.pendingCalls.size === 0 && !run.source) openStream("following the resumed execution");
  };
  $("actions").append(form);
}

function gateForm(gate) {
  const form = el("form", undefined, "action");
  form.append(el("strong", "Approval needed"), el("p", gate.prompt || ""));
  if (gate.expires_at) form.append(el("p", `Without a decision by ${gate.expires_at}: ${gate.default_decision}`));
  const comment = el("input");
  comment.setAttribute("aria-label", "Comment");
  comment.placeholder = "Comment (optional)";
  const approve = Object.assign(el("button", "Approve"), { value: "approve" });
  const reject = Object.assign(el("button", "Reject"), { value: "reject" });
  form.append(comment, approve, reject);
  form.onsubmit = async (event) => {
    event.preventDefault();
    const decision = event.submitter.value;
    const body = { decision, comment: comment.value };
    if (!(await postAnswer([approve, reject], `/executions/${run.id}/approval`, body))) return;
    form.remove();
    note(`${decision} sent`);
    openStream("following the resumed execution");
  };
  $("actions").append(form);
}

function externalEventForm(wait) {
  // Usually another system posts it; the page can too, for trying a workflow out.
  const form = el("form", undefined, "action");
  form.append(el("strong", `Waiting for the external event ${wait.event || ""}`));
  const payload = el("textarea");
  payload.rows = 3;
  payload.value = "{}";
  payload.setAttribute("aria-label", "Event payload");
  const button = el("button", `Post the event ${wait.event || ""}`);
  form.append(payload, button);
  form.onsubmit = async (event) => {
    event.preventDefault();
    const value = parsedJson(payload.value, "The payload");
    if (value === undefined) return;
    const body = { event: wait.event, payload: value };
    if (!(await postAnswer([button], `/executions/${run.id}/external-event`, body))) return;
    form.remove();
    note(`event ${wait.event} posted`);
    openStream("following the resumed execution");
  };
  $("actions").append(form);
}

function finish(event) {
  end(event.status);
  const output = event.output || {};
  if (!$("answer").textContent && output.text) $("answer").textContent = output.text;
  const usage = output.usage || {};
  const parts = [`${usage.input_tokens || 0} input + ${usage.output_tokens || 0} output tokens`];
  if (event.cost_microdollars !== undefined) parts.push(`cost $${(event.cost_microdollars / 1e6).toFixed(6)}`);
  if (event.credits_used !== undefined) parts.push(`${event.credits_used} credits`);
  if (event.latency_ms !== undefined) parts.push(`${event.latency_ms} ms`);
  $("summary").textContent = parts.join(" · ");
}

function fail(event) {
  end(event.status || "failed");
  $("summary").textContent = `Error ${event.code}: ${event.message}`;
}

function end(status) {
  run.over = true;
  closeStream(); // at the end: a reconnection would get 204 anyway
  setStatus(status);
  $("send").disabled = false;
}

$("key-form").addEventListener("submit", loadAgents);
$("forget").addEventListener("click", forgetKey);
$("agent").addEventListener("change", pickAgent);
$("message-form").addEventListener("submit", send);
$("key").value = sessionStorage.getItem(KEY_STORAGE) || "";
if (key()) loadAgents();
