-- ftsweep schema, version 1. Never edit a released migration: add a new file.

CREATE TABLE sweeps (
    id                INTEGER PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    spec_path         TEXT NOT NULL,
    spec_toml         TEXT NOT NULL,
    provider          TEXT NOT NULL,
    base_model        TEXT NOT NULL,
    training_file     TEXT NOT NULL,
    training_sha256   TEXT NOT NULL,
    validation_file   TEXT NOT NULL,
    validation_sha256 TEXT NOT NULL,
    metric            TEXT NOT NULL,
    created_at        REAL NOT NULL,
    updated_at        REAL NOT NULL
);

-- A run is content-addressed: its id hashes provider, base model, data and
-- hyperparameters, so sweeps that plan the same point share the run.
CREATE TABLE runs (
    run_id                   TEXT PRIMARY KEY,
    provider                 TEXT NOT NULL,
    base_model               TEXT NOT NULL,
    training_sha256          TEXT NOT NULL,
    validation_sha256        TEXT NOT NULL,
    -- NULL is "auto": the provider chooses.
    n_epochs                 INTEGER,
    batch_size               INTEGER,
    learning_rate_multiplier REAL,
    seed                     INTEGER NOT NULL,
    -- planned | training | trained | evaluating | done | failed
    state                    TEXT NOT NULL,
    attempt                  INTEGER NOT NULL DEFAULT 0,
    job_id                   TEXT,
    model                    TEXT,
    error                    TEXT,
    trained_tokens           INTEGER,
    train_loss               REAL,
    train_accuracy           REAL,
    valid_loss               REAL,
    valid_accuracy           REAL,
    metric                   TEXT,
    score                    REAL,
    n_eval                   INTEGER,
    train_seconds            REAL,
    eval_seconds             REAL,
    created_at               REAL NOT NULL,
    updated_at               REAL NOT NULL
);

CREATE TABLE sweep_runs (
    sweep_id INTEGER NOT NULL REFERENCES sweeps(id),
    run_id   TEXT NOT NULL REFERENCES runs(run_id),
    position INTEGER NOT NULL,
    -- 1 when the sweep file's latest version plans the run.
    active   INTEGER NOT NULL,
    PRIMARY KEY (sweep_id, run_id)
);

-- Per-step and per-epoch training metrics, as a hosted job reports them.
CREATE TABLE metrics (
    run_id         TEXT NOT NULL REFERENCES runs(run_id),
    attempt        INTEGER NOT NULL,
    step           INTEGER NOT NULL,
    epoch          INTEGER NOT NULL,
    -- 'step' (a minibatch) or 'epoch' (end of epoch, full validation set)
    kind           TEXT NOT NULL,
    train_loss     REAL,
    train_accuracy REAL,
    valid_loss     REAL,
    valid_accuracy REAL
);
CREATE INDEX metrics_run ON metrics (run_id, attempt, kind, step);

CREATE TABLE checkpoints (
    run_id         TEXT NOT NULL REFERENCES runs(run_id),
    attempt        INTEGER NOT NULL,
    epoch          INTEGER NOT NULL,
    step           INTEGER NOT NULL,
    model          TEXT NOT NULL,
    train_loss     REAL,
    valid_loss     REAL,
    valid_accuracy REAL,
    created_at     REAL NOT NULL,
    PRIMARY KEY (run_id, attempt, epoch)
);

-- One row per validation example and evaluated model.
CREATE TABLE eval_results (
    run_id      TEXT NOT NULL REFERENCES runs(run_id),
    model       TEXT NOT NULL,
    example     INTEGER NOT NULL,
    line        INTEGER NOT NULL,
    reference   TEXT NOT NULL,
    prediction  TEXT NOT NULL,
    probability REAL,
    score       REAL NOT NULL,
    PRIMARY KEY (run_id, model, example)
);

-- The local provider's trained weights (its checkpoints), by model id.
CREATE TABLE local_models (
    model      TEXT PRIMARY KEY,
    job_id     TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    weights    BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX local_models_job ON local_models (job_id, epoch);
