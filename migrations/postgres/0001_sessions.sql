-- Sessions and their histories. A history is append-only: one row per message keyed by
-- (session_id, seq); a commit adds rows and moves the session's version, and never
-- rewrites a row it did not add. JSON is kept as TEXT: exactly as written, key order
-- included, so an answer rendered from it is the same bytes as before.
CREATE TABLE sessions (
    id          UUID PRIMARY KEY,
    -- The SHA-256 digest (hex) of the API key that owns it; NULL without API keys.
    owner       TEXT,
    provider    TEXT NOT NULL,
    model       TEXT NOT NULL,
    defaults    TEXT NOT NULL,  -- JSON
    tools       TEXT NOT NULL,  -- JSON
    metadata    TEXT NOT NULL,  -- JSON
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    version     BIGINT NOT NULL,
    messages    BIGINT NOT NULL  -- how many rows `messages` holds for it
);

CREATE INDEX sessions_by_owner ON sessions (owner, created_at, id);

CREATE TABLE messages (
    session_id    UUID NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq           BIGINT NOT NULL,
    role          TEXT NOT NULL,
    content       TEXT NOT NULL,
    tool_calls    TEXT,           -- JSON, only on assistant messages that called tools
    tool_call_id  TEXT,
    interrupted   BOOLEAN NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (session_id, seq)
);
