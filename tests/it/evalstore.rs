//! Compact evaluation storage (migration 0007), on the real binary: a sweep stores each
//! validation example's prompt and reference once, not once per evaluated model, each reply once
//! (in the predictions cache), and no second copy of its graded rows (`eval_results`); a
//! database written in the layout before 0007 shows the same tables after it; and the database
//! ftsweep 0.1.0 wrote (tests/data/ids-v1) shows the scores and replies it showed before.

use serde_json::Value;

use crate::util::{Workspace, latest_schema, query, root, sweep_toml};

/// A sweep of two runs of two epochs whose checkpoints are evaluated too, run in `ws`.
fn run_sweep(ws: &Workspace) {
    let text = sweep_toml("store", "n_epochs = [2]\nlearning_rate_multiplier = [1.0, 10.0]\nbatch_size = [32]")
        .replace("metric = \"exact_match\"\n", "metric = \"exact_match\"\ncheckpoints = true\n");
    ws.write("s.toml", &text);
    let (code, _, err) = ws.run(&["run", "--yes", "s.toml"]);
    assert_eq!(code, 0, "{err}");
}

fn count(ws: &Workspace, sql: &str) -> u64 {
    query(&ws.db(), sql)[0].parse().unwrap()
}

fn valid_lines() -> u64 {
    std::fs::read_to_string(root().join("examples/data/topics-valid.jsonl")).unwrap().lines().count() as u64
}

/// What the commands that read evaluations print for the sweep (status without its ages).
fn outputs(ws: &Workspace, db: &str) -> Vec<String> {
    let board = ws.json(&["--db", db, "leaderboard", "store", "--json"]);
    let runs: Vec<&str> = board.as_array().unwrap().iter().filter_map(|r| r["run_id"].as_str()).collect();
    let (a, b) = (runs[0].to_string(), runs[runs.len() - 1].to_string());
    let mut status = ws.json(&["--db", db, "status", "store", "--json"]);
    for r in status[0]["runs"].as_array_mut().unwrap() {
        r.as_object_mut().unwrap().remove("age_seconds");
    }
    let mut out = vec![board.to_string(), status.to_string()];
    let (a1, b1) = (format!("{a}@1"), format!("{b}@1"));
    let commands: [&[&str]; 7] = [
        &["leaderboard", "store"],
        &["best", "store"],
        &["best", "store", "--json"],
        &["compare", &a, &b],
        &["compare", &a, "baseline", "--json"],
        &["compare", &a1, &b],
        &["compare", &b1, &a, "--json"],
    ];
    for c in commands {
        let (code, stdout, stderr) = ws.run(&[&["--db", db][..], c].concat());
        out.push(format!("{c:?} -> {code}\n{stdout}\n{stderr}"));
    }
    out
}

