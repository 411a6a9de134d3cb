//! The local provider's weights in the sweep's database: one compact model per run when the
//! sweep reads no earlier checkpoint, `compare RUN@EPOCH`, `ftsweep prune` (tables keep working,
//! dropped models say so), and weights stored before migration 0006 still loading.

use serde_json::Value;

use crate::util::{Workspace, latest_schema, query, sweep_toml};

const HP: &str = "n_epochs = [3]\nlearning_rate_multiplier = [0.3, 1.0, 3.0]\nbatch_size = [32]";

/// A workspace with the 3-run sweep `w` trained and evaluated.
fn trained(extra: &str) -> Workspace {
    let ws = Workspace::new();
    ws.write("s.toml", &(sweep_toml("w", HP) + extra));
    let (code, _, err) = ws.run(&["run", "s.toml"]);
    assert_eq!(code, 0, "{err}");
    ws
}

fn runs(rows: &Value) -> Vec<&Value> {
    rows.as_array().unwrap().iter().filter(|r| r["kind"] == "run").collect()
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("no `{key}` in {v}"))
}

#[test]
fn a_sweep_that_reads_no_checkpoint_keeps_one_compact_model_per_run() {
    let ws = trained("");
    let db = ws.db();
    // One blob per run (its last epoch's checkpoint) and the final model referring to it.
    let blobs = query(&db, "SELECT model FROM local_models WHERE same_as IS NULL ORDER BY model");
    let refs = query(&db, "SELECT same_as FROM local_models WHERE same_as IS NOT NULL ORDER BY same_as");
    assert_eq!(blobs.len(), 3, "{blobs:?}");
    assert_eq!(refs, blobs, "each final model is its last checkpoint");
    assert!(blobs.iter().all(|m| m.ends_with(":ckpt-step-69")), "23 steps an epoch, 3 epochs: {blobs:?}");
    let magic = query(&db, "SELECT DISTINCT hex(substr(weights, 1, 6)) FROM local_models WHERE same_as IS NULL");
    assert_eq!(magic, [hex("FTSWM3")]);
    // Before: 4 exact blobs of 895 477 bytes a run (the last three epochs and the final model).
    let sizes = query(&db, "SELECT length(weights) FROM local_models WHERE same_as IS NULL");
    let sizes: Vec<u64> = sizes.iter().map(|s| s.parse().unwrap()).collect();
    eprintln!("weights per run: {sizes:?} bytes");
    assert!(sizes.iter().all(|&b| b < 300_000), "{sizes:?}");
    // Every epoch's checkpoint is still recorded, with its metrics.
    assert_eq!(query(&db, "SELECT COUNT(*) FROM checkpoints"), ["9"]);
    let rows = ws.json(&["leaderboard", "w", "--json"]);
    let r = runs(&rows)[0];
    let (id, model) = (str_of(r, "run_id"), str_of(r, "model"));
    // An earlier checkpoint's weights were not kept, and asking for them says why.
    let first = query(&db, &format!("SELECT model FROM checkpoints WHERE run_id = '{id}' AND epoch = 1"));
    let (code, _, err) = ws.run(&["eval", "--model", &first[0], "--sweep", "w"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("did not keep this checkpoint's weights"), "{err}");
    assert!(err.contains("[evaluation] checkpoints = true"), "{err}");
    // The final model answers, with the run's score.
    let out = ws.json(&["eval", "--model", model, "--sweep", "w", "--json"]);
    assert_eq!(out["scores"][0]["mean"], r["score"], "{out}");
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02X}")).collect()
}

