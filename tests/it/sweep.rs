//! End to end: a sweep runs, ranks, resumes and extends, with the real
//! binary and database.

use serde_json::Value;

use crate::util::{Workspace, query, root, sweep_toml};

const SMALL: &str = "n_epochs = [1, 4]\nlearning_rate_multiplier = [0.1, 1.0]\nbatch_size = [8]";

/// The leaderboard's run rows, without the baseline row.
fn runs(rows: Value) -> Value {
    Value::Array(rows.as_array().expect("an array").iter().filter(|r| r["is_baseline"] != true).cloned().collect())
}

fn scores(rows: &Value) -> Vec<(String, f64, f64)> {
    let mut v: Vec<(String, f64, f64)> = rows
        .as_array()
        .expect("an array")
        .iter()
        .filter(|r| r["is_baseline"] != true)
        .map(|r| {
            (r["run_id"].as_str().unwrap().to_string(), r["score"].as_f64().unwrap(), r["valid_loss"].as_f64().unwrap())
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn a_sweep_runs_ranks_and_records_everything() {
    let ws = Workspace::new();
    let sweep = ws.write("small.toml", &sweep_toml("small", SMALL));
    let (code, out, err) = ws.run(&["run", sweep.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("4 runs: 4 to train"), "{err}");
    assert!(out.contains("exact_match") && out.matches("done").count() == 4, "{out}");

    let rows = runs(ws.json(&["leaderboard", "small", "--json"]));
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for key in [
        "rank",
        "run_id",
        "status",
        "n_epochs",
        "learning_rate_multiplier",
        "batch_size",
        "seed",
        "model",
        "metric",
        "score",
        "valid_loss",
        "trained_tokens",
    ] {
        assert!(rows[0].get(key).is_some(), "leaderboard rows carry `{key}`");
    }
    let ranks: Vec<u64> = rows.iter().map(|r| r["rank"].as_u64().unwrap()).collect();
    assert_eq!(ranks, [1, 2, 3, 4]);
    let s: Vec<f64> = rows.iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert!(s.windows(2).all(|w| w[0] >= w[1]), "ranked by score: {s:?}");
    // Trained tokens are epochs × the training file's tokens.
    let by_epochs = |n: u64| rows.iter().find(|r| r["n_epochs"] == n).unwrap()["trained_tokens"].as_u64().unwrap();
    assert_eq!(by_epochs(4), 4 * by_epochs(1));
    assert!(by_epochs(1) > 10_000, "the example file has tens of thousands of tokens");

    // The database holds the runs, their metrics, checkpoints and graded examples.
    let db = ws.db();
    assert_eq!(query(&db, "SELECT count(*) FROM runs WHERE state = 'done'"), ["4"]);
    let valid_lines = std::fs::read_to_string(root().join("examples/data/topics-valid.jsonl")).unwrap().lines().count();
    let graded =
        "SELECT count(*) FROM eval_examples x JOIN evaluations e ON e.id = x.evaluation_id WHERE e.kind = 'run'";
    assert_eq!(query(&db, graded), [(4 * valid_lines).to_string()]);
    assert_eq!(query(&db, "SELECT count(*) FROM metrics WHERE kind = 'epoch'"), ["10"], "1 + 4 epochs, twice");
    // A sweep that reads no earlier checkpoint keeps each run's last one, and its final model
    // refers to it.
    assert_eq!(query(&db, "SELECT count(*) FROM local_models"), ["8"]);
    assert_eq!(query(&db, "SELECT count(*) FROM local_models WHERE same_as IS NOT NULL"), ["4"]);
    assert_eq!(query(&db, "SELECT count(*) FROM checkpoints"), ["10"]);

    let best = ws.run(&["best", "small"]);
    assert_eq!(best.0, 0);
    let model = best.1.trim();
    assert!(model.starts_with("ft:local/ngram:local:"), "{model}");
    assert_eq!(Some(model), rows[0]["model"].as_str());
    assert!(best.2.contains("best of `small`"), "the reason goes to stderr: {}", best.2);
    let best_json = ws.json(&["best", "small", "--json"]);
    assert_eq!(best_json["run_id"], rows[0]["run_id"]);
}

#[test]
fn running_again_trains_nothing_and_extending_trains_only_the_new_runs() {
    let ws = Workspace::new();
    let sweep = ws.write("s.toml", &sweep_toml("s", SMALL));
    let sweep = sweep.to_str().unwrap();
    assert_eq!(ws.run(&["run", sweep]).0, 0);
    let first = ws.json(&["leaderboard", "s", "--json"]);
    let jobs = query(&ws.db(), "SELECT job_id FROM runs ORDER BY run_id");

    let (code, out, err) = ws.run(&["run", sweep]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("nothing new to train"), "{err}");
    assert!(err.contains("0 trained"), "{err}");
    assert_eq!(jobs, query(&ws.db(), "SELECT job_id FROM runs ORDER BY run_id"), "no job was created");
    assert_eq!(first, ws.json(&["leaderboard", "s", "--json"]));
    assert!(out.contains("exact_match"), "the table is printed again");

    ws.write("s.toml", &sweep_toml("s", &SMALL.replace("[8]", "[8, 32]")));
    let (code, _, err) = ws.run(&["run", sweep]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("8 runs: 4 to train, 0 to evaluate, 4 done already"), "{err}");
    assert_eq!(runs(ws.json(&["leaderboard", "s", "--json"])).as_array().unwrap().len(), 8);
    for job in &jobs {
        assert_eq!(query(&ws.db(), &format!("SELECT count(*) FROM runs WHERE job_id = '{job}'")), ["1"]);
    }
}

#[test]
fn the_same_sweep_twice_gives_identical_scores() {
    let a = Workspace::new();
    let b = Workspace::new();
    for ws in [&a, &b] {
        let sweep = ws.write("s.toml", &sweep_toml("s", SMALL));
        assert_eq!(ws.run(&["run", sweep.to_str().unwrap()]).0, 0);
    }
    let sa = scores(&a.json(&["leaderboard", "s", "--json"]));
    let sb = scores(&b.json(&["leaderboard", "s", "--json"]));
    assert_eq!(sa, sb);
}

#[test]
fn the_quickstart_shows_underfitting_overfitting_and_divergence() {
    let ws = Workspace::new();
    let quickstart = root().join("sweeps/quickstart.toml");
    let (code, out, err) = ws.run(&["run", quickstart.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rank"), "{out}");
    let rows = runs(ws.json(&["leaderboard", "quickstart", "--json"]));
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 18);
    let find = |e: u64, lr: f64, b: u64| {
        rows.iter()
            .find(|r| r["n_epochs"] == e && r["learning_rate_multiplier"].as_f64() == Some(lr) && r["batch_size"] == b)
            .unwrap_or_else(|| panic!("run {e}/{lr}/{b}"))
    };
    let score = |r: &Value| r["score"].as_f64().unwrap();
    let loss = |r: &Value| r["valid_loss"].as_f64().unwrap_or(f64::INFINITY);
    let best = &rows[0];
    let worst = rows.last().unwrap();
    assert!(score(best) - score(worst) > 0.2, "runs differ by more than noise: {} vs {}", score(best), score(worst));
    // Underfitting: the lowest multiplier, one epoch, large batches.
    assert!(score(best) - score(find(1, 0.1, 32)) > 0.1, "low lr underfits");
    // Divergence: a 10× multiplier blows the validation loss up.
    assert!(loss(find(3, 10.0, 4)) > 5.0 * loss(best), "high lr diverges: {}", loss(find(3, 10.0, 4)));
    assert!(score(find(3, 10.0, 4)) < score(best) - 0.1, "and scores worse");
    // The best run is not at the high multiplier.
    assert!(best["learning_rate_multiplier"].as_f64().unwrap() < 10.0);
}
