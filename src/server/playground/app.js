// The playground: plain JavaScript against this origin's API, no build step. Every
// value from the service is put into the page as text (never as HTML).

const $ = (id) => document.getElementById(id);

const state = {
  key: "",            // the API key, in memory only
  session: null,      // the session as last read
  turn: null,         // { id, sessionId, started, stopping } of this page's running write
  lastTurnId: null,   // the last turn this page started
  streaming: null,    // the <li> the streamed reply goes into
  poll: null,         // the status poll's timer
  replay: null,       // the EventSource of a replay
};

// ---------------------------------------------------------------- errors

// fetch itself failed: no answer came.
class NetworkError extends Error {}

class ApiError extends Error {
  constructor(status, code, message, requestId) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }
}

function describe(error) {
  if (error instanceof ApiError) {
    const id = error.requestId ? ` (request ${error.requestId})` : "";
    return `${error.status} ${error.code}: ${error.message}${id}`;
  }
  if (error instanceof NetworkError) {
    return `The service could not be reached: ${error.message}`;
  }
  return String(error && error.message ? error.message : error);
}

function showError(error) {
  $("error-text").textContent = describe(error);
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

// ---------------------------------------------------------------- HTTP

function headers(extra = {}) {
  const h = { ...extra };
  if (state.key) h.authorization = `Bearer ${state.key}`;
  return h;
}

async function errorFrom(response) {
  let code = "http_error";
  let message = response.statusText || "request failed";
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code;
      message = body.error.message;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, code, message, response.headers.get("x-request-id"));
}

async function request(path, init) {
  try {
    return await fetch(path, init);
  } catch (error) {
    throw new NetworkError(error.message);
  }
}

async function api(method, path, body) {
  const init = { method, headers: headers() };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await request(path, init);
  if (!response.ok) throw await errorFrom(response);
  return response.status === 204 ? null : response.json();
}

const sessionPath = (suffix = "") =>
  `/text/session/${encodeURIComponent(state.session.id)}${suffix}`;

// Reads a text/event-stream body frame by frame: calls onEvent(name, data, id).
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let carriageReturn = false; // a chunk ended on "\r": its "\n" may start the next
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    const chunk = carriageReturn && value.startsWith("\n") ? value.slice(1) : value;
    carriageReturn = chunk.endsWith("\r");
    buffer += chunk.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      let id = null;
      const data = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") name = text;
        else if (field === "data") data.push(text);
        else if (field === "id") id = text;
      }
      if (!data.length) continue;
      let parsed;
      try {
        parsed = JSON.parse(data.join("\n"));
      } catch {
        await reader.cancel();
        throw new Error(`The service sent an event that is not JSON (${name}): ${data.join(" ")}`);
      }
      onEvent(name, parsed, id);
    }
  }
}

// ---------------------------------------------------------------- rendering

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function messageItem(message) {
  const item = element("li", `message role-${message.role}`);
  const role = element("div", "role", message.toolCallId ? "tool output" : message.role);
  if (message.toolCallId) role.append(element("code", "", ` ${message.toolCallId}`));
  if (message.interrupted) role.append(" · stopped");
  item.append(role);
  item.append(element("div", "content", message.content));
  for (const call of message.toolCalls || []) {
    item.append(element("div", "call", `→ ${call.name}(${call.arguments}) · ${call.id}`));
  }
  return item;
}

function renderSession(session) {
  if (state.session && state.session.id !== session.id) forgetTurns();
  state.session = session;
  $("session").hidden = false;
  $("session-id").textContent = session.id;
  $("session-model").textContent = `${session.provider} · ${session.model}`;
  $("session-version").textContent = String(session.version);
  renderStatus(session.status);
  if (session.messages && !state.streaming) {
    const history = $("history");
    history.replaceChildren(...session.messages.map(messageItem));
    history.scrollTop = history.scrollHeight;
  }
}

function renderStatus(status) {
  const busy = $("status-busy");
  busy.textContent = status.busy ? "busy" : "idle";
  busy.classList.toggle("busy", status.busy);
  $("status-waiting").textContent = String(status.waiting);
}

function turnState(text) {
  $("turn-state").textContent = text;
}

function showToolCalls(calls) {
  const list = $("tool-call-list");
  list.replaceChildren();
  for (const call of calls) {
    const box = element("label", "tool-call");
    box.append(element("div", "call", `${call.name}(${call.arguments})`));
    box.append(element("div", "muted small", `call id ${call.id}`));
    const output = element("textarea");
    output.rows = 2;
    output.dataset.callId = call.id;
    output.placeholder = 'output: JSON ({"temperature": 21}) or plain text';
    box.append(output);
    list.append(box);
  }
  $("tool-calls").hidden = calls.length === 0;
}

// ---------------------------------------------------------------- actions

