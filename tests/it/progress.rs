//! Live progress, with the real binary against `ftsweep serve --example-delay-ms` (jobs that
//! last seconds): `run`'s display on a pseudo-terminal (util-linux `script`), its plain lines
//! when stderr is a file, `status` reading a running job's step, epoch and training loss, and
//! `status --watch` on a pipe, as NDJSON and on a terminal. Every process a test starts is
//! killed when it ends, also when it fails.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::protocol::{KEY, Server, openai_sweep};
use crate::util::{Workspace, sweep_toml};

/// Two runs of two epochs; with 4 ms an example a job trains for a few seconds.
const HP: &str = "n_epochs = [2]\nlearning_rate_multiplier = [0.1, 1.0]\nbatch_size = [16]";

/// Processes started in the background, killed when dropped.
struct Started(Vec<Child>);

impl Drop for Started {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `ftsweep ARGS` in the workspace with the key, stdout and stderr to the files `out` and `err`.
fn spawn(ws: &Workspace, args: &[&str], out: &str, err: &str) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("ftsweep"))
        .args(args)
        .current_dir(ws.dir.path())
        .env("FTSWEEP_TEST_KEY", KEY)
        .env_remove("OPENAI_BASE_URL")
        .env_remove("FTSWEEP_DB")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(ws.path(out)).expect("a file"))
        .stderr(std::fs::File::create(ws.path(err)).expect("a file"))
        .spawn()
        .expect("starting ftsweep")
}

