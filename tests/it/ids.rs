//! Run ids of 64 bits, on the real binary: a database written by ftsweep 0.1
//! (40-bit ids, tests/data/ids-v1) keeps working, two configurations whose
//! 40-bit ids collided are both planned, and a stored run defined otherwise
//! than the run planned under its id is never reused. Also `plan`'s figures
//! on that data: the runs `run` makes, and no negative cost.

use std::path::Path;

use serde_json::Value;

use crate::util::{Workspace, query, root};

/// A workspace holding a copy of tests/data/ids-v1: its sweep files, data and
/// the database ftsweep 0.1 wrote.
fn fixture() -> Workspace {
    fixture_of("ids-v1")
}

/// A workspace holding a copy of the fixture folder tests/data/`name`.
fn fixture_of(name: &str) -> Workspace {
    let ws = Workspace::new();
    let dir = root().join("tests/data").join(name);
    for entry in std::fs::read_dir(&dir).expect("the fixture folder") {
        let path = entry.expect("a fixture file").path();
        std::fs::copy(&path, ws.path(&path.file_name().unwrap().to_string_lossy())).expect("copying the fixture");
    }
    ws
}

/// Every run of the database with its job and attempt.
fn runs_and_jobs(db: &Path) -> Vec<String> {
    query(
        db,
        "SELECT run_id || ' ' || origin || ' ' || COALESCE(job_id, '-') || ' ' || attempt FROM runs ORDER BY run_id",
    )
}