async function refreshSessions() {
  const { sessions } = await api("GET", "/text/sessions");
  $("sessions").replaceChildren(
    ...sessions.map((s) => {
      const item = element("li");
      const open = element("button", "link", s.id);
      open.type = "button";
      open.addEventListener("click", () => run(() => openSession(s.id)));
      item.append(open, element("span", "muted small",
        ` ${s.provider} · ${s.messageCount} message${s.messageCount === 1 ? "" : "s"}`));
      return item;
    }),
  );
}

// One session at a time: the page's running write belongs to the one shown.
function notWhileATurnRuns() {
  if (state.turn) throw new Error("A reply is on its way: stop it or let it finish first");
}

async function openSession(id) {
  notWhileATurnRuns();
  const { session } = await api("GET", `/text/session/${encodeURIComponent(id)}`);
  showToolCalls([]);
  renderSession(session);
  startPolling();
}

async function createSession() {
  notWhileATurnRuns();
  const body = {};
  const provider = $("provider").value.trim();
  const model = $("model").value.trim();
  const instructions = $("instructions").value;
  const tools = $("tools").value.trim();
  if (provider) body.provider = provider;
  if (model) body.model = model;
  if (instructions.trim()) body.instructions = instructions;
  if (tools) {
    try {
      body.tools = JSON.parse(tools);
    } catch (error) {
      throw new Error(`Tools: not JSON (${error.message})`);
    }
  }
  const { session } = await api("POST", "/text/session", body);
  showToolCalls([]);
  renderSession(session);
  startPolling();
  refreshSessions().catch(showError);
}

async function deleteSession() {
  notWhileATurnRuns();
  await api("DELETE", sessionPath());
  stopPolling();
  forgetTurns();
  state.session = null;
  $("session").hidden = true;
  await refreshSessions();
}

// Sends a message (or instructions) and streams the reply into the history.
async function send() {
  const content = $("message").value;
  if (!content.trim() || state.turn) return;
  const asInstructions = $("as-instructions").checked;
  const turn = { id: null, sessionId: state.session.id, started: false, stopping: false };
  state.turn = turn;
  $("send").disabled = true;
  $("message").value = "";
  showToolCalls([]);
  turnState("sending…");
  const history = $("history");
  history.setAttribute("aria-busy", "true");
  history.append(messageItem({ role: asInstructions ? "system" : "user", content }));
  const reply = messageItem({ role: "assistant", content: "" });
  reply.classList.add("streaming");
  history.append(reply);
  state.streaming = reply;
  let outcome = null;
  try {
    const body = asInstructions ? { instructions: content, stream: true } : { content, stream: true };
    const response = await request(sessionPath(asInstructions ? "/instructions" : "/message"), {
      method: "POST",
      headers: headers({ "content-type": "application/json", accept: "text/event-stream" }),
      body: JSON.stringify(body),
    });
    if (!response.ok) throw await errorFrom(response);
    // The turn is known before it runs: from here on, Stop takes it back or cancels it.
    turn.id = response.headers.get("x-turn-id");
    state.lastTurnId = turn.id;
    $("stop").disabled = false;
    $("stop").focus();
    const text = reply.querySelector(".content");
    const calls = [];
    await readEvents(response, (name, data) => {
      switch (name) {
        case "turn.waiting":
          turnState(`waiting for the turn lock (position ${data.position})`);
          break;
        case "turn.started":
          turn.started = true;
          turnState("the provider is answering…");
          break;
        case "text.delta":
          text.textContent += data.text;
          history.scrollTop = history.scrollHeight;
          break;
        case "tool_call":
          calls.push(data);
          break;
        case "turn.completed":
        case "turn.cancelled":
        case "turn.failed":
          outcome = { name, data, calls };
          break;
        default:
          break;
      }
    });
  } catch (error) {
    showError(error);
  } finally {
    state.streaming = null;
    state.turn = null;
    history.removeAttribute("aria-busy");
    $("send").disabled = false;
    $("stop").disabled = true;
  }
  // Nothing of the message was kept: it goes back into the box, to be sent again.
  const kept = outcome !== null && (outcome.name === "turn.completed"
    || (outcome.name === "turn.cancelled" && turn.started));
  if (!kept && !$("message").value) $("message").value = content;
  $("message").focus();
  await finishTurn(outcome, turn).catch(showError);
  refreshSessions().catch(() => {});
}

// Shows how the turn ended; the history shown is the service's once this returns.
async function finishTurn(outcome, turn) {
  if (!outcome) {
    await reload();
    turnState(turn.id ? "the stream ended before the turn did: replay it below" : "");
    return;
  }
  const { name, data, calls } = outcome;
  if (name === "turn.completed") {
    if (data.session) renderSession(data.session);
    else await reload();
    showToolCalls(data.result.toolCalls.length ? data.result.toolCalls : calls);
    turnState(`done · ${data.result.usage.inputTokens} tokens in, ${data.result.usage.outputTokens} out`);
  } else if (name === "turn.cancelled") {
    await reload();
    turnState(turn.started
      ? "stopped: the partial reply is kept, marked stopped"
      : "taken back before it ran: nothing was written");
  } else {
    await reload();
    const error = data.error;
    showError(new ApiError("turn failed ·", error.code, error.message));
    turnState("failed: nothing was written");
  }
}

