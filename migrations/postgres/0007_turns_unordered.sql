-- A session keeps few turn records (TURNS_KEEP + FAILED_TURNS_KEEP, a few hundred at
-- most), all under one prefix of the primary key: sorting them by time when they are
-- read or pruned costs less than keeping a second index in order on every commit.
DROP INDEX turns_in_order;
