-- Sessions and their histories. A history is append-only: one row per message keyed by
-- (session_id, seq); a commit adds rows and moves the session's version, and never
-- rewrites a row it did not add.
CREATE TABLE sessions (
    id          TEXT PRIMARY KEY NOT NULL,
    -- The SHA-256 digest (hex) of the API key that owns it; NULL without API keys.
    owner       TEXT,
    provider    TEXT NOT NULL,
    model       TEXT NOT NULL,
    defaults    TEXT NOT NULL,  -- JSON
    tools       TEXT NOT NULL,  -- JSON
    metadata    TEXT NOT NULL,  -- JSON
    created_at  TEXT NOT NULL,  -- RFC 3339
    updated_at  TEXT NOT NULL,  -- RFC 3339
    version     INTEGER NOT NULL,
    messages    INTEGER NOT NULL  -- how many rows `messages` holds for it
) STRICT;

CREATE INDEX sessions_by_owner ON sessions (owner, created_at, id);

CREATE TABLE messages (
    session_id    TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq           INTEGER NOT NULL,
    role          TEXT NOT NULL,
    content       TEXT NOT NULL,
    tool_calls    TEXT,           -- JSON, only on assistant messages that called tools
    tool_call_id  TEXT,
    interrupted   INTEGER NOT NULL,
    created_at    TEXT NOT NULL,  -- RFC 3339
    PRIMARY KEY (session_id, seq)
) STRICT, WITHOUT ROWID;
