//! Who owns a run, on the real binary: a run whose lease names a live process on this host is
//! neither taken over by `run` nor shown as abandoned by `status`; one whose process has exited
//! is, though its lease has not expired. The owners are real child processes this test starts
//! (`sleep`), asked after with `kill(pid, 0)` by the binary.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::util::{Workspace, query, sweep_toml};

/// This host's name as the binary writes it in an owner id (`host:pid:nonce`).
fn host() -> String {
    let me = ftsweep::sweep::owner_id();
    me.rsplitn(3, ':').nth(2).expect("an owner id has a host").to_string()
}

/// A finished one-run local sweep whose run is then marked `training`, owned by `pid` on this
/// host, with a lease that ends in an hour.
fn sweep_owned_by(ws: &Workspace, pid: u32) -> String {
    ws.write("s.toml", &sweep_toml("own", "n_epochs = [1]\nlearning_rate_multiplier = [1.0]\nbatch_size = [32]"));
    let (code, _, err) = ws.run(&["run", "--yes", "s.toml"]);
    assert_eq!(code, 0, "{err}");
    let owner = format!("{}:{pid}:0", host());
    let conn = rusqlite::Connection::open(ws.db()).unwrap();
    let n = conn
        .execute(
            "UPDATE runs SET state = 'training', owner = ?1, lease_until = unixepoch() + 3600
             WHERE run_id IN (SELECT run_id FROM sweep_runs)",
            [&owner],
        )
        .unwrap();
    assert_eq!(n, 1);
    owner
}

/// The state `status --json` shows for the sweep's one run.
fn shown_state(ws: &Workspace) -> String {
    let status = ws.json(&["status", "own", "--json"]);
    status[0]["runs"][0]["state"].as_str().unwrap().to_string()
}

/// `ftsweep run` on the sweep, read until it says it waits for another process (then it is
/// killed: `None`) or exits (its code). Either way it ends, whatever the binary decides.
fn run_until_waiting_or_exit(ws: &Workspace) -> (Option<i32>, String) {
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("ftsweep"))
        .current_dir(ws.dir.path())
        .env_remove("FTSWEEP_DB")
        .env_remove("RUST_LOG")
        .args(["run", "--yes", "s.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting ftsweep run");
    let mut seen = String::new();
    let mut waiting = false;
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("being trained by another process") {
            waiting = true;
            break;
        }
    }
    if waiting {
        child.kill().unwrap();
        child.wait().unwrap();
        return (None, seen);
    }
    (child.wait().unwrap().code(), seen)
}

fn attempts(ws: &Workspace) -> String {
    query(&ws.db(), "SELECT attempt FROM runs WHERE run_id IN (SELECT run_id FROM sweep_runs)").remove(0)
}

/// Stops a child this test started, however the test ends.
struct Owner(Child);

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_run_owned_by_a_live_process_on_this_host_is_not_taken_over() {
    let ws = Workspace::new();
    let owner = Owner(Command::new("sleep").arg("300").spawn().expect("starting sleep"));
    let id = sweep_owned_by(&ws, owner.0.id());
    let (code, err) = run_until_waiting_or_exit(&ws);
    assert_eq!(code, None, "run waits for the live owner instead of training its run:\n{err}");
    assert!(err.contains(&id), "{err}");
    assert_eq!(shown_state(&ws), "training", "a live owner follows the run");
    assert_eq!(attempts(&ws), "1", "no new attempt");
    assert_eq!(query(&ws.db(), "SELECT owner FROM runs WHERE owner IS NOT NULL"), [id]);
}

#[test]
fn a_run_owned_by_an_exited_process_is_taken_over_before_its_lease_ends() {
    let ws = Workspace::new();
    let mut gone = Command::new("sleep").arg("0").spawn().expect("starting sleep");
    gone.wait().unwrap();
    sweep_owned_by(&ws, gone.id());
    assert_eq!(shown_state(&ws), "training (no process follows it: resume)");
    let (code, err) = run_until_waiting_or_exit(&ws);
    assert_eq!(code, Some(0), "run takes the run over and ends:\n{err}");
    assert_eq!(attempts(&ws), "2", "trained again, by the new process");
    assert_eq!(query(&ws.db(), "SELECT state FROM runs WHERE run_id IN (SELECT run_id FROM sweep_runs)"), ["done"]);
}
