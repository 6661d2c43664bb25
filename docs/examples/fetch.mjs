// A conversation with fetch: the same code runs in a browser and in Node 18+.
const BASE_URL = globalThis.process?.env.BASE_URL ?? "http://127.0.0.1:8080";
const API_KEY = globalThis.process?.env.API_KEY ?? "";

function headers(extra) {
  return API_KEY ? { ...extra, authorization: `Bearer ${API_KEY}` } : extra;
}

// Errors are {success: false, error: {code, message}} with a 4xx or 5xx status.
async function failure(response) {
  const { error } = await response.json();
  return new Error(`${response.status} ${error.code}: ${error.message}`);
}

async function call(method, path, body) {
  const response = await fetch(BASE_URL + path, {
    method,
    headers: headers({ "content-type": "application/json" }),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw await failure(response);
  return response.json();
}

const { session } = await call("POST", "/text/session", { instructions: "You are terse." });
const reply = await call("POST", `/text/session/${session.id}/message`, { content: "Hello there" });
console.log(reply.result.text); // "echo: Hello there" with the echo provider

// A streamed reply: Server-Sent Events read from the body as they arrive.
const stream = await fetch(`${BASE_URL}/text/session/${session.id}/message`, {
  method: "POST",
  headers: headers({ "content-type": "application/json", accept: "text/event-stream" }),
  body: JSON.stringify({ content: "Stream this" }),
});
if (!stream.ok) throw await failure(stream); // refused before the turn: a JSON error
const turnId = stream.headers.get("x-turn-id"); // known before the first event
let buffer = "";
for await (const chunk of stream.body.pipeThrough(new TextDecoderStream())) {
  buffer += chunk;
  let end;
  while ((end = buffer.indexOf("\n\n")) >= 0) {
    const event = { event: "message", data: "" };
    for (const line of buffer.slice(0, end).split("\n")) {
      const colon = line.indexOf(":");
      event[line.slice(0, colon)] = line.slice(colon + 1).trimStart(); // one data line each
    }
    buffer = buffer.slice(end + 2);
    const data = JSON.parse(event.data);
    if (event.event === "text.delta") console.log("delta:", data.text);
    if (event.event === "turn.completed") console.log("done:", data.result.text);
    if (event.event === "turn.cancelled") console.log("stopped after:", data.result.text);
    if (event.event === "turn.failed") throw new Error(`${data.error.code}: ${data.error.message}`);
  }
}

// In a browser, EventSource replays (or follows) that turn. It cannot send the API key:
// with keys on, an events token of the session goes in the URL instead.
if (typeof EventSource !== "undefined") {
  let url = `${BASE_URL}/text/session/${session.id}/turns/${turnId}/events`;
  if (API_KEY) {
    const { token } = await call("POST", `/text/session/${session.id}/events/token`);
    url += `?access_token=${encodeURIComponent(token)}`;
  }
  await new Promise((resolve, reject) => {
    const source = new EventSource(url);
    source.addEventListener("text.delta", (e) => console.log("replayed:", JSON.parse(e.data).text));
    for (const end of ["turn.completed", "turn.failed", "turn.cancelled"]) {
      source.addEventListener(end, () => resolve(source.close()));
    }
    source.onerror = () => reject(new Error("the replay was refused or the connection dropped"));
  });
}

await call("DELETE", `/text/session/${session.id}`);
