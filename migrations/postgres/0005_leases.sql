-- Which process serves a session: one owner per session across processes. A process
-- takes a session's lease when it makes the session live (the epoch moves on whenever
-- the lease changes hands), renews it while the session stays live there, and lets it
-- lapse at once when the session leaves memory or the process stops. A row is never
-- deleted while its session lives, so an epoch never comes back: every commit is
-- conditional on the epoch its process took, and one that lost the lease commits
-- nothing. Times are the database's own clock.
CREATE TABLE leases (
    session_id  UUID PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    instance    UUID NOT NULL,      -- the process holding it (a new id at each start)
    addr        TEXT NOT NULL,      -- where other processes reach it (INSTANCE_ADDR)
    epoch       BIGINT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX leases_by_instance ON leases (instance);
