-- One row the store writes to see that it can write again after a failure.
CREATE TABLE store_probe (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    at  TEXT NOT NULL  -- RFC 3339
) STRICT;