#[test]
fn compare_at_an_epoch_takes_the_last_one_and_says_what_earlier_ones_need() {
    let ws = trained("");
    let rows = ws.json(&["leaderboard", "w", "--json"]);
    let (a, b) = (str_of(runs(&rows)[0], "run_id"), str_of(runs(&rows)[1], "run_id"));
    // The last epoch is the run itself.
    let c = ws.json(&["compare", &format!("{a}@3"), b, "--json"]);
    assert_eq!(c["a"]["run_id"], a);
    assert!(c["a"]["epoch"].is_null(), "{c}");
    let (code, _, err) = ws.run(&["compare", &format!("{}@2", &a[..8]), b]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`[evaluation] checkpoints` is false"), "{err}");
    assert!(err.contains("hint: set `checkpoints = true` under [evaluation]"), "{err}");
    assert!(err.contains(&format!("its last epoch, 3, is the run itself: `{a}`")), "{err}");
    assert!(!err.contains("no run or model"), "{err}");

    // With checkpoints evaluated, the kept epochs compare, and an epoch not kept says so.
    let ws = Workspace::new();
    let hp = "n_epochs = [5]\nlearning_rate_multiplier = [1.0, 3.0]\nbatch_size = [32]";
    ws.write("s.toml", &sweep_toml("k", hp).replace("[evaluation]\n", "[evaluation]\ncheckpoints = true\n"));
    let (code, _, err) = ws.run(&["run", "s.toml"]);
    assert_eq!(code, 0, "{err}");
    let rows = ws.json(&["leaderboard", "k", "--json"]);
    let (a, b) = (str_of(runs(&rows)[0], "run_id"), str_of(runs(&rows)[1], "run_id"));
    let c = ws.json(&["compare", &format!("{a}@4"), &format!("{a}@3"), "--json"]);
    assert_eq!((&c["a"]["epoch"], &c["b"]["epoch"]), (&Value::from(4), &Value::from(3)));
    let (code, _, err) = ws.run(&["compare", &format!("{a}@1"), b]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("run {a} of sweep `k` has no evaluated checkpoint at epoch 1")), "{err}");
    assert!(err.contains("its evaluated checkpoints are at epochs 3, 4"), "{err}");
}

/// The database file's size with its WAL.
fn size(ws: &Workspace) -> u64 {
    ["ftsweep.db", "ftsweep.db-wal"].iter().filter_map(|f| std::fs::metadata(ws.path(f)).ok()).map(|m| m.len()).sum()
}

