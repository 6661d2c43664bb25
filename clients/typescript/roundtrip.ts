// One conversation through the TypeScript client generated from openapi/openapi.json
// (openapi-typescript types + openapi-fetch), against a running service: create with a
// tool, a message, every body form of tool-output and instructions, get, list, a fork,
// a streamed message, delete. Compiled with `tsc --strict` (no casts); exits non-zero
// on the first surprise.
//
//   BASE_URL=http://127.0.0.1:8080 node dist/roundtrip.js

import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type Tool = components["schemas"]["Tool"];

function check(condition: boolean, what: string): void {
  if (!condition) {
    console.error(`roundtrip (typescript): ${what}`);
    process.exit(1);
  }
}

async function main(): Promise<void> {
  // JSON answers only: a write's `text/event-stream` form is read below, by hand.
  const client = createClient<paths, "application/json">({
    baseUrl: process.env.BASE_URL ?? "http://127.0.0.1:8080",
  });

  const tool: Tool = {
    type: "function",
    name: "get_weather",
    description: "Current weather",
    parameters: {
      type: "object",
      properties: { city: { type: "string" } },
      required: ["city"],
    },
  };
  const created = await client.POST("/text/session", {
    body: { instructions: "Be brief.", tools: [tool] },
  });
  if (!created.data) throw new Error(`create: ${JSON.stringify(created.error)}`);
  const id = created.data.session.id;
  check(created.data.session.tools[0]?.name === "get_weather", "the tool comes back");
  const path = { params: { path: { id } } };

  const reply = await client.POST("/text/session/{id}/message", {
    ...path,
    body: { content: "Hello" },
  });
  if (!reply.data) throw new Error(`message: ${JSON.stringify(reply.error)}`);
  check(reply.data.result.text === "echo: Hello", `the reply: ${reply.data.result.text}`);
  check(reply.data.session.messages?.length === 3, "the whole history comes back");
  check(reply.data.session.newMessages.length === 2, "and what the write appended");

  // Every body form of /tool-output; outputs of any JSON type.
  const outputs = [
    { toolOutputs: [{ callId: "c1", output: "sunny" }] },
    [{ callId: "c2", output: { temperature: 21 } }],
    { callId: "c3", output: [1, 2, 3] },
  ];
  for (const body of outputs) {
    const written = await client.POST("/text/session/{id}/tool-output", { ...path, body });
    if (!written.data) throw new Error(`tool-output: ${JSON.stringify(written.error)}`);
  }
  // Every body form of /instructions.
  const instructions = [
    { instructions: "Answer in French." },
    "Answer in English.",
    ["Be kind.", "Be brief."],
  ];
  for (const body of instructions) {
    const written = await client.POST("/text/session/{id}/instructions", { ...path, body });
    if (!written.data) throw new Error(`instructions: ${JSON.stringify(written.error)}`);
  }

  const got = await client.GET("/text/session/{id}", path);
  if (!got.data) throw new Error(`get: ${JSON.stringify(got.error)}`);
  const contents = got.data.session.messages.map((m) => m.content);
  check(contents.includes('Tool output (c2): {"temperature":21}'), `the outputs: ${contents}`);
  check(got.data.session.version === 8, `eight commits: ${got.data.session.version}`);

  const listed = await client.GET("/text/sessions");
  if (!listed.data) throw new Error(`list: ${JSON.stringify(listed.error)}`);
  check(listed.data.sessions.some((s) => s.id === id), "the session is listed");

  const forked = await client.POST("/text/session/{id}/fork", { ...path, body: { upTo: 2 } });
  if (!forked.data) throw new Error(`fork: ${JSON.stringify(forked.error)}`);
  check(forked.data.session.messages.length === 2, "the fork starts with the first two");
  check(forked.data.session.forkedFrom?.upTo === 2, "and says where it came from");

  // A streamed message: Server-Sent Events, read as a stream.
  const streamed = await client.POST("/text/session/{id}/message", {
    ...path,
    body: { content: "Stream this", stream: true },
    parseAs: "stream",
  });
  check(streamed.response.status === 200 && streamed.data !== undefined, "stream");
  const text = await new Response(streamed.data ?? null).text();
  const names = text
    .split("\n")
    .filter((line) => line.startsWith("event: "))
    .map((line) => line.slice("event: ".length));
  check(names[0] === "turn.started" && names.at(-1) === "turn.completed", `events: ${names}`);

  const deleted = await client.DELETE("/text/session/{id}", path);
  check(deleted.response.status === 200, `delete: ${deleted.response.status}`);
  const gone = await client.GET("/text/session/{id}", path);
  check(gone.response.status === 404 && gone.error?.error.code === "session_not_found", "gone");
  console.log("roundtrip (typescript): ok");
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
