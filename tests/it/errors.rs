//! Bad input: every malformed sweep or data file gives a clear error naming
//! the file, line and key, exits with code 2, and writes nothing.

use crate::util::{Workspace, assert_refused, example_data, sweep_toml};

const HP: &str = "n_epochs = [1, 3]\nlearning_rate_multiplier = [0.5, 1.0]\nbatch_size = [8]";

/// Runs `plan` and `run` on a sweep text; both must fail with exit code 2,
/// mention every `needles`, and leave no database behind.
fn rejected(text: &str, needles: &[&str]) {
    let ws = Workspace::new();
    let path = ws.write("bad.toml", text);
    assert_refused(&ws, &path, needles);
}

#[test]
fn unknown_key() {
    let text = sweep_toml("s", &format!("{HP}\nn_epoch = [2]"));
    rejected(&text, &["bad.toml:15:", "hyperparameters.n_epoch", "does not accept `n_epoch`", "n_epochs"]);
}

#[test]
fn wrong_type() {
    rejected(
        &sweep_toml("s", &HP.replace("[1, 3]", "[1, \"three\"]")),
        &["bad.toml:12:", "hyperparameters.n_epochs", "whole number"],
    );
}

#[test]
fn missing_file() {
    let text = sweep_toml("s", HP).replace(&example_data("topics-train.jsonl"), "nope/train.jsonl");
    rejected(&text, &["nope/train.jsonl", "training_file", "does not exist"]);
}

#[test]
fn empty_list() {
    rejected(&sweep_toml("s", &HP.replace("[8]", "[]")), &["bad.toml:14:", "batch_size", "empty"]);
}

#[test]
fn negative_multiplier() {
    rejected(
        &sweep_toml("s", &HP.replace("[0.5, 1.0]", "[0.5, -1.0]")),
        &["bad.toml:13:", "learning_rate_multiplier", "greater than 0"],
    );
}

#[test]
fn broken_toml_syntax() {
    rejected(&sweep_toml("s", HP).replace("seed = 42", "seed = = 42"), &["bad.toml:6:"]);
}

#[test]
fn malformed_jsonl_line() {
    let text = sweep_toml("s", HP).replace("topics-train.jsonl", "bad-line.jsonl");
    rejected(&text, &["bad-line.jsonl:7:", "not valid JSON"]);
}

#[test]
fn unreadable_sweep_file_and_unknown_sweep() {
    let ws = Workspace::new();
    let (code, _, err) = ws.run(&["run", "missing.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing.toml"), "{err}");
    assert!(!ws.db().exists());
    let (code, _, err) = ws.run(&["leaderboard", "nope"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no database"), "{err}");
}

#[test]
fn best_exits_1_when_no_run_finished() {
    let ws = Workspace::new();
    // Run a one-run sweep, then mark its run failed in the database, as a
    // provider-side failure would leave it.
    let path = ws.write("s.toml", &sweep_toml("s", "n_epochs = 1\nlearning_rate_multiplier = 1.0\nbatch_size = 8"));
    assert_eq!(ws.run(&["run", path.to_str().unwrap()]).0, 0);
    let conn = rusqlite::Connection::open(ws.db()).unwrap();
    conn.execute("UPDATE runs SET state = 'failed', score = NULL, error = 'x'", []).unwrap();
    drop(conn);
    let (code, out, err) = ws.run(&["best", "s"]);
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("no run of sweep `s` has finished"), "{err}");
    let (code, _, err) = ws.run(&["best", "other"]);
    assert_eq!(code, 2);
    assert!(err.contains("the sweeps recorded are: s"), "{err}");
}

#[test]
fn a_closed_stdout_ends_quietly() {
    // `ftsweep … | head` closes the pipe early: no panic message, no error.
    let ws = Workspace::new();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("ftsweep"))
        .current_dir(ws.dir.path())
        .args(["data", "stats", &example_data("topics-train.jsonl")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
}
