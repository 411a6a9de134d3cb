-- Files uploaded to a server, keyed by server and content hash, so that one
-- distinct file is uploaded once per server, across runs and sweeps.
CREATE TABLE uploads (
    server     TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    file_id    TEXT NOT NULL,
    bytes      INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (server, sha256)
);
