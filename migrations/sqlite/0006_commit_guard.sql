-- A commit goes to SQLite as one batch of statements, and the first of them is an
-- insert here: it inserts a row only when the session is not at the version and length
-- the commit started from, and the CHECK refuses any row. So a commit to a session that
-- moved (or is gone) stops at its first statement, having written nothing; the table
-- itself stays empty.
CREATE TABLE commit_guard (
    refused  TEXT,
    CONSTRAINT version_moved CHECK (refused IS NULL)
) STRICT;
