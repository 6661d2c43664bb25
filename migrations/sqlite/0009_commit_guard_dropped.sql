-- A commit no longer goes to SQLite as one text of statements: its move of the session's
-- version is its guard (nothing else is written when it changed no row), so the table
-- whose CHECK stopped a text part way goes.
DROP TABLE commit_guard;
