-- Forks share their source's rows instead of copying them. A fork's history is the
-- first `base_len` messages of `base_id` (read the same way, through its own base if it
-- has one) followed by its own rows (seq >= base_len). A session other sessions are
-- based on hands its rows to one of them when it is deleted, so a base is never
-- deleted from under a fork (the reference below refuses it).
ALTER TABLE sessions ADD COLUMN base_id UUID REFERENCES sessions (id);
ALTER TABLE sessions ADD COLUMN base_len BIGINT;
-- JSON {sessionId, version, upTo}: what the session was forked from, as the API shows it.
ALTER TABLE sessions ADD COLUMN forked_from TEXT;
CREATE INDEX sessions_by_base ON sessions (base_id) WHERE base_id IS NOT NULL;
