-- Ended turn records: what `GET /text/session/{id}/turns` shows after a restart (the
-- dead-letter view included) and what a retry runs again. A committed turn's record is
-- written in its commit's transaction; a turn that committed nothing, when it ends.
-- Kept within the session's bounds (TURNS_KEEP, FAILED_TURNS_KEEP), pruned as it goes.
CREATE TABLE turns (
    session_id  UUID NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    id          UUID NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    status      TEXT NOT NULL,  -- completed, failed, cancelled or rejected
    record      TEXT NOT NULL,  -- JSON
    PRIMARY KEY (session_id, id)
);

CREATE INDEX turns_in_order ON turns (session_id, created_at, id);
