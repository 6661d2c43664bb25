-- Message rows in the order they are written, found by an index in each session's order.
-- `messages` was kept in (session_id, seq) order: each commit then inserted its rows into
-- the middle of the B-tree, at its session's place, and a full leaf there was split and
-- rebalanced with its neighbours (three leaves and their parent rewritten) every few
-- turns of a session, since a turn's rows with its record fill a sixth of a page. A
-- batch of many sessions' turns so wrote two or three leaves a turn and most of the
-- tree's inner pages. Rows now go at the end of a table ordered by when they were
-- written (SQLite's own rowid), where a batch's rows share their leaves, and
-- `messages_in_order` finds a session's rows in order with entries of a few dozen
-- bytes, whose leaves split far more seldom. Under load on 1,000 sessions
-- (bench/store_writes.py), 4.5 pages were written a turn before and 2.4 after. A
-- history read after a restart reads a page or so per turn instead of one per six
-- turns; such reads are rare.
CREATE TABLE messages_written (
    session_id       TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq              INTEGER NOT NULL,
    role             TEXT NOT NULL,
    content          TEXT NOT NULL,
    tool_calls       TEXT,           -- JSON, only on assistant messages that called tools
    tool_call_id     TEXT,
    interrupted      INTEGER NOT NULL,
    created_at       TEXT NOT NULL,  -- RFC 3339
    turn_id          TEXT,
    turn_created_at  TEXT,           -- RFC 3339
    turn_record      TEXT            -- JSON, as in `turns`.record
) STRICT;

INSERT INTO messages_written (session_id, seq, role, content, tool_calls, tool_call_id,
                              interrupted, created_at, turn_id, turn_created_at,
                              turn_record)
SELECT session_id, seq, role, content, tool_calls, tool_call_id, interrupted, created_at,
       turn_id, turn_created_at, turn_record
FROM messages ORDER BY session_id, seq;

DROP TABLE messages;
ALTER TABLE messages_written RENAME TO messages;
CREATE UNIQUE INDEX messages_in_order ON messages (session_id, seq);