/// Rewrites a database of this ftsweep in the layout of schema 6, as the ftsweep before
/// migration 0007 wrote it: prompts, references and replies in every evaluated example, the
/// run's graded rows written twice, predictions and metrics keyed by text.
const TO_SCHEMA_6: &str = "
    DROP TABLE deployments;
    ALTER TABLE runs DROP COLUMN hyperparameters;
    CREATE TABLE predictions_6 (
        model TEXT NOT NULL, conversation_sha256 TEXT NOT NULL, decoding TEXT NOT NULL, content TEXT NOT NULL,
        probability REAL, created_at REAL NOT NULL, PRIMARY KEY (model, conversation_sha256, decoding));
    INSERT INTO predictions_6 SELECT r.model, c.sha256, r.decoding, p.content, p.probability, 0
        FROM predictions p JOIN repliers r ON r.id = p.replier JOIN conversations c ON c.id = p.conversation;
    CREATE TABLE eval_examples_6 (
        evaluation_id INTEGER NOT NULL REFERENCES evaluations(id) ON DELETE CASCADE, example INTEGER NOT NULL,
        line INTEGER NOT NULL, conversation_sha256 TEXT NOT NULL, prompt TEXT NOT NULL, reference TEXT NOT NULL,
        prediction TEXT NOT NULL, probability REAL, PRIMARY KEY (evaluation_id, example));
    INSERT INTO eval_examples_6
        SELECT x.evaluation_id, x.example, i.line, c.sha256, i.prompt, i.reference, COALESCE(x.prediction, p.content),
               CASE WHEN x.prediction IS NULL THEN p.probability ELSE x.probability END
        FROM eval_examples x JOIN evaluations e ON e.id = x.evaluation_id JOIN eval_inputs i ON i.id = x.input
        JOIN conversations c ON c.id = i.conversation
        LEFT JOIN repliers r ON r.model = e.model AND r.decoding = e.decoding
        LEFT JOIN predictions p ON p.replier = r.id AND p.conversation = i.conversation;
    INSERT INTO eval_results (run_id, model, example, line, reference, prediction, probability, score)
        SELECT e.run_id, e.model, x.example, x.line, x.reference, x.prediction, x.probability,
               x.prediction = x.reference
        FROM eval_examples_6 x JOIN evaluations e ON e.id = x.evaluation_id WHERE e.kind = 'run';
    CREATE TABLE metrics_6 (
        run_id TEXT NOT NULL REFERENCES runs(run_id), attempt INTEGER NOT NULL, step INTEGER NOT NULL,
        epoch INTEGER NOT NULL, kind TEXT NOT NULL, train_loss REAL, train_accuracy REAL, valid_loss REAL,
        valid_accuracy REAL);
    INSERT INTO metrics_6 SELECT run_id, attempt, step, epoch, kind, train_loss, train_accuracy, valid_loss,
        valid_accuracy FROM metrics ORDER BY run_id, attempt, step, kind, seq;
    DROP TABLE metrics;
    ALTER TABLE metrics_6 RENAME TO metrics;
    CREATE INDEX metrics_run ON metrics (run_id, attempt, kind, step);
    DROP TABLE eval_examples;
    ALTER TABLE eval_examples_6 RENAME TO eval_examples;
    DROP TABLE predictions;
    ALTER TABLE predictions_6 RENAME TO predictions;
    DROP TABLE eval_inputs;
    DROP TABLE repliers;
    DROP TABLE conversations;
    PRAGMA user_version = 6;
";

/// Rewrites the database in the layout of schema 6 (see [`TO_SCHEMA_6`]), then runs `then`.
pub fn to_schema_6(db: &std::path::Path, then: &str) {
    let mut conn = rusqlite::Connection::open(db).unwrap();
    let tx = conn.transaction().unwrap();
    tx.execute_batch(TO_SCHEMA_6).unwrap();
    tx.execute_batch(then).unwrap();
    tx.commit().unwrap();
}

#[test]
fn a_sweep_stores_each_input_once_and_each_reply_once() {
    let ws = Workspace::new();
    run_sweep(&ws);
    let n = valid_lines();
    // Two runs, their first epoch's checkpoints, and the baseline.
    let evaluations = count(&ws, "SELECT count(*) FROM evaluations");
    assert_eq!(evaluations, 5);
    assert_eq!(count(&ws, "SELECT count(*) FROM eval_examples"), evaluations * n);
    assert_eq!(count(&ws, "SELECT count(*) FROM eval_inputs"), n, "one prompt and reference per example");
    assert_eq!(count(&ws, "SELECT count(*) FROM predictions"), evaluations * n);
    assert_eq!(count(&ws, "SELECT count(prediction) FROM eval_examples"), 0, "replies are the cached ones");
    assert_eq!(count(&ws, "SELECT count(*) FROM eval_results"), 0, "graded rows are written once");
    let sizes =
        query(&ws.db(), "SELECT name || ' ' || SUM(pgsize) FROM dbstat GROUP BY name ORDER BY SUM(pgsize) DESC");
    eprintln!("bytes by table and index:\n  {}", sizes.join("\n  "));
}

