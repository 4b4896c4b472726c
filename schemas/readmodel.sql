-- The intake's read model (producer/readmodel.c): the latest status
-- document per connection, materialised from the compacted status topic
-- (read_committed), with the per-partition offsets stored in the same
-- SQLite transaction as the rows, so a restart resumes where it stopped
-- and a deleted file is rebuilt from the topic. A cache: Kafka is the truth.
-- migrate: 1
CREATE TABLE status (
    id TEXT NOT NULL PRIMARY KEY,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE TABLE offsets (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
PRAGMA user_version = 1;