// Stops this page's turn: taken back if it still waits, cancelled (keeping the
// partial reply) if it runs.
async function stop() {
  const turn = state.turn;
  if (!turn || !turn.id || turn.stopping) return;
  turn.stopping = true;
  $("stop").disabled = true;
  turnState("stopping…");
  try {
    const path = `/text/session/${encodeURIComponent(turn.sessionId)}/turns/${encodeURIComponent(turn.id)}`;
    await api("DELETE", path);
  } catch (error) {
    turn.stopping = false;
    if (state.turn === turn) {
      $("stop").disabled = false;
      turnState("");
    }
    throw error;
  }
}

async function sendToolOutputs() {
  const toolOutputs = [...$("tool-call-list").querySelectorAll("textarea")].map((field) => {
    let output = field.value;
    try {
      output = JSON.parse(field.value);
    } catch {
      // plain text is sent as a string
    }
    if (output === null || output === "") {
      throw new Error(`Tool output for ${field.dataset.callId}: must not be empty`);
    }
    return { callId: field.dataset.callId, output };
  });
  const { session } = await api("POST", sessionPath("/tool-output"), { toolOutputs });
  showToolCalls([]);
  renderSession(session);
  turnState("tool output recorded: send a message to continue");
}

async function reload() {
  if (!state.session) return;
  const { session } = await api("GET", sessionPath());
  renderSession(session);
}

// What the page knew of the turns of the session it showed before.
function forgetTurns() {
  if (state.replay) state.replay.close();
  state.replay = null;
  state.lastTurnId = null;
  $("replay-turn").value = "";
  $("replay-log").textContent = "";
  turnState("");
}

// Replays a turn with EventSource. With API keys on, EventSource cannot send the key:
// the page asks for an events token of the session and puts that in the URL.
async function replay() {
  if (state.replay) state.replay.close();
  const turnId = $("replay-turn").value.trim() || state.lastTurnId;
  if (!turnId) throw new Error("No turn to replay yet: send a message first");
  let url = sessionPath(`/turns/${encodeURIComponent(turnId)}/events`);
  if (state.key) {
    const { token } = await api("POST", sessionPath("/events/token"));
    url += `?access_token=${encodeURIComponent(token)}`;
  }
  const log = $("replay-log");
  log.textContent = `replaying turn ${turnId}\n`;
  const source = new EventSource(url);
  state.replay = source;
  const names = ["turn.waiting", "turn.started", "text.delta", "tool_call",
    "turn.completed", "turn.failed", "turn.cancelled"];
  for (const name of names) {
    source.addEventListener(name, (event) => {
      const data = JSON.parse(event.data);
      const shown = name === "text.delta" ? JSON.stringify(data.text) : "";
      log.textContent += `${event.lastEventId} ${name} ${shown}\n`;
      if (name.startsWith("turn.") && name !== "turn.started" && name !== "turn.waiting") {
        source.close();
        log.textContent += "— end of the turn\n";
        log.dataset.done = "true";
      }
    });
  }
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED && log.dataset.done !== "true") {
      log.textContent += "— the service closed the replay (turn gone, or not allowed)\n";
    }
  });
  delete log.dataset.done;
}

// ---------------------------------------------------------------- status poll

function startPolling() {
  stopPolling();
  state.poll = setInterval(() => {
    if (!state.session || document.hidden) return;
    const shown = state.session.id;
    api("GET", sessionPath())
      .then(({ session }) => {
        // An answer about a session no longer shown, or older than what is, is dropped.
        if (!state.session || state.session.id !== shown) return;
        if (session.version > state.session.version && !state.streaming) renderSession(session);
        else if (session.version >= state.session.version) renderStatus(session.status);
      })
      .catch(() => {
        // the next poll tries again; errors of the user's own actions are shown
      });
  }, 1000);
}

function stopPolling() {
  if (state.poll) clearInterval(state.poll);
  state.poll = null;
}

// ---------------------------------------------------------------- wiring

// Runs an action, showing its failure plainly.
function run(action) {
  clearError();
  return Promise.resolve()
    .then(action)
    .catch(showError);
}

function on(id, type, action) {
  $(id).addEventListener(type, (event) => {
    // At once: a form submitted from a script must not be sent by the browser too.
    if (type === "submit") event.preventDefault();
    run(() => action(event));
  });
}

on("create-form", "submit", createSession);
on("open-form", "submit", () => openSession($("open-id").value.trim()));
on("refresh-sessions", "click", refreshSessions);
on("delete-session", "click", deleteSession);
on("message-form", "submit", send);
on("stop", "click", stop);
on("tool-form", "submit", sendToolOutputs);
on("replay", "click", replay);
$("error-close").addEventListener("click", clearError);
$("api-key").addEventListener("input", (event) => {
  state.key = event.target.value.trim();
});
$("message").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    $("message-form").requestSubmit();
  }
});
refreshSessions().catch(() => {
  // with API keys on, the list needs the key: it is read again on "refresh"
});
