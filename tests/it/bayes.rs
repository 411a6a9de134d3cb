//! Bayesian search on the real binary, local provider: its keys' errors, a
//! sweep that runs `runs` configurations proposed as slots free, the same
//! run ids on a fresh database, and after a kill -9 mid-way and `resume`,
//! the same runs as an uninterrupted sweep.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Workspace, assert_refused, query, sweep_toml};

/// A Bayesian sweep over a log-uniform learning rate, two batch sizes and two epoch counts.
fn bayes_toml(name: &str, keys: &str) -> String {
    sweep_toml(name, "n_epochs = [1, 2]\nlearning_rate_multiplier = { log_uniform = [0.05, 20] }\nbatch_size = [8, 32]")
        .replace("strategy = \"grid\"", &format!("strategy = \"bayes\"\n{keys}"))
}

/// The sweep's runs, in the order they were added.
fn planned(ws: &Workspace) -> Vec<String> {
    query(&ws.db(), "SELECT run_id FROM sweep_runs WHERE active = 1 ORDER BY position")
}

#[test]
fn bayesian_keys_are_refused_with_the_key_line_and_fix() {
    let ws = Workspace::new();
    let p = ws.write("s.toml", &bayes_toml("b", ""));
    assert_refused(&ws, &p, &["s.toml:9", "search.runs", "Bayesian search needs the number of runs", "runs = 8"]);
    let p = ws.write("s.toml", &bayes_toml("b", "runs = 4\nstartup = 6"));
    assert_refused(&ws, &p, &["s.toml:11", "search.startup", "(6) is more than `runs` (4)", "at most 4"]);
    let p = ws.write("s.toml", &bayes_toml("b", "runs = 1001"));
    assert_refused(&ws, &p, &["s.toml:10", "search.runs", "out of range"]);
    let p = ws.write(
        "s.toml",
        &sweep_toml("g", "n_epochs = [1]").replace("strategy = \"grid\"", "strategy = \"grid\"\nstartup = 2"),
    );
    assert_refused(&ws, &p, &["s.toml:10", "search.startup", "only applies to Bayesian search"]);
}

#[test]
fn a_bayesian_sweep_runs_its_runs_and_plans_the_same_ids_on_a_fresh_database() {
    let text = bayes_toml("b", "runs = 6\nstartup = 3");
    let ws = Workspace::new();
    ws.write("s.toml", &text);
    let (code, plan, err) = ws.run(&["plan", "s.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(plan.contains("4 more proposed as results land"), "{plan}");
    let (code, _, err) = ws.run(&["run", "s.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("proposed 1 configuration(s) from the results so far"), "{err}");
    let first = planned(&ws);
    assert_eq!(first.len(), 6, "{first:?}");
    let done = query(&ws.db(), "SELECT COUNT(*) FROM runs WHERE state = 'done'");
    assert_eq!(done, ["6"]);
    let other = Workspace::new();
    other.write("s.toml", &text);
    let (code, _, err) = other.run(&["run", "s.toml"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(planned(&other), first, "the same proposals, in the same order");
    // Running again trains nothing and proposes nothing more.
    let (code, _, err) = ws.run(&["run", "s.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("0 trained"), "{err}");
    assert_eq!(planned(&ws), first);
}

#[test]
fn killed_mid_way_and_resumed_a_bayesian_sweep_ends_with_the_runs_of_an_uninterrupted_one() {
    let text = bayes_toml("b", "runs = 8\nstartup = 3");
    let whole = Workspace::new();
    whole.write("s.toml", &text);
    let (code, _, err) = whole.run(&["run", "s.toml"]);
    assert_eq!(code, 0, "{err}");
    let want = planned(&whole);
    assert_eq!(want.len(), 8);

    let ws = Workspace::new();
    ws.write("s.toml", &text);
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("ftsweep"))
        .current_dir(ws.dir.path())
        .args(["run", "s.toml", "--yes"])
        .env_remove("FTSWEEP_DB")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting ftsweep run");
    // Killed once some runs are done and others are not.
    let started = Instant::now();
    let mut killed_at = None;
    while started.elapsed() < Duration::from_secs(300) {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        let done: usize = if ws.db().exists() {
            let q = "SELECT COUNT(*) FROM runs WHERE state = 'done'";
            std::panic::catch_unwind(|| query(&ws.db(), q)).ok().and_then(|v| v[0].parse().ok()).unwrap_or(0)
        } else {
            0
        };
        if done >= 3 {
            let status = Command::new("kill").args(["-9", &child.id().to_string()]).status().expect("kill");
            assert!(status.success());
            killed_at = Some(done);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
    let done = killed_at.expect("the sweep was killed mid-way");
    assert!(done < 8, "killed before its end: {done} done");
    let (code, _, err) = ws.run(&["resume", "b"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(planned(&ws), want, "the same proposals after a kill -9 at {done} done runs");
    assert_eq!(query(&ws.db(), "SELECT COUNT(*) FROM runs WHERE state = 'done'"), ["8"]);
}
