-- Compact evaluation storage. A conversation hash, and a model with its decoding parameters, are
-- stored once and named by an integer; the predictions cache is keyed by those integers. An
-- evaluated example's prompt and reference are stored once per distinct input (not once per
-- evaluated model), and its reply only when it is not the cached prediction of the evaluation's
-- model and decoding. `eval_results` is no longer written: its rows that an evaluation holds go;
-- those of runs evaluated before evaluations were recorded stay, and are still read.

CREATE TABLE conversations (
    id     INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE
);

-- A model under given decoding parameters: whose replies the predictions cache holds.
CREATE TABLE repliers (
    id       INTEGER PRIMARY KEY,
    model    TEXT NOT NULL,
    decoding TEXT NOT NULL,
    UNIQUE (model, decoding)
);

CREATE TABLE predictions_0007 (
    replier      INTEGER NOT NULL REFERENCES repliers(id),
    conversation INTEGER NOT NULL REFERENCES conversations(id),
    content      TEXT NOT NULL,
    probability  REAL,
    PRIMARY KEY (replier, conversation)
) WITHOUT ROWID;

-- An example of a data file as evaluated: where it is, its prompt (a JSON array of
-- {role, content}) and its reference.
CREATE TABLE eval_inputs (
    id           INTEGER PRIMARY KEY,
    conversation INTEGER NOT NULL REFERENCES conversations(id),
    line         INTEGER NOT NULL,
    reference    TEXT NOT NULL,
    prompt       TEXT NOT NULL,
    UNIQUE (conversation, line, reference, prompt)
);

-- The examples of an evaluation, in file order. `prediction` NULL: the reply (and its
-- probability) is the cached prediction of the evaluation's model and decoding.
CREATE TABLE eval_examples_0007 (
    evaluation_id INTEGER NOT NULL REFERENCES evaluations(id) ON DELETE CASCADE,
    example       INTEGER NOT NULL,
    input         INTEGER NOT NULL REFERENCES eval_inputs(id),
    prediction    TEXT,
    probability   REAL,
    PRIMARY KEY (evaluation_id, example)
) WITHOUT ROWID;

INSERT OR IGNORE INTO conversations (sha256) SELECT conversation_sha256 FROM predictions;
INSERT OR IGNORE INTO conversations (sha256) SELECT conversation_sha256 FROM eval_examples;
INSERT OR IGNORE INTO repliers (model, decoding) SELECT model, decoding FROM predictions;

INSERT INTO predictions_0007 (replier, conversation, content, probability)
SELECT r.id, c.id, p.content, p.probability
FROM predictions p
JOIN repliers r ON r.model = p.model AND r.decoding = p.decoding
JOIN conversations c ON c.sha256 = p.conversation_sha256;

INSERT OR IGNORE INTO eval_inputs (conversation, line, reference, prompt)
SELECT c.id, x.line, x.reference, x.prompt
FROM eval_examples x JOIN conversations c ON c.sha256 = x.conversation_sha256
ORDER BY x.evaluation_id, x.example;

INSERT INTO eval_examples_0007 (evaluation_id, example, input, prediction, probability)
SELECT x.evaluation_id, x.example, i.id,
       CASE WHEN p.content IS x.prediction AND p.probability IS x.probability THEN NULL ELSE x.prediction END,
       CASE WHEN p.content IS x.prediction AND p.probability IS x.probability THEN NULL ELSE x.probability END
FROM eval_examples x
JOIN evaluations e ON e.id = x.evaluation_id
JOIN conversations c ON c.sha256 = x.conversation_sha256
JOIN eval_inputs i ON i.conversation = c.id AND i.line = x.line AND i.reference = x.reference AND i.prompt = x.prompt
LEFT JOIN repliers r ON r.model = e.model AND r.decoding = e.decoding
LEFT JOIN predictions_0007 p ON p.replier = r.id AND p.conversation = c.id;

DROP TABLE eval_examples;
ALTER TABLE eval_examples_0007 RENAME TO eval_examples;
DROP TABLE predictions;
ALTER TABLE predictions_0007 RENAME TO predictions;

-- A run's graded rows are read only when no evaluation of its model on its sweep's validation
-- data exists; those are kept.
DELETE FROM eval_results WHERE NOT EXISTS (
    SELECT 1 FROM sweep_runs sr JOIN sweeps s ON s.id = sr.sweep_id
    WHERE sr.run_id = eval_results.run_id
      AND NOT EXISTS (
          SELECT 1 FROM evaluations e WHERE e.model = eval_results.model AND e.data_sha256 = s.validation_sha256
      )
);

-- Training metrics keyed by what reads them, without a separate index. A step's training and
-- validation metrics are two rows: `seq` counts the rows of the same run, attempt, step and kind
-- before it.
CREATE TABLE metrics_0007 (
    run_id         TEXT NOT NULL REFERENCES runs(run_id),
    attempt        INTEGER NOT NULL,
    step           INTEGER NOT NULL,
    -- 'step' (a minibatch) or 'epoch' (end of epoch, full validation set)
    kind           TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    epoch          INTEGER NOT NULL,
    train_loss     REAL,
    train_accuracy REAL,
    valid_loss     REAL,
    valid_accuracy REAL,
    PRIMARY KEY (run_id, attempt, step, kind, seq)
) WITHOUT ROWID;

INSERT INTO metrics_0007 (run_id, attempt, step, kind, seq, epoch, train_loss, train_accuracy, valid_loss,
                          valid_accuracy)
SELECT m.run_id, m.attempt, m.step, m.kind,
       (SELECT count(*) FROM metrics n
        WHERE n.run_id = m.run_id AND n.attempt = m.attempt AND n.kind = m.kind AND n.step = m.step
          AND n.rowid < m.rowid),
       m.epoch, m.train_loss, m.train_accuracy, m.valid_loss, m.valid_accuracy
FROM metrics m;

DROP INDEX metrics_run;
DROP TABLE metrics;
ALTER TABLE metrics_0007 RENAME TO metrics;
