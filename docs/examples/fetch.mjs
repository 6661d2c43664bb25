// A conversation with fetch: the same code runs in a browser and in Node 18+.
const BASE_URL = globalThis.process?.env.BASE_URL ?? "http://127.0.0.1:8080";
const API_KEY = globalThis.process?.env.API_KEY ?? "";

async function call(method, path, body) {
  const headers = { "content-type": "application/json" };
  if (API_KEY) headers.authorization = `Bearer ${API_KEY}`;
  const response = await fetch(BASE_URL + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = await response.json();
  // Errors are {success: false, error: {code, message}} with a 4xx/5xx status.
  if (!response.ok) throw new Error(`${response.status} ${answer.error.code}: ${answer.error.message}`);
  return answer;
}

const { session } = await call("POST", "/text/session", { instructions: "You are terse." });
const reply = await call("POST", `/text/session/${session.id}/message`, { content: "Hello there" });
console.log(reply.result.text); // "echo: Hello there" with the echo provider

// A streamed reply: read the Server-Sent Events from the body as they arrive.
const headers = { "content-type": "application/json", accept: "text/event-stream" };
if (API_KEY) headers.authorization = `Bearer ${API_KEY}`;
const stream = await fetch(`${BASE_URL}/text/session/${session.id}/message`, {
  method: "POST",
  headers,
  body: JSON.stringify({ content: "Stream this" }),
});
const turnId = stream.headers.get("x-turn-id"); // known before the first event
let buffer = "";
for await (const chunk of stream.body.pipeThrough(new TextDecoderStream())) {
  buffer += chunk;
  let end;
  while ((end = buffer.indexOf("\n\n")) >= 0) {
    const event = Object.fromEntries(
      buffer.slice(0, end).split("\n").map((line) => [line.slice(0, line.indexOf(":")), line.slice(line.indexOf(":") + 2)]),
    );
    buffer = buffer.slice(end + 2);
    if (event.event === "text.delta") console.log("delta:", JSON.parse(event.data).text);
    if (event.event === "turn.completed") console.log("done:", JSON.parse(event.data).result.text);
  }
}

// In a browser, EventSource replays (or follows) that turn; it cannot send the API key,
// so with keys on it carries an events token of the session instead.
if (typeof EventSource !== "undefined") {
  let url = `${BASE_URL}/text/session/${session.id}/turns/${turnId}/events`;
  if (API_KEY) url += `?access_token=${(await call("POST", `/text/session/${session.id}/events/token`)).token}`;
  const source = new EventSource(url);
  source.addEventListener("text.delta", (e) => console.log("replayed:", JSON.parse(e.data).text));
  source.addEventListener("turn.completed", () => source.close());
}

await call("DELETE", `/text/session/${session.id}`);
