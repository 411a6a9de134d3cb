-- ftsweep serve's schema, version 3. Never edit a released migration: add a new file.
-- `serve --protocol together`: what Together AI's API has beyond the OpenAI objects.

-- Uploads announced by `POST /v1/files` (the presigned flow). The file exists (a `files` row)
-- once its bytes were PUT to `/v1/uploads/{token}`; `line_count` is set by `preprocess`.
CREATE TABLE together_uploads (
    file_id    TEXT PRIMARY KEY,
    token      TEXT NOT NULL UNIQUE,
    filename   TEXT NOT NULL,
    purpose    TEXT NOT NULL,
    file_type  TEXT NOT NULL,
    checksum   TEXT,
    created_at INTEGER NOT NULL,
    line_count INTEGER
);
CREATE INDEX together_uploads_checksum ON together_uploads (checksum);

-- A fine-tune's Together parameters (the job itself is in `jobs`).
CREATE TABLE together_jobs (
    job_id TEXT PRIMARY KEY,
    object TEXT NOT NULL
);

-- Dedicated endpoints; `created_ms` drives their state (PENDING, STARTING, STARTED).
CREATE TABLE together_endpoints (
    seq        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL,
    object     TEXT NOT NULL
);
