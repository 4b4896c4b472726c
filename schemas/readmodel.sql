-- The intake's read model (producer/readmodel.c): the latest status
-- document per connection, materialised from the compacted status topic
-- (read_committed), with the per-partition offsets stored in the same
-- SQLite transaction as the rows, so a restart resumes where it stopped
-- and a deleted file is rebuilt from the topic. A cache: Kafka is the truth.
-- doc is the public document (no platform metadata); meta holds the
-- platform's end_user/organization/tags (JSON, NULL when none) and the
-- columns after it index the platform's list (GET /v1/connections).
-- An older version of this file is dropped and rebuilt from the topic.
-- migrate: 2
CREATE TABLE status (
    id TEXT NOT NULL PRIMARY KEY,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    meta TEXT,
    provider TEXT,
    state TEXT,
    end_user_id TEXT,
    organization_id TEXT
);
CREATE INDEX status_end_user ON status (end_user_id, id);
CREATE INDEX status_organization ON status (organization_id, id);
CREATE TABLE offsets (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
PRAGMA user_version = 2;