fn ids(plan: &Value) -> Vec<String> {
    plan["runs"].as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_database_of_40_bit_ids_finds_its_runs_again() {
    let ws = fixture();
    let before = runs_and_jobs(&ws.db());
    assert_eq!(before.len(), 7, "{before:?}");
    assert!(before.iter().all(|r| r.split(' ').next().unwrap().len() == 12), "ids of ftsweep 0.1: {before:?}");
    // (sweep file, sweep, the ids its first rung has in the database)
    let sweeps = [
        ("grid.toml", "ids-grid", vec!["r-8bc21d377c", "r-b71a5f1529"]),
        ("checkpoints.toml", "ids-checkpoints", vec!["r-941ff13c38", "r-206403f9d5"]),
        ("halving.toml", "ids-halving", vec!["r-8bc21d377c", "r-b71a5f1529"]),
    ];
    for (file, name, first) in &sweeps {
        let plan = ws.json(&["plan", file, "--json"]);
        assert_eq!(plan["to_train"], 0, "{file}: {plan}");
        assert_eq!(&ids(&plan)[..first.len()], first.as_slice(), "{file}");
        let (code, out, err) = ws.run(&["run", "--yes", file]);
        assert_eq!(code, 0, "{file}: {err}");
        assert!(err.contains(&format!("sweep `{name}`: 0 trained")), "{file}: {err}");
        assert!(!err.contains("training "), "no job starts: {err}");
        for id in first {
            assert!(out.contains(id), "{file}: the leaderboard shows {id}:\n{out}");
        }
    }
    // Halving found its continuation and its replicated chain again.
    let halving = ws.json(&["plan", "halving.toml", "--json"]);
    assert_eq!(halving["to_train"], 0, "{halving}");
    let mut found = ids(&halving);
    found.sort();
    assert_eq!(found, ["r-24125208db", "r-25ad00e31a", "r-597b0455c1", "r-8bc21d377c", "r-b71a5f1529"], "{halving}");
    assert_eq!(halving["later_rungs"], serde_json::json!([]), "rung 1 is recorded");
    assert_eq!(runs_and_jobs(&ws.db()), before, "no run added, no job started, no attempt made");
    let board = ws.json(&["leaderboard", "ids-checkpoints", "--json"]);
    let board: Vec<&str> = board.as_array().unwrap().iter().filter_map(|r| r["run_id"].as_str()).collect();
    assert!(board.contains(&"r-941ff13c38") && board.contains(&"r-206403f9d5"), "{board:?}");
}

/// tests/data/ids-v2 was written by the release before the general search
/// space (schema 7): every sweep plans exactly the ids it stored, and `run`
/// trains nothing.
#[test]
fn a_database_of_the_release_before_the_general_search_space_keeps_its_run_ids() {
    let ws = fixture_of("ids-v2");
    let before = runs_and_jobs(&ws.db());
    assert_eq!(before.len(), 11, "{before:?}");
    let stored: std::collections::BTreeSet<String> =
        before.iter().map(|r| r.split(' ').next().unwrap().to_string()).collect();
    let sweeps = [
        ("grid.toml", "v2-grid", 2),
        ("checkpoints.toml", "v2-checkpoints", 2),
        ("halving.toml", "v2-halving", 5),
        ("random.toml", "v2-random", 4),
    ];
    for (file, name, n) in sweeps {
        let plan = ws.json(&["plan", file, "--json"]);
        assert_eq!(plan["to_train"], 0, "{file}: {plan}");
        let planned = ids(&plan);
        assert_eq!(planned.len(), n, "{file}: {plan}");
        for id in &planned {
            assert!(stored.contains(id), "{file}: {id} is not a stored run id: {plan}");
        }
        let (code, _, err) = ws.run(&["run", "--yes", file]);
        assert_eq!(code, 0, "{file}: {err}");
        assert!(err.contains(&format!("sweep `{name}`: 0 trained")), "{file}: {err}");
    }
    assert_eq!(runs_and_jobs(&ws.db()), before, "no run added, no job started, no attempt made");
    // The random sweep's draws are those of the stored runs, value for value.
    let plan = ws.json(&["plan", "random.toml", "--json"]);
    let row = |id: &str| plan["runs"].as_array().unwrap().iter().find(|r| r["run_id"] == id).cloned().unwrap();
    let r = row("r-aa67a77be65314b7");
    assert_eq!((r["n_epochs"].clone(), r["batch_size"].clone()), (1.into(), 6.into()), "{r}");
    assert_eq!(r["learning_rate_multiplier"], 0.165, "{r}");
}

#[test]
fn configurations_whose_40_bit_ids_collided_are_both_planned() {
    let ws = fixture();
    // ftsweep 0.1 gave (42 epochs, lr 0.32, batch 164) and (9, 0.51, 164) the
    // id r-b5465147df on this data, and planned 3 runs of these 4.
    let text = std::fs::read_to_string(ws.path("grid.toml"))
        .unwrap()
        .replace("name = \"ids-grid\"", "name = \"collide\"")
        .replace("n_epochs = [1]", "n_epochs = [9, 42]")
        .replace("learning_rate_multiplier = [0.1, 1.0]", "learning_rate_multiplier = [0.32, 0.51]")
        .replace("batch_size = [4]", "batch_size = [164]");
    ws.write("collide.toml", &text);
    let plan = ws.json(&["--db", "new.db", "plan", "collide.toml", "--json"]);
    let ids = ids(&plan);
    assert_eq!(ids.len(), 4, "{plan}");
    let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 4, "{ids:?}");
    assert!(ids.iter().all(|id| id.len() == 18), "r- and 16 hex digits: {ids:?}");
    assert_eq!(ids.iter().filter(|id| id.starts_with("r-b5465147df")).count(), 2, "{ids:?}");
}

