// The live tail of an execution's page (issue 13): follows the execution's events through the SSE
// relay (GET /executions/{id}/events?token=, an EventSource) and appends them to the timeline,
// merged as the server renders them: text chunks into the current model turn, a tool result into
// its call. The token comes from the admin (POST .../stream-token/); a closed stream (an expired
// token, a 204 at the end) gets a new token and resumes after the last seq shown.
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("sr-live-config").textContent);
  var timeline = document.getElementById("sr-timeline");
  var status = document.getElementById("sr-live-status");
  var csrf = document.querySelector("#sr-csrf input[name=csrfmiddlewaretoken]").value;
  var loadedAt = performance.now();
  var lastSeq = config.lastSeq;
  var ended = false;
  var source = null;
  var TERMINAL = {final: "completed", error: "failed"};
  // model turns per node, as the server counts them (admin_timeline.py): a turn starts at the first
  // text, reasoning or tool call after the node's start, a tool result or a resume; from the second
  // on, a fork may start there
  var TURN_TYPES = ["text", "reasoning", "tool_call", "tool_call_awaiting_client"];
  var TURN_ENDS = ["tool_result", "resumed", "node_start", "node_complete"];
  var turns = {}, inTurn = {};
  timeline.querySelectorAll("li.sr-kind-turn[data-node]").forEach(function (li) {
    turns[li.dataset.node] = (turns[li.dataset.node] || 0) + 1;
  });
  (function () {
    var last = timeline.lastElementChild;
    if (last && last.dataset.node && (last.classList.contains("sr-kind-turn") || last.classList.contains("sr-kind-tool"))) {
      inTurn[last.dataset.node] = !last.querySelector(".sr-outcome");
    }
  })();

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function shown(data) {
    var copy = {};
    Object.keys(data).forEach(function (key) {
      if (["type", "execution_id", "seq", "node_id"].indexOf(key) < 0) copy[key] = data[key];
    });
    return JSON.stringify(copy, null, 2);
  }

  function entry(kind, data, label) {
    var li = el("li", "sr-entry sr-kind-" + kind + " sr-arrived");
    li.dataset.seq = data.seq;
    li.dataset.type = data.type;
    if (data.node_id) li.dataset.node = data.node_id;
    var offset = Math.round(config.serverOffsetMs + performance.now() - loadedAt);
    li.appendChild(el("span", "sr-offset", "+" + offset + " ms"));
    li.appendChild(el("span", "sr-type", label || data.type));
    if (data.node_id) li.appendChild(el("span", "sr-node", data.node_id));
    if (data.type === "node_start" && config.forkBase) {
      var fork = el("a", "sr-fork", "fork from here");
      fork.href = config.forkBase + data.seq;
      li.appendChild(fork);
    }
    var body = el("div", "sr-body");
    li.appendChild(body);
    var empty = timeline.querySelector(".sr-empty");
    if (empty) empty.remove();
    timeline.appendChild(li);
    return body;
  }

  function setState(state) {
    var badge = document.querySelector("#sr-summary .sr-field-state .sr-state");
    if (!badge) return;
    badge.className = "sr-state sr-state-" + state;
    badge.textContent = state.replace(/_/g, " ");
  }

  function forkLink(li, seq) {
    if (!config.forkBase) return;
    var fork = el("a", "sr-fork", "fork from here");
    fork.href = config.forkBase + seq;
    li.insertBefore(fork, li.querySelector(".sr-body"));
  }

  function render(data) {
    var node = data.node_id || "";
    var newTurn = false;
    if (TURN_TYPES.indexOf(data.type) >= 0 && !inTurn[node]) {
      inTurn[node] = true;
      turns[node] = (turns[node] || 0) + 1;
      newTurn = turns[node] > 1;
    }
    if (TURN_ENDS.indexOf(data.type) >= 0) inTurn[node] = false;
    renderEntry(data, newTurn);
    if (newTurn) forkLink(timeline.lastElementChild, data.seq);
  }

  function renderEntry(data, newTurn) {
    var last = timeline.lastElementChild;
    if (data.type === "text" || data.type === "reasoning") {
      var turn = !newTurn && last && last.classList.contains("sr-kind-turn") && last.dataset.node === (data.node_id || "") ? last : null;
      if (!turn) {
        entry("turn", data, "model turn");
        turn = timeline.lastElementChild;
      }
      var cls = data.type === "text" ? "sr-text" : "sr-text sr-reasoning-text";
      var body = turn.querySelector(".sr-body");
      var block = body.querySelector(data.type === "text" ? ".sr-text:not(.sr-reasoning-text)" : ".sr-reasoning-text");
      if (!block) block = body.appendChild(el("div", cls, ""));
      block.textContent = data.reset ? data.text : block.textContent + data.text;
      turn.dataset.lastSeq = data.seq;
      return;
    }
    if (data.type === "tool_result") {
      var call = timeline.querySelector('li[data-call="' + CSS.escape(data.tool_call_id || "") + '"]');
      var target = call ? call.querySelector(".sr-body") : entry("tool", data, "tool_result");
      var pending = target.querySelector(".sr-pending");
      if (pending) pending.remove();
      target.appendChild(el("span", "sr-outcome sr-outcome-" + data.outcome, data.outcome));
      target.appendChild(el("pre", "sr-json sr-result", JSON.stringify(data.result, null, 2)));
      return;
    }
    if (data.type === "heartbeat" && last && last.classList.contains("sr-kind-heartbeat")) {
      var count = last.querySelector(".sr-count") || last.querySelector(".sr-body").appendChild(el("span", "sr-muted sr-count", "× 1"));
      count.textContent = "× " + (parseInt(count.textContent.replace("× ", ""), 10) + 1);
      return;
    }
    if (data.type === "tool_call" || data.type === "tool_call_awaiting_client") {
      var body2 = entry(data.type === "tool_call" ? "tool" : "client_tool", data);
      body2.parentNode.dataset.call = data.tool_call_id || "";
      body2.appendChild(el("b", "sr-tool-name", data.name));
      if (data.type === "tool_call") body2.appendChild(el("span", "sr-muted sr-pending", " no result yet"));
      body2.appendChild(el("pre", "sr-json", JSON.stringify(data.arguments, null, 2)));
      return;
    }
    var kinds = {node_start: "node", node_complete: "node_end", suspended: "suspend", resumed: "resume",
                 final: "final", error: "error", heartbeat: "heartbeat", media_gen_complete: "media"};
    var body3 = entry(kinds[data.type] || "event", data);
    if (data.type === "node_start" || data.type === "node_complete") {
      body3.appendChild(el("span", "sr-muted", data.node_type || ""));
    } else {
      body3.appendChild(el("pre", "sr-json sr-inline", shown(data)));
    }
    if (data.type === "state_changed" && data.state) setState(data.state);
    if (data.type === "suspended" && data.status) setState(data.status);
    if (data.type === "resumed") setState("queued");
    if (TERMINAL[data.type]) setState(data.status || TERMINAL[data.type]);
  }

  function end() {
    ended = true;
    if (source) source.close();
    if (status) {
      status.textContent = "ended";
      status.classList.add("sr-ended");
    }
  }

  function connect() {
    fetch(config.tokenUrl, {method: "POST", headers: {"X-CSRFToken": csrf}, credentials: "same-origin"})
      .then(function (response) {
        if (!response.ok) throw new Error("stream token: HTTP " + response.status);
        return response.json();
      })
      .then(function (body) {
        source = new EventSource(config.eventsUrl + "?token=" + encodeURIComponent(body.token) + "&last_event_id=" + lastSeq);
        source.onmessage = function (message) {
          var data = JSON.parse(message.data);
          if (data.seq <= lastSeq) return;
          lastSeq = data.seq;
          timeline.dataset.lastSeq = lastSeq;
          render(data);
          if (TERMINAL[data.type]) end();
        };
        source.onerror = function () {
          if (source.readyState === EventSource.CLOSED && !ended) {
            setTimeout(connect, 2000);  // a new token, then on after lastSeq
          }
        };
      })
      .catch(function () {
        if (!ended) setTimeout(connect, 5000);
      });
  }

  connect();
})();
