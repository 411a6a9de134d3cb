//! Durable sweeps on the real binary: kill -9 at random moments and resume,
//! a budget that is never exceeded, two processes on one database, Ctrl-C.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::protocol::{Faults, KEY, Server, by_config, jobs_by_run, openai_sweep, run_sweep, start_proxy};
use crate::util::{Workspace, query, sweep_toml};

/// `ftsweep run FILE` in the background, its output discarded.
fn spawn_run(ws: &Workspace, file: &str) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("ftsweep"))
        .current_dir(ws.dir.path())
        .args(["run", file, "--yes"])
        .env("FTSWEEP_TEST_KEY", KEY)
        .env_remove("FTSWEEP_DB")
        .env_remove("OPENAI_BASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting ftsweep run")
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill").args([sig, &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
}

async fn job_status(url: &str, id: &str) -> String {
    let v: Value = reqwest::Client::new()
        .get(format!("{url}/fine_tuning/jobs/{id}"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["status"].as_str().unwrap_or_default().to_string()
}

const HP16: &str = "n_epochs = [3, 5]\nlearning_rate_multiplier = [0.3, 1.0, 3.0, 10.0]\nbatch_size = [2, 4]";

#[test]
fn killed_at_twenty_random_moments_the_sweep_still_ends_with_one_job_per_run() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The reference: the same sweep, uninterrupted.
    let reference = {
        let ws = Workspace::new();
        let server = Server::start(&ws, "serve.db", KEY);
        ws.write("s.toml", &openai_sweep("crash", &server.url, HP16));
        let (code, _, err) = run_sweep(&ws, "s.toml", &[]);
        assert_eq!(code, 0, "{err}");
        by_config(&ws.json(&["leaderboard", "crash", "--json"]))
    };
    assert_eq!(reference.len(), 16);

    let ws = Workspace::new();
    // One job at a time at the server, so that the sweep outlasts the kills.
    let server = Server::start_with(&ws, "serve.db", KEY, 1);
    let (tx, mut creates) = tokio::sync::mpsc::unbounded_channel();
    let faults = Faults { on_create: Some(tx), hold: Duration::from_millis(300), ..Faults::default() };
    let proxy = runtime.block_on(start_proxy(server.url.clone(), faults));
    ws.write("s.toml", &openai_sweep("crash", &proxy.url, HP16));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20);
    let started = Instant::now();
    let mut kills = 0;
    let mut after_create = 0;
    let mut starts = 0;
    while kills < 20 && starts < 60 {
        let i = starts;
        starts += 1;
        while creates.try_recv().is_ok() {}
        let mut child = spawn_run(&ws, "s.toml");
        // Half the kills land right after a job create reached the server
        // (its answer held back), the others at a random moment.
        let on_create = i % 2 == 0;
        // A start aimed at a create waits for one (the server's queue may hold the
        // sweep's slots for a while); the others die at a random moment.
        let wait = rng.random_range(150..1200);
        let deadline = Instant::now() + Duration::from_millis(if on_create { 8000 } else { wait });
        let mut killed_after_create = false;
        loop {
            if on_create && creates.try_recv().is_ok() {
                killed_after_create = true;
                break;
            }
            if Instant::now() >= deadline || child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if child.try_wait().unwrap().is_none() {
            signal(&child, "-9");
            kills += 1;
            after_create += usize::from(killed_after_create);
            let _ = child.wait();
        } else {
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "a start failed: {err}");
        }
    }
    // The last start runs to the end.
    let (code, _, err) = run_sweep(&ws, "s.toml", &["--yes"]);
    assert_eq!(code, 0, "{err}");
    let rows = ws.json(&["leaderboard", "crash", "--json"]);
    assert!(rows.as_array().unwrap().iter().all(|r| r["status"] == "done"), "every run is evaluated: {rows}");
    let jobs = runtime.block_on(jobs_by_run(&server.url));
    eprintln!(
        "crash test: {kills} kill -9 in {starts} starts ({after_create} right after a job create), {} jobs for 16 runs, {:.1}s",
        jobs.values().sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(kills, 20, "20 starts were killed mid-sweep ({starts} starts)");
    assert!(after_create >= 3, "some kills landed right after a create: {after_create}");
    assert_eq!(jobs.len(), 16, "{jobs:?}");
    assert!(jobs.values().all(|&n| n == 1), "exactly one job per run: {jobs:?}");
    assert_eq!(by_config(&rows), reference, "the ranking equals an uninterrupted sweep's");
}

#[test]
fn a_budget_launches_only_what_fits_and_is_never_exceeded() {
    let ws = Workspace::new();
    // Local runs priced at $10 per million tokens: an epoch of the example
    // data (59,054 tokens) costs about $0.59.
    let text = sweep_toml("b", "n_epochs = [1, 2, 4]\nlearning_rate_multiplier = [1.0]\nbatch_size = [16, 32]")
        .replace("max_concurrent = 2", "max_concurrent = 2\nbudget_usd = 4.0")
        + "\n[pricing]\ntraining_per_million = 10.0\ninput_per_million = 0.0\noutput_per_million = 0.0\n";
    let sweep = ws.write("b.toml", &text);
    let (code, _, err) = ws.run(&["run", sweep.to_str().unwrap(), "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("SKIPPED") && err.contains("over its budget of $4.00"), "says which and why:\n{err}");
    let spent: f64 = query(&ws.db(), "SELECT sum(cost_usd) FROM runs").first().unwrap().parse().unwrap();
    let tokens: f64 = query(&ws.db(), "SELECT sum(trained_tokens) FROM runs").first().unwrap().parse().unwrap();
    assert!(spent <= 4.0 + 1e-9, "actual spend ${spent} stays within the budget");
    assert!((spent - tokens * 10.0 / 1e6).abs() < 1e-6, "spend is reconciled from trained tokens");
    let done = query(&ws.db(), "SELECT count(*) FROM runs WHERE state = 'done'")[0].parse::<u32>().unwrap();
    assert!((2..6).contains(&done), "some runs fit, not all: {done}");
    let status = ws.json(&["status", "b", "--json"]);
    assert!((status[0]["budget"]["spent_usd"].as_f64().unwrap() - spent).abs() < 1e-9);
    assert_eq!(status[0]["budget"]["budget_usd"], 4.0);
    let skipped: Vec<&Value> =
        status[0]["runs"].as_array().unwrap().iter().filter(|r| r["state"] == "planned").collect();
    assert_eq!(skipped.len(), 6 - done as usize);
    assert!(skipped.iter().all(|r| r["note"].as_str().unwrap().contains("budget")));
    // Without --yes, and no terminal to ask on, a run over the threshold refuses.
    let (code, _, err) = ws.run(&["run", sweep.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn two_processes_on_one_database_train_each_run_once() {
    let ws = Workspace::new();
    ws.write(
        "s.toml",
        &sweep_toml("two", "n_epochs = [2, 4]\nlearning_rate_multiplier = [0.5, 1.0, 2.0]\nbatch_size = [4]"),
    );
    let a = spawn_run(&ws, "s.toml");
    let b = spawn_run(&ws, "s.toml");
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let (ea, eb) = (String::from_utf8_lossy(&oa.stderr), String::from_utf8_lossy(&ob.stderr));
    assert!(oa.status.success() && ob.status.success(), "{ea}\n---\n{eb}");
    for e in [&ea, &eb] {
        assert!(!e.contains("locked"), "no `database is locked`: {e}");
    }
    assert_eq!(
        query(&ws.db(), "SELECT count(*) FROM runs WHERE state = 'done' AND attempt = 1"),
        ["6"],
        "each run trained once"
    );
    let trained = |e: &str| -> usize {
        let line = e.lines().find(|l| l.starts_with("sweep `two`:")).unwrap_or_default();
        line.split(": ").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    assert_eq!(trained(&ea) + trained(&eb), 6, "the two processes shared the runs:\n{ea}\n---\n{eb}");
}

#[test]
fn ctrl_c_leaves_no_run_marked_running_without_a_live_job() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Local: jobs die with the process, so their runs go back to planned.
    let ws = Workspace::new();
    ws.write(
        "s.toml",
        &sweep_toml("c", "n_epochs = [20, 30]\nlearning_rate_multiplier = [0.5, 1.0]\nbatch_size = [1]"),
    );
    let child = spawn_run(&ws, "s.toml");
    // Signalled once its runs train (a fixed sleep lost the race on a loaded machine: SIGINT came
    // before the handler and killed it).
    let deadline = Instant::now() + Duration::from_secs(30);
    let training = || {
        rusqlite::Connection::open_with_flags(ws.db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("SELECT count(*) FROM runs WHERE state = 'training'", [], |r| r.get::<_, i64>(0)))
            .unwrap_or(0)
    };
    while training() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(&child, "-INT");
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(started.elapsed() < Duration::from_secs(10), "it stops within seconds");
    assert_eq!(out.status.code(), Some(130), "{err}");
    let in_flight = query(&ws.db(), "SELECT count(*) FROM runs WHERE state IN ('launching', 'training', 'evaluating')");
    assert_eq!(in_flight, ["0"], "{err}");

    // OpenAI protocol: the jobs keep running at the server, each run that
    // says `training` has a live job, and `resume` follows them to the end.
    let ws = Workspace::new();
    let server = Server::start(&ws, "serve.db", KEY);
    ws.write(
        "s.toml",
        &openai_sweep("c", &server.url, "n_epochs = [6]\nlearning_rate_multiplier = [0.5, 1.0]\nbatch_size = [1]"),
    );
    let child = spawn_run(&ws, "s.toml");
    let deadline = Instant::now() + Duration::from_secs(20);
    let with_jobs = || {
        rusqlite::Connection::open_with_flags(ws.db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("SELECT count(*) FROM runs WHERE job_id IS NOT NULL", [], |r| r.get::<_, i64>(0)))
            .unwrap_or(0)
    };
    while with_jobs() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(&child, "-INT");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let ids = query(&ws.db(), "SELECT job_id FROM runs WHERE state = 'training'");
    let jobs: BTreeMap<String, String> =
        ids.into_iter().map(|id| (id.clone(), runtime.block_on(job_status(&server.url, &id)))).collect();
    for (job, status) in &jobs {
        assert!(["running", "queued", "validating_files", "succeeded"].contains(&status.as_str()), "{job} is {status}");
    }
    let out = ws.cmd().args(["resume", "c", "--yes"]).env("FTSWEEP_TEST_KEY", KEY).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let jobs = runtime.block_on(jobs_by_run(&server.url));
    assert!(jobs.values().all(|&n| n == 1), "resume followed the jobs, relaunched none: {jobs:?}");
}
