-- When a session was last read or written, for idle expiry of sessions that are not in
-- memory: set by every commit, and when a session leaves memory (its last read).
ALTER TABLE sessions ADD COLUMN active_at TIMESTAMPTZ;
UPDATE sessions SET active_at = updated_at;
ALTER TABLE sessions ALTER COLUMN active_at SET NOT NULL;
CREATE INDEX sessions_by_activity ON sessions (active_at);
