// The playground and the API reference in a real browser: Debian's Chromium driven by
// playwright-core (no browser download). Starts the service itself, with API keys on
// and two providers: echo (streamed word by word, slowly enough to press stop) and
// "mock", an OpenAI-compatible endpoint served here that calls a tool (or fails).
// Every request outside the service is cut off. Checks: /docs renders; the playground's
// errors, a streamed conversation, instructions, stop during a slow reply, an EventSource
// replay with keys on, a waiting write taken back, a failed turn, a tool call and its
// output; then the README's fetch example runs in the browser (its EventSource part).
//
//     node playground.mjs <path to text-session-api> <directory for screenshots> <docs/examples/fetch.mjs>
//
// Exits non-zero on the first check that fails; the page's screenshot at that moment
// is kept in the screenshot directory as failure.png.

import { spawn } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import http from "node:http";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const [binary, shots, fetchExample] = process.argv.slice(2);
if (!binary || !shots || !fetchExample) {
  console.error("usage: node playground.mjs <text-session-api binary> <screenshot dir> <docs/examples/fetch.mjs>");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const API_KEY = "playground-test-key";
const WORD_DELAY_MS = 120;
const LONG = Array.from({ length: 60 }, (_, i) => `word${i + 1}`).join(" ");

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

// ------------------------------------------------------------ the mock provider

// Chat Completions, streamed or not: with tools and a user asking about the weather it
// calls get_weather; after a tool output it answers from it; asked to fail, it answers
// 500; otherwise it echoes.
function mockReply(body) {
  const messages = body.messages ?? [];
  const last = messages[messages.length - 1] ?? {};
  if (/please fail/.test(String(last.content))) return { fail: true };
  const toolOutput = [...messages].reverse().find((m) => m.role === "tool");
  if (toolOutput && last.role !== "tool" && /again|now/i.test(String(last.content))) {
    return { text: `Still ${toolOutput.content} in Paris.` };
  }
  if ((body.tools ?? []).length && /weather/i.test(String(last.content))) {
    return {
      toolCall: { id: "call_weather_1", name: "get_weather", arguments: '{"city":"Paris"}' },
    };
  }
  return { text: `mock: ${last.content}` };
}

function startMock() {
  const server = http.createServer((req, res) => {
    let raw = "";
    req.on("data", (chunk) => (raw += chunk));
    req.on("end", () => {
      if (req.method !== "POST" || !req.url.endsWith("/chat/completions")) {
        res.writeHead(404).end();
        return;
      }
      const body = JSON.parse(raw);
      const reply = mockReply(body);
      if (reply.fail) {
        res.writeHead(500, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: { message: "the mock was asked to fail", type: "server_error" } }));
        return;
      }
      const usage = { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 };
      const finish = reply.toolCall ? "tool_calls" : "stop";
      const toolCalls = reply.toolCall
        ? [{ index: 0, id: reply.toolCall.id, type: "function",
             function: { name: reply.toolCall.name, arguments: reply.toolCall.arguments } }]
        : undefined;
      const base = { id: "chatcmpl-1", object: "chat.completion", created: 0, model: body.model };
      if (!body.stream) {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({
          ...base,
          choices: [{ index: 0, finish_reason: finish,
                      message: { role: "assistant", content: reply.text ?? null, tool_calls: toolCalls } }],
          usage,
        }));
        return;
      }
      res.writeHead(200, { "content-type": "text/event-stream" });
      const chunk = (delta, finishReason, extra = {}) =>
        res.write(`data: ${JSON.stringify({ ...base, object: "chat.completion.chunk",
          choices: [{ index: 0, delta, finish_reason: finishReason }], ...extra })}\n\n`);
      chunk({ role: "assistant" }, null);
      if (reply.text) for (const word of reply.text.split(/(?= )/)) chunk({ content: word }, null);
      if (toolCalls) chunk({ tool_calls: toolCalls }, null);
      chunk({}, finish);
      res.write(`data: ${JSON.stringify({ ...base, object: "chat.completion.chunk", choices: [], usage })}\n\n`);
      res.end("data: [DONE]\n\n");
    });
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

// ------------------------------------------------------------ the service

function startService(mockPort) {
  const child = spawn(binary, ["--bind", "127.0.0.1:0"], {
    env: {
      PATH: process.env.PATH,
      API_KEYS: API_KEY,
      STORE: "memory",
      DEFAULT_PROVIDER: "echo",
      ECHO_STREAM_DELAY_MS: String(WORD_DELAY_MS),
      OPENAI_COMPATIBLE: `mock=http://127.0.0.1:${mockPort}/v1`,
      MOCK_DEFAULT_MODEL: "mock-1",
      PROVIDER_MAX_RETRIES: "0",
      RUST_LOG: "error",
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    child.on("exit", (code) => reject(new Error(`the service exited (${code})`)));
    createInterface({ input: child.stdout }).on("line", (line) => {
      const url = line.match(/http:\/\/[0-9.]+:[0-9]+/);
      if (url) resolve({ child, base: url[0] });
    });
  });
}

async function apiGet(base, path) {
  const response = await fetch(base + path, { headers: { authorization: `Bearer ${API_KEY}` } });
  return response.json();
}

function apiPost(base, path, body, accept = "application/json") {
  return fetch(base + path, {
    method: "POST",
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json", accept },
    body: JSON.stringify(body),
  });
}

const turnStateIs = (page, pattern) =>
  page.waitForFunction((source) => new RegExp(source).test(document.getElementById("turn-state").textContent),
    pattern.source, { timeout: 15000 });

// ------------------------------------------------------------ the checks

async function docsRenderOffline(page, base) {
  await page.goto(`${base}/docs/`);
  await page.locator(".swagger-ui .info .title").waitFor({ timeout: 15000 });
  const title = await page.locator(".swagger-ui .info .title").innerText();
  check(title.includes("text-session-api"), `/docs renders the API reference (title: ${title.split("\n")[0]})`);
  const operations = await page.locator(".opblock").count();
  check(operations >= 15, `/docs lists the operations (${operations})`);
  await page.screenshot({ path: `${shots}/docs.png` });
}

async function errorsShownPlainly(page) {
  await page.click("#refresh-sessions");
  await page.locator("#error").waitFor({ state: "visible" });
  const text = await page.locator("#error-text").innerText();
  check(/401 unauthorized/.test(text), `without the key the page says so plainly: "${text}"`);
  await page.fill("#api-key", API_KEY);
  await page.click("#refresh-sessions");
  await page.locator("#error").waitFor({ state: "hidden" });
  check(true, "with the key typed in, the same call succeeds and the error goes");

  await page.fill("#provider", "no-such-provider");
  await page.click("#create");
  await page.locator("#error").waitFor({ state: "visible" });
  const unknown = await page.locator("#error-text").innerText();
  check(/400 invalid_request/.test(unknown) && /no-such-provider/.test(unknown),
    `an unknown provider is a plain error: "${unknown}"`);
}

async function streamedConversation(page, base) {
  await page.fill("#provider", "echo");
  await page.fill("#instructions", "You are terse.");
  await page.click("#create");
  await page.locator("#session").waitFor({ state: "visible" });
  const sessionId = await page.locator("#session-id").innerText();
  check(/^[0-9a-f-]{36}$/.test(sessionId), `a session was created (${sessionId})`);

  await page.fill("#message", "Hello there, how are you today?");
  await page.click("#send");
  const final = "echo: Hello there, how are you today?";
  // Part of the reply is on the page before all of it: it streams.
  await page.waitForFunction((full) => {
    const live = document.querySelector(".streaming .content");
    return live && live.textContent.length > 0 && live.textContent.length < full.length;
  }, final, { timeout: 10000 });
  check(true, "the reply appears word by word while it streams");
  await page.waitForFunction(() => /^done/.test(document.getElementById("turn-state").textContent),
    null, { timeout: 15000 });
  const last = await page.locator(".history .role-assistant .content").last().innerText();
  check(last === final, `the streamed reply is whole in the history: "${last}"`);

  // Instructions, sent with Ctrl+Enter: the page stays (no form is posted by the browser).
  const navigations = [];
  page.on("framenavigated", (frame) => frame === page.mainFrame() && navigations.push(frame.url()));
  await page.check("#as-instructions");
  await page.fill("#message", "Answer in French.");
  await page.press("#message", "Control+Enter");
  await turnStateIs(page, /^done/);
  await page.uncheck("#as-instructions");
  const roles = await page.locator(".history .role").allTextContents();
  check(roles.join(",") === "system,user,assistant,system,assistant",
    `instructions are a system message and run a turn (${roles.join(",")})`);
  check(navigations.length === 0, "Ctrl+Enter sent the message without the page going anywhere");
  return sessionId;
}

async function stopSlowReply(page, base, sessionId) {
  await page.fill("#message", LONG);
  await page.click("#send");
  await page.waitForFunction(() => {
    const live = document.querySelector(".streaming .content");
    return live && live.textContent.split(" ").length >= 4;
  }, null, { timeout: 10000 });
  await page.waitForFunction(() => document.getElementById("status-busy").textContent === "busy",
    null, { timeout: 5000 });
  check(true, "the session shows busy while the reply streams");
  await page.click("#stop");
  await page.waitForFunction(() => /^stopped/.test(document.getElementById("turn-state").textContent),
    null, { timeout: 10000 });
  await page.waitForFunction(() => document.getElementById("status-busy").textContent === "idle",
    null, { timeout: 5000 });
  const role = await page.locator(".history .role-assistant .role").last().innerText();
  const kept = await page.locator(".history .role-assistant .content").last().innerText();
  check(/stopped/i.test(role), "the stopped reply is marked stopped in the history");
  check(kept.length > 0 && kept.length < `echo: ${LONG}`.length, `only part of the reply was kept (${kept.split(" ").length} words)`);
  const { session } = await apiGet(base, `/text/session/${sessionId}`);
  const stored = session.messages[session.messages.length - 1];
  check(stored.interrupted === true && stored.content === kept,
    "the service holds the same partial reply, interrupted");
}

async function takeBackAWaitingWrite(page, base, sessionId) {
  // Another client holds the turn lock with a slow reply; the page's message waits.
  const holder = await apiPost(base, `/text/session/${sessionId}/message`,
    { content: LONG, stream: true }, "text/event-stream");
  const holderTurn = holder.headers.get("x-turn-id");
  await page.fill("#message", "I will be taken back");
  await page.click("#send");
  await turnStateIs(page, /^waiting for the turn lock \(position 1\)/);
  check(true, "the page shows its message waiting for the turn lock");
  await page.waitForFunction(() => document.getElementById("status-waiting").textContent === "1",
    null, { timeout: 5000 });
  check(true, "the session shows one writer waiting");
  await page.click("#stop");
  await turnStateIs(page, /^taken back before it ran/);
  check(await page.inputValue("#message") === "I will be taken back",
    "a message taken back before it ran goes back into the box");
  const cancel = await fetch(`${base}/text/session/${sessionId}/turns/${holderTurn}`,
    { method: "DELETE", headers: { authorization: `Bearer ${API_KEY}` } });
  check(cancel.ok, "the other client's turn is cancelled");
  await holder.text();
  await page.fill("#message", "");
  const { session } = await apiGet(base, `/text/session/${sessionId}`);
  check(!session.messages.some((m) => m.content === "I will be taken back"),
    "the service never wrote the message taken back");
}

async function replayWithEventSource(page) {
  // The last turn (the stopped one) replayed by EventSource: with keys on, the page
  // fetches an events token and puts it in the URL, never the key.
  const requests = [];
  page.on("request", (request) => requests.push(request.url()));
  await page.click("#replay-panel summary");
  await page.click("#replay");
  await page.waitForFunction(() => document.getElementById("replay-log").dataset.done === "true",
    null, { timeout: 10000 });
  const log = await page.locator("#replay-log").innerText();
  check(/text\.delta/.test(log) && /turn\.cancelled/.test(log),
    "the turn is replayed by EventSource, from its first delta to turn.cancelled");
  const replayed = requests.find((url) => url.includes("/events?access_token="));
  check(replayed !== undefined, "the replay carried an events token in its URL");
  check(requests.every((url) => !url.includes(API_KEY)), "the API key never went into a URL");
}

async function toolCall(page, base) {
  await page.fill("#provider", "mock");
  await page.fill("#instructions", "");
  await page.fill("#tools", JSON.stringify([{
    name: "get_weather", description: "Weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } } },
  }]));
  await page.click("#create");
  await page.waitForFunction(() => /mock/.test(document.getElementById("session-model").textContent));
  const sessionId = await page.locator("#session-id").innerText();

  // A provider that fails: the error is shown, nothing is written, the message is kept.
  await page.fill("#message", "please fail");
  await page.click("#send");
  await turnStateIs(page, /^failed: nothing was written/);
  const error = await page.locator("#error-text").innerText();
  check(/turn failed · provider_error/.test(error), `a failed turn is shown plainly: "${error}"`);
  check(await page.inputValue("#message") === "please fail", "the failed message is back in the box");
  check(await page.locator(".history .message").count() === 0, "and the history is as it was");
  await page.click("#error-close");

  await page.fill("#message", "What is the weather in Paris?");
  await page.click("#send");
  await page.locator("#tool-calls").waitFor({ state: "visible", timeout: 10000 });
  const call = await page.locator("#tool-call-list .call").innerText();
  check(call.includes("get_weather") && call.includes("Paris"), `the model's tool call is shown: ${call}`);
  await page.fill('#tool-call-list textarea[data-call-id="call_weather_1"]', '{"temperature": 21}');
  await page.click("#send-tool-output");
  await page.locator("#tool-calls").waitFor({ state: "hidden" });
  await page.locator(".history .message", { hasText: "tool output" }).waitFor();
  check(true, "the tool output is posted and shown in the history");
  await page.fill("#message", "And now?");
  await page.click("#send");
  await page.waitForFunction(() => /^done/.test(document.getElementById("turn-state").textContent),
    null, { timeout: 10000 });
  const answer = await page.locator(".history .role-assistant .content").last().innerText();
  check(answer.includes("21"), `the model answered from the tool output: "${answer}"`);
  const { session } = await apiGet(base, `/text/session/${sessionId}`);
  check(session.messages.map((m) => m.role).join(",") === "user,assistant,system,user,assistant",
    "the history holds the call, its output and the answer");
}

// The README's fetch example, run in the browser with keys on: its EventSource part
// (skipped in Node) replays the streamed turn with an events token.
async function fetchExampleInTheBrowser(browser, base) {
  const context = await browser.newContext({ bypassCSP: true });
  const page = await context.newPage();
  const logged = [];
  const failures = [];
  page.on("console", (message) => logged.push(message.text()));
  page.on("pageerror", (error) => failures.push(error.message));
  await page.goto(`${base}/healthz`);
  await page.evaluate(([url, key]) => {
    globalThis.process = { env: { BASE_URL: url, API_KEY: key } };
  }, [base, API_KEY]);
  const source = readFileSync(fetchExample, "utf8");
  await page.addScriptTag({ type: "module", content: `${source}\nconsole.log("example finished");` });
  await page.waitForFunction(() => true);
  for (let i = 0; i < 100 && !logged.includes("example finished") && !failures.length; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await context.close();
  check(failures.length === 0, `the fetch example ran in the browser (${failures.join("; ") || "no error"})`);
  check(logged.includes("example finished"), "the fetch example finished");
  check(logged.some((line) => line.startsWith("replayed:")),
    `its EventSource replayed the streamed turn with an events token (${logged.filter((l) => l.startsWith("replayed:")).length} deltas)`);
}

// ------------------------------------------------------------ run

const mock = await startMock();
const service = await startService(mock.address().port);
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let page;
let failed = false;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  // The network is cut off: only the service itself can be reached.
  const origin = new URL(service.base).origin;
  const blocked = [];
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (new URL(url).origin === origin) return route.continue();
    blocked.push(url);
    return route.abort("internetdisconnected");
  });
  page = await context.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  // The failed requests the checks make on purpose, by status and path; any other is a
  // problem.
  // (the page lists sessions when it loads, before a key is typed in: the first 401).
  const expected = ["401 /text/sessions", "401 /text/sessions", "400 /text/session"];
  page.on("response", (response) => {
    if (response.status() < 400) return;
    const seen = `${response.status()} ${new URL(response.url()).pathname}`;
    const at = expected.indexOf(seen);
    if (at >= 0) expected.splice(at, 1);
    else problems.push(`unexpected answer: ${seen}`);
  });
  page.on("console", (message) => {
    if (message.type() === "error" && !/^Failed to load resource/.test(message.text())) {
      problems.push(`console: ${message.text()}`);
    }
  });

  await docsRenderOffline(page, service.base);
  check(blocked.length === 0, `/docs asked for nothing outside the service (${blocked.join(", ") || "none"})`);

  const response = await page.goto(`${service.base}/`);
  const csp = response.headers()["content-security-policy"] ?? "";
  check(/default-src 'none'/.test(csp) && /script-src 'self'/.test(csp), "the playground is served with a strict CSP");
  await errorsShownPlainly(page);
  const sessionId = await streamedConversation(page, service.base);
  await stopSlowReply(page, service.base, sessionId);
  await replayWithEventSource(page);
  await page.screenshot({ path: `${shots}/playground.png`, fullPage: true });
  console.log(`screenshot: ${shots}/playground.png (a streamed reply and a stopped one)`);
  await takeBackAWaitingWrite(page, service.base, sessionId);
  await toolCall(page, service.base);
  await page.screenshot({ path: `${shots}/playground-tools.png`, fullPage: true });
  console.log(`screenshot: ${shots}/playground-tools.png (a tool call and its output)`);

  await fetchExampleInTheBrowser(browser, service.base);

  check(blocked.length === 0, `nothing outside the service was asked for (${blocked.join(", ") || "none"})`);
  check(problems.length === 0, `no script error and no CSP violation (${problems.join("; ") || "none"})`);
} catch (error) {
  failed = true;
  console.error(error.stack ?? String(error));
  if (page) await page.screenshot({ path: `${shots}/failure.png`, fullPage: true }).catch(() => {});
} finally {
  await browser.close();
  service.child.removeAllListeners("exit");
  service.child.kill("SIGTERM");
  mock.close();
}
process.exit(failed ? 1 : 0);
