-- `Idempotency-Key` records, per API key: what the first request was, the turn it
-- committed (written in that turn's own transaction, so a retry after a crash never runs
-- it twice) and, once kept, its answer. Not tied to the session: an answer outlives a
-- deleted session (its replay is then 404). Rows older than the key TTL are swept.
CREATE TABLE idempotency_keys (
    owner        TEXT NOT NULL,   -- the API key's digest (hex); '' without API keys
    key          TEXT NOT NULL,
    route        TEXT NOT NULL,
    body_digest  BLOB NOT NULL,
    created_at   TEXT NOT NULL,   -- RFC 3339
    turn         TEXT,            -- JSON: the committed turn, if one committed
    status       INTEGER,         -- the answer, once kept
    headers      TEXT,            -- JSON
    body         BLOB,            -- all of it, or what stands before the history
    history_session TEXT,
    history_len  INTEGER,
    body_after   BLOB,            -- what stands after the history
    PRIMARY KEY (owner, key)
) STRICT, WITHOUT ROWID;

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
