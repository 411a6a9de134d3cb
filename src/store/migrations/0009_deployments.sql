-- What a model was made answerable on: an Azure deployment (through Azure
-- Resource Manager) or a Together dedicated endpoint. The row is written
-- before the create request goes out (state 'creating'), so a crash never
-- leaves a paid deployment that the database does not know: `resume` and
-- `cancel` delete what is not 'deleted'.
CREATE TABLE deployments (
    id          INTEGER PRIMARY KEY,
    sweep_id    INTEGER NOT NULL REFERENCES sweeps(id),
    provider    TEXT NOT NULL,              -- 'azure' | 'together'
    server      TEXT NOT NULL,              -- the ARM account's resource id, or the API's base URL
    name        TEXT NOT NULL,              -- ours, deterministic: the deployment's or the endpoint's name
    model       TEXT NOT NULL,              -- the model (or checkpoint) made answerable
    run_id      TEXT,                       -- the run evaluated with it; NULL for the base model
    remote_id   TEXT,                       -- the provider's id, when it assigns one (Together's endpoint-…)
    owner       TEXT NOT NULL,              -- the process that made it (sweep::owner_id)
    state       TEXT NOT NULL,              -- creating | ready | deleting | deleted | failed
    created_at  REAL NOT NULL,              -- intent recorded
    ready_at    REAL,                       -- answering
    deleted_at  REAL,                       -- gone at the provider
    last_error  TEXT,
    UNIQUE (provider, server, name)
);
CREATE INDEX deployments_live ON deployments (sweep_id, state);
