-- ftsweep serve's schema, version 2. Never edit a released migration: add a new file.
-- Uploads are written in chunks as they arrive, so that an upload is never whole in memory and
-- never holds the database for long. A file's content is `files.content` (result files, and
-- uploads made before version 2) followed by its chunks in order of `n`. The chunks of an upload
-- still arriving have no `files` row yet: a failed upload's are deleted, and so are any left
-- without a file at the next start.
CREATE TABLE file_chunks (
    seq     INTEGER PRIMARY KEY,
    file_id TEXT NOT NULL,
    n       INTEGER NOT NULL,
    data    BLOB NOT NULL,
    UNIQUE (file_id, n)
);
