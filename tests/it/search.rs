//! Spending less per decision, on the real binary: epochs from checkpoints,
//! early stopping, successive halving (killed mid-rung and resumed against
//! `ftsweep serve`) and seed replicates.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::protocol::{Faults, KEY, Server, jobs_by_run, openai_sweep, run_sweep, start_proxy};
use crate::util::{Workspace, query, sweep_toml};

fn with_search(text: &str, search: &str) -> String {
    text.replace("[search]\nstrategy = \"grid\"\n", search)
}

fn runs(rows: &Value) -> Vec<&Value> {
    rows.as_array().unwrap().iter().filter(|r| r["kind"] == "run").collect()
}

#[test]
fn shorter_epochs_are_checkpoints_of_one_job() {
    let ws = Workspace::new();
    let hp = "n_epochs = [1, 2, 3]\nlearning_rate_multiplier = [1.0]\nbatch_size = [16]";
    let search = "[search]\nstrategy = \"grid\"\nepochs_from_checkpoints = true\n";
    ws.write("s.toml", &with_search(&sweep_toml("ck", hp), search));
    let (code, plan, err) = ws.run(&["plan", "s.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(plan.contains("3 runs from 1 jobs"), "{plan}");
    assert!(plan.contains("(50% saved)"), "1 + 2 + 3 epochs become 3: {plan}");
    let (code, _, err) = ws.run(&["run", "s.toml"]);
    assert_eq!(code, 0, "{err}");
    let rows = ws.json(&["leaderboard", "ck", "--json"]);
    let runs = runs(&rows);
    assert_eq!(runs.len(), 3);
    let job = runs.iter().find(|r| r["n_epochs"] == 3).unwrap();
    assert_eq!(job["origin"], "job");
    for r in runs.iter().filter(|r| r["n_epochs"] != 3) {
        assert_eq!(r["status"], "done", "{r}");
        assert_eq!(r["origin"], "checkpoint");
        assert_eq!(r["source_run"], job["run_id"]);
        assert!(r["model"].as_str().unwrap().contains(":ckpt-step-"), "{r}");
        assert!(r["note"].as_str().unwrap().contains("checkpoint: epoch"), "{r}");
        // The tokens behind the model: its share of the job's.
        let share = job["trained_tokens"].as_i64().unwrap() * r["n_epochs"].as_i64().unwrap() / 3;
        assert_eq!(r["trained_tokens"].as_i64(), Some(share));
    }
    let jobs = query(&ws.db(), "SELECT COUNT(DISTINCT job_id) FROM runs");
    assert_eq!(jobs, vec!["1"], "one job trained the three runs");
}

#[test]
fn a_diverging_job_is_stopped_early_and_costs_a_fraction_of_a_run() {
    let ws = Workspace::new();
    let hp = "n_epochs = [3]\nlearning_rate_multiplier = [1.0, 30.0]\nbatch_size = [64]";
    ws.write("s.toml", &(sweep_toml("es", hp) + "\n[early_stopping]\n"));
    let (code, _, err) = ws.run(&["run", "s.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("STOPPED"), "{err}");
    let rows = ws.json(&["leaderboard", "es", "--json"]);
    let runs = runs(&rows);
    let fine = runs.iter().find(|r| r["learning_rate_multiplier"] == 1.0).unwrap();
    let wild = runs.iter().find(|r| r["learning_rate_multiplier"] == 30.0).unwrap();
    assert!(fine["stopped_early"].is_null(), "a healthy run is not stopped: {fine}");
    let reason = wild["stopped_early"].as_str().expect("the diverging run is stopped");
    assert!(reason.contains("diverged"), "{reason}");
    let full = fine["trained_tokens"].as_f64().unwrap();
    let spent = query(
        &ws.db(),
        &format!("SELECT trained_tokens FROM runs WHERE run_id = '{}'", wild["run_id"].as_str().unwrap()),
    );
    let spent: f64 = spent[0].parse().unwrap();
    eprintln!("diverging run: {spent} of {full} trained tokens ({:.0}%): {reason}", 100.0 * spent / full);
    assert!(spent > 0.0 && spent <= full * 0.5, "stopped within the first half: {spent} of {full}");
}

#[test]
fn a_diverging_hosted_job_is_cancelled_and_costs_a_fraction_of_a_run() {
    // Jobs that last (2 ms per example: 1.4 s an epoch), so that events stream while they train.
    let ws = Workspace::new();
    let server = Server::start_args(&ws, "serve.db", KEY, &["--example-delay-ms", "2"]);
    let hp = "n_epochs = [3]\nlearning_rate_multiplier = [30.0]\nbatch_size = [64]";
    ws.write("s.toml", &(openai_sweep("hes", &server.url, hp) + "\n[early_stopping]\n"));
    let (code, _, err) = run_sweep(&ws, "s.toml", &[]);
    assert_eq!(code, 0, "{err}");
    let rows = ws.json(&["leaderboard", "hes", "--json"]);
    let run = runs(&rows)[0].clone();
    let reason = run["stopped_early"].as_str().unwrap_or_else(|| panic!("stopped early: {run}\n{err}"));
    assert!(reason.contains("diverged"), "{reason}");
    // The plan's estimate of the whole 3-epoch job.
    let full: f64 = query(&ws.db(), "SELECT estimated_tokens FROM runs")[0].parse().unwrap();
    let spent: f64 = query(&ws.db(), "SELECT trained_tokens FROM runs")[0].parse().unwrap();
    eprintln!("hosted diverging run: {spent} of {full} trained tokens ({:.0}%): {reason}", 100.0 * spent / full);
    assert!(spent > 0.0 && spent <= full * 0.5, "cancelled within the first half: {spent} of {full}");
    // The job at the server was cancelled, not run to its end.
    let job_id = query(&ws.db(), "SELECT job_id FROM runs")[0].clone();
    let job: Value = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let url = format!("{}/fine_tuning/jobs/{job_id}", server.url);
        reqwest::Client::new().get(url).bearer_auth(KEY).send().await.unwrap().json().await.unwrap()
    });
    assert_eq!(job["status"], "cancelled", "{job}");
    assert_eq!(job["trained_tokens"].as_f64(), Some(spent), "the cost is the server's count");
}

const HALVING: &str = "[search]\nstrategy = \"successive_halving\"\neta = 3\nmin_epochs = 1\nmax_epochs = 3\n";
const HALVING_HP: &str = "learning_rate_multiplier = [0.3, 1.0, 3.0]\nbatch_size = [8, 32]";

/// (run id → (rung, origin, parent)) of a halving sweep's runs.
fn rungs_of(rows: &Value) -> BTreeMap<String, (u64, String, String)> {
    runs(rows)
        .iter()
        .map(|r| {
            let id = r["run_id"].as_str().unwrap().to_string();
            let parent = r["source_run"].as_str().unwrap_or("").to_string();
            (id, (r["rung"].as_u64().unwrap(), r["origin"].as_str().unwrap().to_string(), parent))
        })
        .collect()
}

#[test]
fn halving_promotes_the_best_third_and_continues_their_models() {
    let ws = Workspace::new();
    ws.write("s.toml", &with_search(&sweep_toml("sh", HALVING_HP), HALVING));
    let (code, plan, err) = ws.run(&["plan", "s.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(plan.contains("rung 1: the best 2 configurations continue from their own models to 3 epochs"), "{plan}");
    let (code, _, err) = ws.run(&["run", "s.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("rung 1: the best 2 of 6 continue to 3 epochs"), "{err}");
    let rows = ws.json(&["leaderboard", "sh", "--json"]);
    let rungs = rungs_of(&rows);
    assert_eq!(rungs.values().filter(|r| r.0 == 0).count(), 6);
    let promoted: Vec<&(u64, String, String)> = rungs.values().filter(|r| r.0 == 1).collect();
    assert_eq!(promoted.len(), 2);
    // The promoted are the two best of rung 0, and continue their models.
    let mut rung0: Vec<&Value> = runs(&rows).into_iter().filter(|r| r["rung"] == 0).collect();
    rung0.sort_by(|a, b| b["score"].as_f64().partial_cmp(&a["score"].as_f64()).unwrap());
    for (_, origin, parent) in &promoted {
        assert_eq!(origin, "continue");
        assert!(rung0[..2].iter().any(|r| r["run_id"] == parent.as_str()), "{parent} is among the best two");
    }
    for r in runs(&rows).iter().filter(|r| r["rung"] == 1) {
        assert_eq!(r["n_epochs"], 3);
        assert_eq!(r["status"], "done");
    }
    let (code, table, _) = ws.run(&["leaderboard", "sh"]);
    assert_eq!(code, 0);
    let rung1 = table.lines().find(|l| l.contains("│    1 ┆      3 ┆    2 ┆")).unwrap_or_else(|| panic!("{table}"));
    let own: i64 = runs(&rows).iter().filter(|r| r["rung"] == 1).map(|r| r["job_tokens"].as_i64().unwrap()).sum();
    assert!(rung1.contains(&own.to_string()), "rung 1's tokens are its own jobs': {own} in {rung1}");
    // Running again trains nothing: the same promotions are planned again.
    let (code, _, err) = ws.run(&["run", "s.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("0 trained"), "{err}");
    assert!(err.contains("8 reused"), "each run counted once across the passes: {err}");
    assert_eq!(rungs, rungs_of(&ws.json(&["leaderboard", "sh", "--json"])));
}

#[test]
fn killed_mid_rung_and_resumed_halving_neither_repeats_nor_skips_a_job() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ws = Workspace::new();
    // One job at a time at the server, so that kills land inside rungs.
    let server = Server::start_with(&ws, "serve.db", KEY, 1);
    let (tx, mut creates) = tokio::sync::mpsc::unbounded_channel();
    let faults = Faults { on_create: Some(tx), hold: Duration::from_millis(300), ..Faults::default() };
    let proxy = runtime.block_on(start_proxy(server.url.clone(), faults));
    ws.write("s.toml", &with_search(&openai_sweep("shk", &proxy.url, HALVING_HP), HALVING));
    let started = Instant::now();
    let mut creates_seen = 0usize;
    let mut kills = Vec::new();
    // Kill right after the 2nd, 4th, 6th, 7th and 8th job creates reached the
    // server (the 7th and 8th are rung 1's), and let the last start finish.
    for target in [2usize, 4, 6, 7, 8] {
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("ftsweep"))
            .current_dir(ws.dir.path())
            .args(["run", "s.toml", "--yes"])
            .env("FTSWEEP_TEST_KEY", KEY)
            .env_remove("FTSWEEP_DB")
            .env_remove("OPENAI_BASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while creates_seen < target && Instant::now() < deadline && child.try_wait().unwrap().is_none() {
            if creates.try_recv().is_ok() {
                creates_seen += 1;
            } else {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if child.try_wait().unwrap().is_none() {
            let _ = child.kill();
            kills.push(creates_seen);
        }
        let _ = child.wait();
    }
    let (code, _, err) = run_sweep(&ws, "s.toml", &["--yes"]);
    assert_eq!(code, 0, "{err}");
    let rows = ws.json(&["leaderboard", "shk", "--json"]);
    let jobs = runtime.block_on(jobs_by_run(&server.url));
    eprintln!(
        "halving crash test: kills after creates {kills:?}, jobs {jobs:?}, {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(kills.len() >= 4, "most starts were killed mid-sweep: {kills:?}");
    assert!(kills.iter().any(|&k| k >= 7), "a kill landed in rung 1: {kills:?}");
    let rungs = rungs_of(&rows);
    assert_eq!(rungs.len(), 8, "6 configurations, then the best 2: {rungs:?}");
    assert!(runs(&rows).iter().all(|r| r["status"] == "done"), "{rows}");
    // Every run has exactly one job, and no job belongs to a run outside the sweep.
    assert_eq!(jobs.keys().cloned().collect::<Vec<_>>(), rungs.keys().cloned().collect::<Vec<_>>());
    assert!(jobs.values().all(|&n| n == 1), "exactly one job per run: {jobs:?}");
}

#[test]
fn replicates_group_the_leaders_seeds_and_best_ranks_by_their_mean() {
    let ws = Workspace::new();
    let hp = "n_epochs = [3]\nlearning_rate_multiplier = [1.0, 10.0]\nbatch_size = [16]";
    let search = "[search]\nstrategy = \"grid\"\nreplicate_top = 1\nreplicate_seeds = [1, 2]\n";
    ws.write("s.toml", &with_search(&sweep_toml("rep", hp), search));
    let (code, _, err) = ws.run(&["run", "s.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("replicates: the top 1 configuration(s) again with seeds [1, 2] (2 runs)"), "{err}");
    let rows = ws.json(&["leaderboard", "rep", "--json"]);
    let runs = runs(&rows);
    assert_eq!(runs.len(), 4);
    let group: Vec<&&Value> = runs.iter().filter(|r| !r["seed_group"].is_null()).collect();
    assert_eq!(group.len(), 3, "the leader and its two replicates");
    let scores: Vec<f64> = group.iter().map(|r| r["score"].as_f64().unwrap()).collect();
    let mean = scores.iter().sum::<f64>() / 3.0;
    assert!((group[0]["seed_group"]["mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    let (code, table, _) = ws.run(&["leaderboard", "rep"]);
    assert_eq!(code, 0);
    assert!(table.contains("seed replicates"), "{table}");
    let (code, out, err) = ws.run(&["best", "rep"]);
    assert_eq!(code, 0, "{err}");
    let best = group.iter().max_by(|a, b| a["score"].as_f64().partial_cmp(&b["score"].as_f64()).unwrap()).unwrap();
    assert_eq!(out.trim(), best["model"].as_str().unwrap());
    assert!(err.contains("best mean exact_match over 3 seeds"), "{err}");
}
