-- Evaluation: the predictions cache, evaluations of any model on a data file with their graded
-- examples, the cache of grades that cost a call or a process, and aliases with provenance.

-- A model's reply to a conversation under given decoding parameters. Grading again, ranking again
-- or adding a grader reads these instead of asking the provider.
CREATE TABLE predictions (
    model               TEXT NOT NULL,
    conversation_sha256 TEXT NOT NULL,
    decoding            TEXT NOT NULL,
    content             TEXT NOT NULL,
    probability         REAL,
    created_at          REAL NOT NULL,
    PRIMARY KEY (model, conversation_sha256, decoding)
);

-- One model evaluated on one data file: a run's model, one of its checkpoints, a sweep's baseline
-- (the base model), or any model evaluated with `ftsweep eval`.
CREATE TABLE evaluations (
    id            INTEGER PRIMARY KEY,
    model         TEXT NOT NULL,
    data_sha256   TEXT NOT NULL,
    data_file     TEXT NOT NULL,
    decoding      TEXT NOT NULL,
    -- run | checkpoint | baseline | model
    kind          TEXT NOT NULL,
    run_id        TEXT,
    epoch         INTEGER,
    sweep_id      INTEGER,
    n_examples    INTEGER NOT NULL,
    -- Completions asked of the provider the last time, and predictions read from the cache.
    calls         INTEGER NOT NULL,
    cached        INTEGER NOT NULL,
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    seconds       REAL NOT NULL,
    created_at    REAL NOT NULL,
    UNIQUE (model, data_sha256, decoding)
);

-- The examples of an evaluation, in file order, with the model's reply.
CREATE TABLE eval_examples (
    evaluation_id       INTEGER NOT NULL REFERENCES evaluations(id) ON DELETE CASCADE,
    example             INTEGER NOT NULL,
    line                INTEGER NOT NULL,
    conversation_sha256 TEXT NOT NULL,
    -- The prompt's messages as a JSON array of {role, content}.
    prompt              TEXT NOT NULL,
    reference           TEXT NOT NULL,
    prediction          TEXT NOT NULL,
    probability         REAL,
    PRIMARY KEY (evaluation_id, example)
);

-- Grades that cost a call (a judge) or a process (a command), keyed by the grader's fingerprint
-- and a hash of the prompt, reference and reply.
CREATE TABLE grade_cache (
    grader       TEXT NOT NULL,
    input_sha256 TEXT NOT NULL,
    score        REAL NOT NULL,
    -- The judge's answer or the command's output.
    raw          TEXT NOT NULL,
    created_at   REAL NOT NULL,
    PRIMARY KEY (grader, input_sha256)
);

-- Names for deployed models (`champion`), with where each came from.
CREATE TABLE aliases (
    name        TEXT PRIMARY KEY,
    model       TEXT NOT NULL,
    run_id      TEXT,
    sweep       TEXT,
    provenance  TEXT NOT NULL,
    promoted_at REAL NOT NULL
);

-- Every promotion, in order.
CREATE TABLE alias_history (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    model       TEXT NOT NULL,
    previous    TEXT,
    forced      INTEGER NOT NULL,
    provenance  TEXT NOT NULL,
    promoted_at REAL NOT NULL
);