/// `CMD` (a shell command) on a pseudo-terminal: util-linux `script`, whose own stdout (what
/// the terminal showed) goes to the file `screen`.
fn on_terminal(ws: &Workspace, cmd: &str, screen: &str) -> Child {
    Command::new("script")
        .args(["-qfec", cmd, "/dev/null"])
        .current_dir(ws.dir.path())
        .env("FTSWEEP_TEST_KEY", KEY)
        .env("TERM", "xterm")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("FTSWEEP_DB")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(ws.path(screen)).expect("a file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("starting script (util-linux) for a pseudo-terminal")
}

/// Waits for a child to end (at most `limit`, a bound against a hang, not a timing check).
fn wait(child: &mut Child, limit: Duration) -> i32 {
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("waiting") {
            return status.code().unwrap_or(-1);
        }
        assert!(t.elapsed() < limit, "still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `status NAME` finds the sweep (the run has recorded it).
fn wait_for_sweep(ws: &Workspace, name: &str, run: &mut Child) {
    let t = Instant::now();
    while ws.run(&["status", name, "--json"]).0 != 0 {
        assert!(run.try_wait().expect("waiting").is_none(), "the sweep ended before it was recorded");
        assert!(t.elapsed() < Duration::from_secs(60), "the sweep was not recorded");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read(ws: &Workspace, name: &str) -> String {
    String::from_utf8_lossy(&std::fs::read(ws.path(name)).expect("reading an output")).into_owned()
}

#[test]
fn status_shows_the_step_epoch_and_loss_of_a_running_hosted_job_and_watch_follows_it() {
    let ws = Workspace::new();
    let server = Server::start_args(&ws, "serve.db", KEY, &["--example-delay-ms", "4"]);
    ws.write("s.toml", &openai_sweep("watched", &server.url, HP));
    let mut started = Started(vec![spawn(&ws, &["run", "s.toml"], "run.out", "run.err")]);
    wait_for_sweep(&ws, "watched", &mut started.0[0]);
    started.0.push(spawn(&ws, &["status", "watched", "--watch", "0.2"], "watch.out", "watch.err"));
    started.0.push(spawn(&ws, &["status", "watched", "--json", "--watch=0.2"], "ndjson.out", "ndjson.err"));

    // `status` while a job trains: its step and loss, read from the store during the job (a
    // hosted job's checkpoints come only at its end; before, its rows were written only then).
    let mut seen: Option<Value> = None;
    while seen.is_none() && started.0[0].try_wait().expect("waiting").is_none() {
        let v = ws.json(&["status", "watched", "--json"]);
        seen =
            v[0]["runs"].as_array().unwrap().iter().find(|r| r["state"] == "training" && r["step"].is_u64()).cloned();
        std::thread::sleep(Duration::from_millis(100));
    }
    let row = seen.expect("a status read while a job trained shows its step");
    let progress = row["progress"].as_str().unwrap();
    assert!(progress.starts_with("epoch ") && progress.contains("/2 step ") && progress.contains(" loss "), "{row}");
    assert!(row["train_loss"].is_f64() && row["epoch"].as_u64().is_some_and(|e| (1..=2).contains(&e)), "{row}");

    assert_eq!(wait(&mut started.0[0], Duration::from_secs(300)), 0, "{}", read(&ws, "run.err"));
    // Both watchers end by themselves once every run has ended.
    assert_eq!(wait(&mut started.0[1], Duration::from_secs(60)), 0, "{}", read(&ws, "watch.err"));
    assert_eq!(wait(&mut started.0[2], Duration::from_secs(60)), 0, "{}", read(&ws, "ndjson.err"));

    // On a pipe: views after a timestamp line, separated by a blank line, no escape codes.
    let watch = read(&ws, "watch.out");
    let views: Vec<&str> = watch.split("\n\nstatus at ").collect();
    assert!(views.len() >= 2 && watch.starts_with("status at "), "{watch}");
    assert!(!watch.contains('\x1b'), "{watch}");
    assert!(
        watch.lines().any(|l| l.contains("training") && l.contains(" step ")),
        "a view of a training job:\n{watch}"
    );
    let done = views.last().unwrap().lines().filter(|l| l.starts_with("│ r-") && l.contains("┆ done ")).count();
    assert_eq!(done, 2, "the last view has every run done:\n{watch}");
    assert!(read(&ws, "watch.err").contains("every run has ended"));

    // --json --watch: one JSON document a line, the last with every run done.
    let ndjson = read(&ws, "ndjson.out");
    let docs: Vec<Value> = ndjson.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert!(docs.len() >= 2, "{ndjson}");
    let last = docs.last().unwrap()[0]["runs"].as_array().unwrap().clone();
    assert!(last.iter().all(|r| r["state"] == "done" && r["progress"] == "done"), "{last:?}");
}

#[test]
fn run_on_a_terminal_draws_the_live_display_and_status_watch_redraws() {
    let ws = Workspace::new();
    let server = Server::start_args(&ws, "serve.db", KEY, &["--example-delay-ms", "4"]);
    let sweep = openai_sweep("live", &server.url, HP)
        + "\n[pricing]\ntraining_per_million = 2.0\ninput_per_million = 0.0\noutput_per_million = 0.0\n";
    let sweep = sweep.replace("max_concurrent = 2", "max_concurrent = 2\nbudget_usd = 5.0");
    ws.write("s.toml", &sweep);
    let bin = assert_cmd::cargo::cargo_bin("ftsweep");
    let bin = bin.display();
    // stderr is the terminal; stdout (the leaderboard) goes to a file.
    let mut started = Started(vec![on_terminal(&ws, &format!("'{bin}' run --yes s.toml > board.txt"), "run.screen")]);
    let t = Instant::now();
    while ws.run(&["status", "live"]).0 != 0 {
        assert!(t.elapsed() < Duration::from_secs(60), "the sweep was not recorded:\n{}", read(&ws, "run.screen"));
        std::thread::sleep(Duration::from_millis(50));
    }
    started.0.push(on_terminal(&ws, &format!("'{bin}' status live --watch 0.3"), "watch.screen"));
    assert_eq!(wait(&mut started.0[0], Duration::from_secs(300)), 0, "{}", read(&ws, "run.screen"));
    assert_eq!(wait(&mut started.0[1], Duration::from_secs(60)), 0, "{}", read(&ws, "watch.screen"));

    let screen = read(&ws, "run.screen");
    for needle in
        ["runs done", " running · ", "queued", "0 failed", "budget: $", " of $5.00 ($", "ETA", "epoch 1/2", "step "]
    {
        assert!(screen.contains(needle), "the display shows `{needle}`:\n{screen}");
    }
    assert!(screen.contains("ETA ~"), "an ETA once steps are done:\n{screen}");
    assert!(screen.contains('\x1b'), "drawn in place with escape codes");
    // The lines that matter print above it, and the summary after it.
    assert_eq!(screen.matches(" done      exact_match=").count(), 3, "two runs and the baseline:\n{screen}");
    assert!(screen.contains("sweep `live`: 2 trained"), "{screen}");
    let board = read(&ws, "board.txt");
    assert!(board.contains("rank") && board.contains("exact_match"), "the leaderboard is on stdout:\n{board}");
    assert!(!board.contains('\x1b'), "{board}");

    let watch = read(&ws, "watch.screen");
    assert!(watch.matches("\x1b[H\x1b[2J").count() >= 2, "redrawn in place:\n{watch}");
    assert!(watch.contains("every 0.3s: ftsweep status live"), "{watch}");
}

#[test]
fn run_prints_plain_lines_without_escape_codes_when_stderr_is_a_file() {
    let ws = Workspace::new();
    let sweep = ws
        .write("p.toml", &sweep_toml("plain", "n_epochs = [1, 2]\nlearning_rate_multiplier = [1.0]\nbatch_size = [8]"));
    let mut run = spawn(&ws, &["-v", "run", sweep.to_str().unwrap()], "out.txt", "err.txt");
    assert_eq!(wait(&mut run, Duration::from_secs(300)), 0, "{}", read(&ws, "err.txt"));
    let err = read(&ws, "err.txt");
    assert!(!err.contains('\x1b'), "no escape codes:\n{err}");
    assert!(err.contains("sweep: 2 runs: 2 to train"), "{err}");
    assert!(err.lines().any(|l| l.starts_with("[1/2] ") && l.contains(" training  n_epochs=")), "{err}");
    assert!(err.lines().any(|l| l.contains(" epoch 1/2 valid_loss=")), "-v prints epochs:\n{err}");
    assert!(!err.contains("runs done") && !err.contains("ETA"), "no live display:\n{err}");
}
