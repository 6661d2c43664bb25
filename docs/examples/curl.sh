#!/usr/bin/env bash
# A conversation with curl (and jq to pick fields out of the answers).
set -euo pipefail
BASE_URL=${BASE_URL:-http://127.0.0.1:8080}
AUTH="authorization: Bearer ${API_KEY:-}" # ignored by a service without API keys
post() { curl -sS --fail-with-body -H "$AUTH" -H 'content-type: application/json' -d "$2" "$BASE_URL$1"; }

# A session, then a message: the answer carries the reply and the whole history.
ID=$(post /text/session '{"instructions": "You are terse."}' | jq -r .session.id)
post "/text/session/$ID/message" '{"content": "Hello there"}' | jq -r .result.text

# The same, streamed as Server-Sent Events (-N: print each event as it comes).
curl -sS -N --fail-with-body -H "$AUTH" -H 'content-type: application/json' \
    -d '{"content": "Stream this", "stream": true}' "$BASE_URL/text/session/$ID/message" \
    | grep '^event:'

# The history, then the session is deleted.
curl -sS --fail-with-body -H "$AUTH" "$BASE_URL/text/session/$ID" \
    | jq -r '.session.messages[] | "\(.role): \(.content)"'
curl -sS --fail-with-body -H "$AUTH" -X DELETE "$BASE_URL/text/session/$ID" | jq -c .
