-- ftsweep serve's schema, version 1. Never edit a released migration: add a new file.
-- Objects are stored as their protocol JSON; `seq` orders them (newest = largest).

-- Uploaded files and result files, with their content.
CREATE TABLE files (
    seq        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    purpose    TEXT NOT NULL,
    object     TEXT NOT NULL,
    content    BLOB NOT NULL
);

-- Fine-tuning jobs; `provider_job` is the local provider's id of the current training attempt.
CREATE TABLE jobs (
    seq          INTEGER PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    provider_job TEXT,
    object       TEXT NOT NULL
);

CREATE TABLE events (
    seq    INTEGER PRIMARY KEY,
    id     TEXT NOT NULL UNIQUE,
    job_id TEXT NOT NULL,
    object TEXT NOT NULL
);
CREATE INDEX events_job ON events (job_id, seq);

-- Epoch checkpoints; only a job's last few epochs are kept.
CREATE TABLE checkpoints (
    seq    INTEGER PRIMARY KEY,
    id     TEXT NOT NULL UNIQUE,
    job_id TEXT NOT NULL,
    epoch  INTEGER NOT NULL,
    object TEXT NOT NULL
);
CREATE INDEX checkpoints_job ON checkpoints (job_id, epoch);

-- The local provider's weights (checkpoints and final models), keyed by model id; `job_id` is the
-- provider's job id.
CREATE TABLE models (
    model      TEXT PRIMARY KEY,
    job_id     TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    weights    BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX models_job ON models (job_id, epoch);