#[test]
fn prune_drops_the_weights_of_runs_no_longer_needed_and_every_table_still_works() {
    let ws = trained("");
    let before = ws.json(&["leaderboard", "w", "--json"]);
    let (_, best, _) = ws.run(&["best", "w"]);
    let (_, table, _) = ws.run(&["leaderboard", "w"]);
    let ids: Vec<&str> = runs(&before).iter().map(|r| str_of(r, "run_id")).collect();
    let best_run = runs(&before).iter().find(|r| r["model"] == best.trim()).map(|r| str_of(r, "run_id")).unwrap();
    // An alias keeps its run's weights too.
    let aliased = *ids.iter().find(|id| **id != best_run).unwrap();
    let (code, _, err) = ws.run(&["promote", aliased, "--alias", "staging"]);
    assert_eq!(code, 0, "{err}");
    let compared = ws.json(&["compare", ids[0], ids[2], "--json"]);

    // Without --yes and without a terminal: nothing is dropped, exit code 2.
    let (code, out, err) = ws.run(&["prune", "w", "--keep-best", "0"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("refusing to drop weights without confirmation"), "{err}");
    assert!(err.contains("hint: pass --yes"), "{err}");
    assert_eq!(query(&ws.db(), "SELECT COUNT(*) FROM local_models WHERE dropped IS NOT NULL"), ["0"]);

    let full = size(&ws);
    let (code, out, err) = ws.run(&["prune", "w", "--keep-best", "0", "--yes"]);
    assert_eq!(code, 0, "{err}");
    eprintln!("{out}");
    assert!(out.contains(&format!("keeping {best_run}: `ftsweep best` picks it")), "{out}");
    assert!(out.contains(&format!("keeping {aliased}: alias `staging` points to it")), "{out}");
    assert!(out.contains("dropping the weights of 1 run of sweep `w` (2 models"), "{out}");
    let pruned = size(&ws);
    assert!(pruned < full, "the file shrank: {full} -> {pruned} bytes");

    // Every table reads the same.
    assert_eq!(ws.json(&["leaderboard", "w", "--json"]), before);
    assert_eq!(ws.run(&["leaderboard", "w"]).1, table);
    assert_eq!(ws.run(&["best", "w"]).1, best);
    assert_eq!(ws.json(&["compare", ids[0], ids[2], "--json"]), compared);
    let (code, _, err) = ws.run(&["status", "w"]);
    assert_eq!(code, 0, "{err}");
    // The dropped run's replies stay cached; on new data, its model says what happened, and a
    // kept one still answers.
    let dropped = runs(&before).into_iter().find(|r| ![best_run, aliased].contains(&str_of(r, "run_id"))).unwrap();
    let dropped = str_of(dropped, "model");
    let (code, _, err) = ws.run(&["eval", "--model", dropped, "--sweep", "w"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("184 replies from the cache"), "{err}");
    let line = r#"{"messages":[{"role":"user","content":"Who painted the ceiling of the chapel?"},{"role":"assistant","content":"art"}]}"#;
    ws.write("new.jsonl", &format!("{line}\n"));
    let (code, _, err) = ws.run(&["eval", "--model", dropped, "--data", "new.jsonl", "--sweep", "w"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("its weights were dropped by `ftsweep prune w`"), "{err}");
    let (code, _, err) = ws.run(&["eval", "--model", best.trim(), "--data", "new.jsonl", "--sweep", "w"]);
    assert_eq!(code, 0, "{err}");
    // Again: nothing left to drop.
    let (code, out, _) = ws.run(&["prune", "w", "--keep-best", "0", "--yes"]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing to drop"), "{out}");

    // Named explicitly, even the best run's weights go.
    let (code, out, err) = ws.run(&["prune", "w", "--runs", &best_run[..8], "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("note: {best_run}: `ftsweep best` picks it; its weights are dropped as asked")),
        "{err}"
    );
    assert!(out.contains("dropping the weights of 1 run of"), "{out}");
    assert_eq!(ws.json(&["leaderboard", "w", "--json"]), before);
    let (code, _, err) = ws.run(&["prune", "w", "--runs", "r-nope", "--yes"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("sweep `w` has no run `r-nope`"), "{err}");
}

#[test]
fn weights_stored_before_migration_0006_still_load() {
    let ws = trained("");
    let rows = ws.json(&["leaderboard", "w", "--json"]);
    let r = runs(&rows)[0];
    let model = str_of(r, "model");
    // Make the database what an older ftsweep wrote: schema 5, the final model a copy of its last
    // checkpoint's weights in the first (exact f32) encoding.
    crate::evalstore::to_schema_6(&ws.db(), "");
    {
        let conn = rusqlite::Connection::open(ws.db()).unwrap();
        let target: String =
            conn.query_row("SELECT same_as FROM local_models WHERE model = ?1", [model], |r| r.get(0)).unwrap();
        let blob: Vec<u8> =
            conn.query_row("SELECT weights FROM local_models WHERE model = ?1", [&target], |r| r.get(0)).unwrap();
        let exact = ftsweep::provider::local::trainer::ReplyModel::from_bytes(&blob).unwrap().to_bytes();
        assert_eq!(&exact[..6], b"FTSWM1");
        conn.execute(
            "UPDATE local_models SET weights = ?1, same_as = NULL WHERE model = ?2",
            rusqlite::params![exact, model],
        )
        .unwrap();
        conn.execute("DELETE FROM local_models WHERE same_as IS NOT NULL", []).unwrap();
        conn.execute_batch(
            "ALTER TABLE local_models DROP COLUMN same_as; ALTER TABLE local_models DROP COLUMN dropped;
             PRAGMA user_version = 5;",
        )
        .unwrap();
    }
    let out = ws.json(&["eval", "--model", model, "--sweep", "w", "--json"]);
    assert_eq!(out["scores"][0]["mean"], r["score"], "the old blob answers as before: {out}");
    assert_eq!(query(&ws.db(), "PRAGMA user_version"), [latest_schema()], "migrated on open");
    // prune handles the old rows: everything but the best run's weights goes.
    let (code, out, err) = ws.run(&["prune", "w", "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dropping the weights of"), "{out}");
    assert_eq!(ws.json(&["leaderboard", "w", "--json"]), rows);
}
