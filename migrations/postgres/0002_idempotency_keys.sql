-- `Idempotency-Key` records, per API key: what the first request was, the turn it
-- committed (written in that turn's own transaction, so a retry after a crash never runs
-- it twice) and, once kept, its answer. Not tied to the session: an answer outlives a
-- deleted session (its replay is then 404). Rows older than the key TTL are swept.
CREATE TABLE idempotency_keys (
    owner        TEXT NOT NULL,   -- the API key's digest (hex); '' without API keys
    key          TEXT NOT NULL,
    route        TEXT NOT NULL,
    body_digest  BYTEA NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    turn         TEXT,            -- JSON: the committed turn, if one committed
    status       BIGINT,          -- the answer, once kept
    headers      TEXT,            -- JSON
    body         BYTEA,           -- all of it, or what stands before the history
    history_session UUID,
    history_len  BIGINT,
    body_after   BYTEA,           -- what stands after the history
    PRIMARY KEY (owner, key)
);

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
