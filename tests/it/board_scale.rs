//! The per-example scores stored with evaluations (`eval_scores`): written as a run is graded,
//! kept right when a grader is added or a model evaluated again, filled on the first read of an
//! older database; the leaderboard, `best`, `compare` and `report` read them and show exactly
//! what grading every stored reply again shows.

use std::path::Path;

use crate::util::{Workspace, query, root, sweep_toml};

const HP: &str = "n_epochs = [1, 3]\nlearning_rate_multiplier = [0.1, 1.0]\nbatch_size = [4]";

/// The stored scores: grader, evaluation, count, sum and the bytes, one line each.
fn stored(db: &Path) -> Vec<String> {
    query(
        db,
        "SELECT grader || ' ' || evaluation_id || ' ' || n || ' ' || sum || ' ' || hex(scores) FROM eval_scores
         ORDER BY grader, evaluation_id",
    )
}

fn execute(db: &Path, sql: &str) {
    rusqlite::Connection::open(db).expect("opening the database").execute_batch(sql).expect("running SQL");
}

/// What the commands that rank print (stdout and stderr), for sweep `sweep` and rows `a`, `b`.
fn outputs(ws: &Workspace, sweep: &str, pair: Option<(&str, &str)>, metrics: &[&str]) -> Vec<String> {
    let mut commands: Vec<Vec<String>> = Vec::new();
    let owned = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    for metric in metrics {
        commands.push(owned(&["leaderboard", sweep, "--json", "--metric", metric]));
        commands.push(owned(&["leaderboard", sweep, "--wide", "--metric", metric]));
        commands.push(owned(&["best", sweep, "--metric", metric]));
        commands.push(owned(&["best", sweep, "--json", "--metric", metric]));
        if let Some((a, b)) = pair {
            commands.push(owned(&["compare", a, b, "--sweep", sweep, "--json", "--metric", metric]));
            commands.push(owned(&["compare", a, b, "--sweep", sweep, "--metric", metric]));
        }
    }
    let mut out = Vec::new();
    for args in commands {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = ws.run(&args);
        out.push(format!("{args:?} exit {code}\n{stdout}\n{stderr}"));
    }
    let report = ws.path("report.html");
    let (code, _, err) = ws.run(&["report", sweep, "-o", report.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let page = std::fs::read_to_string(&report).unwrap();
    // The page says when it was made; nothing else in it may change.
    let page: String = page.lines().filter(|l| !l.contains("generated")).collect::<Vec<_>>().join("\n");
    out.push(page);
    out
}

/// The outputs read from the stored scores, then with every stored score dropped (graded again
/// from the stored replies, and stored again): they must be the same, and so must what is stored.
fn assert_same_as_recomputed(ws: &Workspace, sweep: &str, pair: Option<(&str, &str)>, metrics: &[&str]) {
    let fast = outputs(ws, sweep, pair, metrics);
    let kept = stored(&ws.db());
    execute(&ws.db(), "DELETE FROM eval_scores");
    let slow = outputs(ws, sweep, pair, metrics);
    for (f, s) in fast.iter().zip(&slow) {
        assert_eq!(f, s, "the stored scores show what grading again shows");
    }
    assert_eq!(stored(&ws.db()), kept, "grading again stores the same scores");
}

fn run_ids(ws: &Workspace, sweep: &str) -> Vec<String> {
    let board = ws.json(&["leaderboard", sweep, "--json"]);
    let rows = board.as_array().unwrap();
    rows.iter().filter(|r| r["kind"] == "run").map(|r| r["run_id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn stored_scores_show_what_grading_again_shows_after_each_change() {
    let ws = Workspace::new();
    let graded = format!("{}\n[[evaluation.graders]]\ntype = \"token_f1\"\n", sweep_toml("s", HP));
    let path = ws.write("s.toml", &graded);
    let path = path.to_str().unwrap();
    let (code, _, err) = ws.run(&["run", path]);
    assert_eq!(code, 0, "{err}");
    // A run's scores are stored as it is graded, before anything reads them: each evaluation
    // (four runs and the baseline) by each grader.
    let evaluations = query(&ws.db(), "SELECT count(*) FROM evaluations");
    assert_eq!(evaluations, ["5"]);
    assert_eq!(query(&ws.db(), "SELECT count(*) FROM eval_scores"), ["10"]);
    assert_eq!(
        query(&ws.db(), "SELECT count(*) FROM eval_scores WHERE n = 184 AND substr(grader, 1, 12) = 'exact_match:'"),
        ["5"]
    );
    let ids = run_ids(&ws, "s");
    let pair = (ids[0].as_str(), ids[ids.len() - 1].as_str());
    assert_same_as_recomputed(&ws, "s", Some(pair), &["exact_match", "token_f1"]);

    // A stored score is what the board shows: another one shows otherwise (so the comparisons
    // above compare two ways of getting the scores, not one).
    let before = ws.json(&["leaderboard", "s", "--json"]);
    // 184 examples, none passed.
    let none = format!("x'00b8000000{}'", "00".repeat(23));
    execute(&ws.db(), &format!("UPDATE eval_scores SET scores = {none} WHERE substr(grader, 1, 12) = 'exact_match:'"));
    assert_ne!(before, ws.json(&["leaderboard", "s", "--json"]), "the board reads the stored scores");
    execute(&ws.db(), "DELETE FROM eval_scores");

    // A grader added, and a combination: the next run grades again from the stored replies.
    let more = format!(
        "{}\n[[evaluation.graders]]\ntype = \"contains\"\nignore_case = true\n",
        graded.replace(
            "metric = \"exact_match\"",
            "metric = \"exact_match\"\ncombined = { exact_match = 1, token_f1 = 1 }"
        )
    );
    ws.write("s.toml", &more);
    let (code, _, err) = ws.run(&["run", path]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(query(&ws.db(), "SELECT count(DISTINCT grader) FROM eval_scores"), ["3"]);
    assert_same_as_recomputed(&ws, "s", Some(pair), &["exact_match", "token_f1", "combined"]);

    // A run's model evaluated again replaces its evaluation and its stored scores at once.
    let board = ws.json(&["leaderboard", "s", "--json"]);
    let model = board[0]["model"].as_str().unwrap().to_string();
    let (code, _, err) = ws.run(&["eval", "--model", &model, "--sweep", "s"]);
    assert_eq!(code, 0, "{err}");
    assert_same_as_recomputed(&ws, "s", Some(pair), &["exact_match", "token_f1", "combined"]);
}

/// A copy of a database an older ftsweep wrote, with its sweep files and data.
fn fixture(name: &str) -> Workspace {
    let ws = Workspace::new();
    for entry in std::fs::read_dir(root().join("tests/data").join(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, ws.path(&path.file_name().unwrap().to_string_lossy())).unwrap();
    }
    ws
}

#[test]
fn an_older_database_gets_its_scores_on_the_first_read_and_shows_the_same() {
    // Schema 7 (evaluations, checkpoints evaluated, halving), and ftsweep 0.1.0's graded rows.
    for (name, sweeps) in [
        ("ids-v2", &["v2-grid", "v2-checkpoints", "v2-halving", "v2-random"][..]),
        ("ids-v1", &["ids-grid", "ids-checkpoints", "ids-halving"][..]),
    ] {
        let ws = fixture(name);
        // The first command migrates the file: the table of stored scores is there, empty.
        assert_eq!(ws.run(&["status"]).0, 0);
        assert_eq!(query(&ws.db(), "SELECT count(*) FROM eval_scores"), ["0"]);
        for sweep in sweeps {
            // Each sweep's rows alone (the sweeps of a file share their baseline).
            execute(&ws.db(), "DELETE FROM eval_scores");
            let first = ws.json(&["leaderboard", sweep, "--json"]);
            assert_eq!(first, ws.json(&["leaderboard", sweep, "--json"]), "{name} {sweep}: read again");
            assert_same_as_recomputed(&ws, sweep, None, &["exact_match"]);
        }
        if name == "ids-v2" {
            for sweep in sweeps {
                ws.json(&["leaderboard", sweep, "--json"]);
            }
            let (graders, evaluations) = (
                query(&ws.db(), "SELECT count(DISTINCT grader) FROM eval_scores"),
                query(
                    &ws.db(),
                    "SELECT count(DISTINCT evaluation_id) = (SELECT count(*) FROM evaluations) FROM eval_scores",
                ),
            );
            assert_eq!((graders, evaluations), (vec!["1".to_string()], vec!["1".to_string()]), "every evaluation");
        }
    }
}