#[test]
fn a_database_from_before_0007_shows_the_same_tables() {
    let ws = Workspace::new();
    run_sweep(&ws);
    let before = outputs(&ws, "ftsweep.db");
    let leader = ws.json(&["leaderboard", "store", "--json"])[0].clone();
    std::fs::copy(ws.db(), ws.path("legacy.db")).unwrap();
    // The leader's cached replies are not those its evaluation graded (another process asked
    // again meanwhile): its evaluation keeps its own.
    let model = leader["model"].as_str().unwrap();
    to_schema_6(&ws.db(), &format!("UPDATE predictions SET content = 'another reply' WHERE model = '{model}'"));
    assert_eq!(query(&ws.db(), "PRAGMA user_version"), ["6"]);
    let after = outputs(&ws, "ftsweep.db");
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b, a);
    }
    assert_eq!(query(&ws.db(), "PRAGMA user_version"), [latest_schema()]);
    assert_eq!(count(&ws, "SELECT count(*) FROM eval_results"), 0, "every graded row is an evaluation's");
    assert_eq!(count(&ws, "SELECT count(*) FROM eval_inputs"), valid_lines());
    assert_eq!(count(&ws, "SELECT count(prediction) FROM eval_examples"), valid_lines(), "the leader's own replies");

    // A run evaluated before evaluations were recorded has graded rows only: they stay, and
    // still give its score.
    let legacy = ws.path("legacy.db");
    let run = leader["run_id"].as_str().unwrap();
    to_schema_6(&legacy, &format!("DELETE FROM evaluations WHERE run_id = '{run}' AND kind = 'run'"));
    let board = ws.json(&["--db", "legacy.db", "leaderboard", "store", "--json"]);
    let row: &Value = board.as_array().unwrap().iter().find(|r| r["run_id"] == run && r["epoch"].is_null()).unwrap();
    assert_eq!((&row["score"], &row["n_eval"]), (&leader["score"], &leader["n_eval"]), "{row}");
    let kept = query(&legacy, &format!("SELECT count(*) FROM eval_results WHERE run_id = '{run}'"));
    assert_eq!(kept, [valid_lines().to_string()]);
    assert_eq!(query(&legacy, "SELECT count(*) FROM eval_results"), kept, "the other run's rows went");
}

#[test]
fn the_0_1_0_database_shows_the_scores_and_replies_it_showed() {
    let ws = Workspace::new();
    let dir = root().join("tests/data/ids-v1");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, ws.path(&path.file_name().unwrap().to_string_lossy())).unwrap();
    }
    assert_eq!(query(&ws.db(), "PRAGMA user_version"), ["5"]);
    // As ftsweep before migration 0007 showed them.
    let scores = |sweep: &str| -> Vec<(String, f64)> {
        let board = ws.json(&["leaderboard", sweep, "--json"]);
        let rows = board.as_array().unwrap().iter();
        rows.map(|r| (r["run_id"].as_str().unwrap_or("baseline").to_string(), r["score"].as_f64().unwrap())).collect()
    };
    let s = |pairs: &[(&str, f64)]| pairs.iter().map(|(r, v)| (r.to_string(), *v)).collect::<Vec<_>>();
    assert_eq!(scores("ids-grid"), s(&[("r-8bc21d377c", 4.0 / 6.0), ("r-b71a5f1529", 0.5), ("baseline", 0.0)]));
    assert_eq!(scores("ids-checkpoints"), s(&[("r-206403f9d5", 0.5), ("r-941ff13c38", 0.5), ("baseline", 0.0)]));
    let halving = [
        ("r-25ad00e31a", 4.0 / 6.0),
        ("r-8bc21d377c", 4.0 / 6.0),
        ("r-b71a5f1529", 0.5),
        ("r-24125208db", 1.0 / 6.0),
        ("r-597b0455c1", 1.0 / 6.0),
        ("baseline", 0.0),
    ];
    assert_eq!(scores("ids-halving"), s(&halving));
    let c = ws.json(&["compare", "r-8bc21d377c", "r-b71a5f1529", "--sweep", "ids-grid", "--json"]);
    let expected = serde_json::json!([{"line": 2, "prompt": "The runner finished first", "reference": "sports",
        "reply_a": "sports", "reply_b": "money", "score_a": 1.0, "score_b": 0.0}]);
    assert_eq!(c["disagreements"], expected);
    assert_eq!(query(&ws.db(), "PRAGMA user_version"), [latest_schema()]);
    assert_eq!(query(&ws.db(), "SELECT count(*) FROM eval_results"), ["0"]);
}
