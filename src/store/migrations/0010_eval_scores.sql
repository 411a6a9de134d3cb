-- Per-example scores kept with their evaluation, so that the leaderboard, `best` and `compare`
-- read one row per evaluation and grader instead of grading every stored reply again. For an
-- evaluation and a grader (its grade-cache key, which changes with its settings): the examples,
-- the sum of their scores, and the scores in file order (`scores`: a bitset when every score is 0
-- or 1, else little-endian f64s; see src/store/scores.rs), paired example by example with every
-- other evaluation on the same data. Recording an evaluation again replaces its rows in the same
-- transaction; caching a judge's or command's grade drops that grader's rows. The graders are the
-- sweep file's, which SQL cannot run: existing evaluations get their rows the first time a
-- leaderboard reads them (in one write transaction), and a grader added later the same way.
CREATE TABLE IF NOT EXISTS eval_scores (
    grader        TEXT NOT NULL,
    evaluation_id INTEGER NOT NULL REFERENCES evaluations(id) ON DELETE CASCADE,
    n             INTEGER NOT NULL,
    sum           REAL NOT NULL,
    scores        BLOB NOT NULL,
    PRIMARY KEY (grader, evaluation_id)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS eval_scores_evaluation ON eval_scores (evaluation_id);
