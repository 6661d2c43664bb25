-- A completed turn's record goes on the first message row its commit adds instead of a
-- row of its own in `turns`: the commit writes that leaf anyway, and a leaf of `turns`
-- per turn was a third of the pages a commit wrote (BENCHMARKS.md). `turns` keeps the
-- records of turns that did not complete (failed, cancelled, rejected: those a retry
-- runs again), pruned as before; a session's completed records are read back newest
-- first, as many as it keeps. The columns are NULL on every other row, and on rows whose
-- record fell out of the session's bounds.
ALTER TABLE messages ADD COLUMN turn_id TEXT;
ALTER TABLE messages ADD COLUMN turn_created_at TEXT;  -- RFC 3339
ALTER TABLE messages ADD COLUMN turn_record TEXT;      -- JSON, as in `turns`.record
-- Records past a session's bounds are cleared from its rows when its records are pruned,
-- if `turns_on_rows` (how many its rows hold, counted by each commit) is past them: from
-- `turns_from` (where the last pruning stopped) up to the oldest record kept, so a
-- pruning reads only the records kept and the rows added since the one before.
ALTER TABLE sessions ADD COLUMN turns_from INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN turns_on_rows INTEGER NOT NULL DEFAULT 0;
