-- ftsweep serve's schema: the Azure protocol (`serve --protocol azure`). Never edit a released
-- migration: add a new file.

-- What a job created through the Azure routes was asked to fine-tune: `model` as the client named
-- it (an Azure base model id, or a fine-tuned model or checkpoint this server made), and the Azure
-- base model at the root of its line, which names its fine-tuned models (`{base}.ft-{hex}`).
CREATE TABLE azure_jobs (
    job_id     TEXT PRIMARY KEY,
    model      TEXT NOT NULL,
    base_model TEXT NOT NULL
);

-- When an upload made through the Azure routes is `processed` (Unix milliseconds): until then
-- its status is `uploaded` and no job may use it.
CREATE TABLE azure_files (
    file_id         TEXT PRIMARY KEY,
    processed_at_ms INTEGER NOT NULL
);

-- Azure Resource Manager deployments, by account (its resource id, in lower case) and name (in
-- lower case: ARM names are case-insensitive). `object` is the deployment as ARM shows it, without
-- its provisioning state, which follows from the times: Creating until `ready_at_ms`, then
-- Succeeded; after a DELETE, Deleting until `gone_at_ms`, then gone. `serves` is the model it
-- answers with: a local model id (a fine-tuned model or checkpoint) or `local/ngram` for a base
-- model; `model_id` is the model's Azure id, which its chat completions name.
CREATE TABLE azure_deployments (
    seq         INTEGER PRIMARY KEY,
    account     TEXT NOT NULL,
    name        TEXT NOT NULL,
    object      TEXT NOT NULL,
    serves      TEXT NOT NULL,
    model_id    TEXT NOT NULL,
    ready_at_ms INTEGER NOT NULL,
    gone_at_ms  INTEGER,
    UNIQUE (account, name)
);
CREATE INDEX azure_deployments_name ON azure_deployments (name);
CREATE INDEX azure_deployments_serves ON azure_deployments (serves);
