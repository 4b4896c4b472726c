-- worker-store.sql: schema of the worker state store (worker/store.c).
--
-- One SQLite file per assigned partition of the compacted `connections`
-- changelog topic: a local cache that may lag Kafka, never lead it. Rows are
-- written only after the Kafka transaction that produced them committed,
-- together with the changelog offset they correspond to. The store does not
-- interpret connection state: `record` is the full connections.v1 JSON text
-- (it holds encrypted secrets); the other columns are what the worker queries.
--
-- Versioning: PRAGMA user_version. This file is a sequence of migration
-- sections; each starts with a line "-- migrate: N" and ends with
-- "PRAGMA user_version = N;". A store at user_version V runs every section
-- N > V, in order, in one transaction, so running the whole file on an empty
-- database gives the current schema. A released section is never edited: a
-- change is a new section appended at the end.
--
-- The build embeds this file into the worker (scripts/embed-assets --text):
-- it is the text that runs.

-- migrate: 1
CREATE TABLE connections (
    id            TEXT    NOT NULL PRIMARY KEY,
    version       INTEGER NOT NULL,
    status        TEXT    NOT NULL,
    phase         TEXT,
    provider      TEXT    NOT NULL,
    retry_at_ms   INTEGER NOT NULL DEFAULT 0,
    claimed       INTEGER NOT NULL DEFAULT 0,
    record        TEXT    NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
-- Scheduled retries (0 = none): store_due, store_next_retry.
CREATE INDEX connections_retry_at ON connections (retry_at_ms) WHERE retry_at_ms > 0;
-- Open exchange claims (phase exchanging) found at takeover: store_claimed.
CREATE INDEX connections_claimed ON connections (claimed) WHERE claimed = 1;
-- Keys: 'topic' and 'partition' (the changelog partition this file caches,
-- written once when the file is created) and 'applied_offset' (the last
-- changelog offset applied, decimal; absent = none).
CREATE TABLE meta (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
PRAGMA user_version = 1;