#[test]
fn a_stored_run_defined_otherwise_is_never_reused() {
    // Under a 40-bit id: the database's r-8bc21d377c now says lr 0.2, so it
    // is not the planned (1 epoch, lr 0.1, batch 4) run, which trains anew
    // under its own id; the stored run is left as it was.
    let ws = fixture();
    let sql = "SELECT learning_rate_multiplier || ' ' || job_id FROM runs WHERE run_id = 'r-8bc21d377c'";
    let job = query(&ws.db(), sql)[0].split(' ').nth(1).unwrap().to_string();
    let conn = rusqlite::Connection::open(ws.db()).unwrap();
    conn.execute("UPDATE runs SET learning_rate_multiplier = 0.2 WHERE run_id = 'r-8bc21d377c'", []).unwrap();
    drop(conn);
    let plan = ws.json(&["plan", "grid.toml", "--json"]);
    assert_eq!(ids(&plan), ["r-8bc21d377cd9ccda", "r-b71a5f1529"], "{plan}");
    assert_eq!(plan["to_train"], 1, "{plan}");
    let (code, _, err) = ws.run(&["run", "--yes", "grid.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("sweep `ids-grid`: 1 trained"), "{err}");
    assert_eq!(query(&ws.db(), sql), [format!("0.2 {job}")], "the stored run is untouched");

    // Under a 64-bit id: a hash collision or a hand-edited database. Refused
    // (exit 1: the sweep file is fine, the database is not), nothing launched.
    let stored = query(&ws.db(), "SELECT job_id FROM runs WHERE run_id = 'r-8bc21d377cd9ccda'");
    let conn = rusqlite::Connection::open(ws.db()).unwrap();
    conn.execute("UPDATE runs SET seed = 7, state = 'failed' WHERE run_id = 'r-8bc21d377cd9ccda'", []).unwrap();
    drop(conn);
    let before = runs_and_jobs(&ws.db());
    let (code, _, err) = ws.run(&["run", "--yes", "grid.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the database has a run `r-8bc21d377cd9ccda` defined otherwise than the run planned"),
        "{err}"
    );
    assert!(err.contains("seed=7") && err.contains("seed=42"), "stored and planned: {err}");
    assert!(err.contains("hint: nothing was launched"), "{err}");
    assert_eq!(runs_and_jobs(&ws.db()), before, "nothing recorded, nothing launched");
    assert_eq!(query(&ws.db(), "SELECT job_id FROM runs WHERE run_id = 'r-8bc21d377cd9ccda'"), stored);
}

#[test]
fn plan_counts_the_runs_run_makes_and_never_a_negative_cost() {
    let ws = fixture();
    // Nothing left to train: the remaining cost is $0.00, not the -0.0 of
    // an empty float sum.
    let (code, out, err) = ws.run(&["plan", "grid.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 runs (0 to train): ~0 trained tokens, estimated $0.00 for training"), "{out}");
    assert!(!out.contains("$-"), "{out}");
    let (_, json, _) = ws.run(&["plan", "grid.toml", "--json"]);
    assert!(json.contains("\"to_train_estimated_cost_usd\": 0.0") && !json.contains("-0.0"), "{json}");
    // A cancelled run (stopped by `cancel` or early stopping) is not trained
    // again by `run`, so `plan` does not count it either.
    let conn = rusqlite::Connection::open(ws.db()).unwrap();
    conn.execute("UPDATE runs SET state = 'cancelled' WHERE run_id = 'r-b71a5f1529'", []).unwrap();
    drop(conn);
    let (_, out, _) = ws.run(&["plan", "grid.toml"]);
    assert!(out.contains("2 runs (0 to train)"), "{out}");
    let (code, _, err) = ws.run(&["run", "--yes", "grid.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("sweep `ids-grid`: 0 trained"), "{err}");

    // Halving with a replicate: the leader is a continuation, and its
    // replicate trains the whole chain again (2 runs), so 2 + 1 + 2 runs.
    let (code, out, err) = ws.run(&["--db", "fresh.db", "plan", "halving.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("seeds [1]: 2 more runs"), "{out}");
    assert!(out.contains("5 runs (5 to train)"), "{out}");
    let (code, _, err) = ws.run(&["--db", "fresh.db", "run", "--yes", "halving.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("(2 runs)\nsweep: 5 runs: 2 to train"), "{err}");
    // Afterwards the recorded rung and replicates are rows, all done.
    let (code, out, err) = ws.run(&["--db", "fresh.db", "plan", "halving.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("5 runs (0 to train)"), "{out}");
    assert!(!out.contains("rung 1: the best") && !out.contains("more runs"), "nothing is left to estimate: {out}");
}
