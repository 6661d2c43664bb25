// A conversation with openapi-fetch and the types openapi-typescript generates from
// openapi/openapi.json (`npx openapi-typescript openapi/openapi.json -o schema.d.ts`);
// compiled with tsc --strict.
import createClient from "openapi-fetch";
import type { paths } from "./schema.js";

const apiKey = process.env.API_KEY;
const api = createClient<paths, "application/json">({
  baseUrl: process.env.BASE_URL ?? "http://127.0.0.1:8080",
  headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {},
});

const created = await api.POST("/text/session", {
  body: {
    instructions: "You are terse.",
    tools: [{ name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } }],
  },
});
if (!created.data) throw new Error(`create: ${created.error.error.message}`);
const id = created.data.session.id;

const reply = await api.POST("/text/session/{id}/message", {
  params: { path: { id } },
  body: { content: "Hello there" },
});
if (!reply.data) throw new Error(`message: ${reply.error.error.code}`);
console.log(reply.data.result.text, `(${reply.data.session.messages?.length} messages)`);
for (const call of reply.data.result.toolCalls) {
  await api.POST("/text/session/{id}/tool-output", {
    params: { path: { id } },
    body: { callId: call.id, output: { temperature: 21 } },
  });
}

await api.DELETE("/text/session/{id}", { params: { path: { id } } });
