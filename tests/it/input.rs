//! What `ftsweep` is given besides sweep files: the API key in the environment, the database
//! file (missing, read-only, a directory, damaged, another application's), stdout and stderr
//! that cannot be written, and SIGTERM. Each is refused or handled with a clear message and the
//! documented exit code, and leaves the database as it was or consistent.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::protocol::{KEY, Server, openai_sweep};
use crate::util::{Workspace, example_data, query, root, sweep_toml};

/// One run of one epoch: a sweep that records a database in a second or two.
const ONE: &str = "n_epochs = [1]\nlearning_rate_multiplier = [1.0]\nbatch_size = [8]";
/// `PRAGMA application_id` of a sweep database and of `ftsweep serve`'s state file.
const SWEEPS_ID: i64 = 0x4654_5357;
const SERVE_ID: i64 = 0x4654_5356;

/// The binary, run in the workspace with a clean environment, as `std::process::Command`.
fn ftsweep(ws: &Workspace) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("ftsweep"));
    c.current_dir(ws.dir.path())
        .env_remove("FTSWEEP_DB")
        .env_remove("RUST_LOG")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("FTSWEEP_TEST_KEY")
        .stdin(Stdio::null());
    c
}

fn code_and_stderr(out: &Output) -> (i32, String) {
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A workspace with a database recorded by a one-run local sweep `local`.
fn recorded() -> Workspace {
    let ws = Workspace::new();
    ws.write("local.toml", &sweep_toml("local", ONE));
    let (code, _, err) = ws.run(&["run", "local.toml", "--yes"]);
    assert_eq!(code, 0, "{err}");
    ws
}

/// A sweep on the OpenAI protocol whose estimated cost is above its confirmation threshold.
fn hosted_sweep(ws: &Workspace) {
    let text = openai_sweep("hosted", "http://127.0.0.1:9/v1", ONE)
        .replace("base_model = \"local/ngram\"", "base_model = \"gpt-4.1-mini-2025-04-14\"")
        .replace("max_concurrent = 2", "max_concurrent = 2\nconfirm_above_usd = 0.01");
    ws.write("hosted.toml", &text);
}

fn application_id(db: &Path) -> i64 {
    query(db, "PRAGMA application_id")[0].parse().unwrap()
}

/// A file's bytes and modification time.
fn snapshot(path: &Path) -> (Vec<u8>, SystemTime) {
    (std::fs::read(path).unwrap(), std::fs::metadata(path).unwrap().modified().unwrap())
}

/// The names of the files in the workspace.
fn files(ws: &Workspace) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(ws.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A database with only the first three migrations applied, as an ftsweep from before made it
/// (unmarked: application_id 0).
fn old_schema(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    for sql in [
        include_str!("../../src/store/migrations/0001_init.sql"),
        include_str!("../../src/store/migrations/0002_uploads.sql"),
        include_str!("../../src/store/migrations/0003_evaluation.sql"),
    ] {
        conn.execute_batch(sql).unwrap();
    }
    conn.pragma_update(None, "user_version", 3).unwrap();
}

#[test]
fn run_checks_the_key_before_asking_and_before_writing() {
    let ws = Workspace::new();
    hosted_sweep(&ws);
    // Without --yes and without a terminal, the missing key is the error, not the confirmation.
    for extra in [&[][..], &["--yes"][..]] {
        let out = ftsweep(&ws).args(["run", "hosted.toml"]).args(extra).output().unwrap();
        let (code, err) = code_and_stderr(&out);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("the environment variable `FTSWEEP_TEST_KEY` is not set"), "{err}");
        assert!(!err.contains("confirmation"), "the key is checked before asking:\n{err}");
        assert!(!ws.db().exists(), "nothing was written");
    }
    // An existing database gets no sweep and no runs.
    let ws = recorded();
    hosted_sweep(&ws);
    let out = ftsweep(&ws).args(["run", "hosted.toml", "--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(query(&ws.db(), "SELECT name FROM sweeps"), ["local"]);
    assert_eq!(query(&ws.db(), "SELECT count(*) FROM runs"), ["1"]);
}

#[test]
fn a_key_that_cannot_be_an_http_header_is_refused_and_never_shown() {
    let ws = Workspace::new();
    hosted_sweep(&ws);
    let secret = "sk-ftsweep-LEAK-CANARY-header";
    let keys = [
        (format!("{secret}\r\nX-Injected: 1"), "a line break (CR or LF) at character 30"),
        (format!("{secret}\n"), "a line break"),
        (format!("{secret}\u{7}"), "a control character"),
        (format!("{secret} trailing"), "white space"),
        (format!("{secret}é"), "not ASCII"),
    ];
    for (key, what) in &keys {
        for args in [&["plan", "hosted.toml"][..], &["run", "hosted.toml", "--yes"]] {
            let command = args[0];
            let out = ftsweep(&ws).args(args).env("FTSWEEP_TEST_KEY", key).output().unwrap();
            let (code, err) = code_and_stderr(&out);
            assert_eq!(code, 2, "`{command}` with {what}:\n{err}");
            assert!(err.contains("`FTSWEEP_TEST_KEY`") && err.contains(what), "{err}");
            assert!(err.contains("hint: "), "{err}");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(!err.contains("LEAK-CANARY") && !stdout.contains("LEAK-CANARY"), "the key is not shown:\n{err}");
            assert!(!ws.db().exists(), "`{command}` wrote nothing");
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let key = std::ffi::OsStr::from_bytes(b"sk-\xff\xfe");
        let out = ftsweep(&ws).args(["run", "hosted.toml", "--yes"]).env("FTSWEEP_TEST_KEY", key).output().unwrap();
        let (code, err) = code_and_stderr(&out);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("`FTSWEEP_TEST_KEY` is not valid UTF-8"), "{err}");
        assert!(!ws.db().exists());
    }
    // No key is fine for a plan: it says `run` will need one.
    let out = ftsweep(&ws).args(["plan", "hosted.toml"]).output().unwrap();
    let (code, err) = code_and_stderr(&out);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("`FTSWEEP_TEST_KEY` is not set: `ftsweep run` will need it"), "{err}");
}

#[test]
fn plan_never_writes_the_database() {
    let ws = recorded();
    let db = ws.db();
    // As if made before databases were marked: plan must not mark it either.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.pragma_update(None, "application_id", 0).unwrap();
    drop(conn);
    let before_files = files(&ws);
    assert!(!before_files.iter().any(|f| f.ends_with("-wal") || f.ends_with("-shm")), "{before_files:?}");
    let before = snapshot(&db);
    std::thread::sleep(Duration::from_millis(20));
    let v = ws.json(&["plan", "local.toml", "--json"]);
    assert_eq!(v["runs"][0]["status"], "done", "plan read the recorded state: {v}");
    assert_eq!(snapshot(&db), before, "same bytes, same modification time");
    assert_eq!(files(&ws), before_files, "no -wal or -shm file beside it");
    assert_eq!(application_id(&db), 0);

    // A database of an older schema (ftsweep 0.1's, tests/data/ids-v1) is read through an
    // upgraded copy in memory: plan shows its runs' states and leaves the file as it was.
    let ws = Workspace::new();
    for name in ["ftsweep.db", "grid.toml", "train.jsonl", "valid.jsonl"] {
        std::fs::copy(root().join("tests/data/ids-v1").join(name), ws.path(name)).unwrap();
    }
    let version = query(&ws.db(), "PRAGMA user_version");
    let before = snapshot(&ws.db());
    let before_files = files(&ws);
    let v = ws.json(&["plan", "grid.toml", "--json"]);
    assert_eq!(v["to_train"], 0, "the recorded runs are found: {v}");
    assert!(v["runs"].as_array().unwrap().iter().all(|r| r["status"] == "done"), "{v}");
    assert_eq!(snapshot(&ws.db()), before, "same bytes, same modification time");
    assert_eq!(files(&ws), before_files, "no -wal or -shm file beside it");
    assert_eq!(query(&ws.db(), "PRAGMA user_version"), version, "not upgraded");
}

#[test]
fn databases_are_marked_and_unmarked_ones_from_before_are_adopted() {
    let ws = recorded();
    assert_eq!(application_id(&ws.db()), SWEEPS_ID, "a new database is marked");
    // Made before databases were marked: adopted, marked on the first command that may write.
    let conn = rusqlite::Connection::open(ws.db()).unwrap();
    conn.pragma_update(None, "application_id", 0).unwrap();
    drop(conn);
    let (code, out, err) = ws.run(&["status", "local"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sweep `local`"), "{out}");
    assert_eq!(application_id(&ws.db()), SWEEPS_ID);

    // An older schema, unmarked: upgraded and marked.
    let ws = Workspace::new();
    old_schema(&ws.db());
    let (code, _, err) = ws.run(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(application_id(&ws.db()), SWEEPS_ID);
    assert_ne!(query(&ws.db(), "PRAGMA user_version"), ["3"]);

    // An empty file is a new database.
    let ws = Workspace::new();
    ws.write("ftsweep.db", "");
    ws.write("local.toml", &sweep_toml("local", ONE));
    let (code, _, err) = ws.run(&["run", "local.toml", "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(application_id(&ws.db()), SWEEPS_ID);
}

#[test]
fn another_applications_sqlite_file_is_refused_and_left_as_it_is() {
    let cases: [(&str, &str, &str); 4] = [
        (
            "contacts",
            "CREATE TABLE contacts (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO contacts (name) VALUES ('a');",
            "its tables: contacts",
        ),
        // A table ftsweep would create: before, the migration failed with its whole SQL quoted.
        ("runs", "CREATE TABLE runs (id INTEGER PRIMARY KEY);", "its tables: runs"),
        ("marked", "PRAGMA application_id = 1234; CREATE TABLE t (x);", "application_id 0x000004d2"),
        ("versioned", "PRAGMA user_version = 7;", "schema version 7"),
    ];
    for (name, sql, what) in cases {
        let ws = Workspace::new();
        ws.write("local.toml", &sweep_toml("local", ONE));
        rusqlite::Connection::open(ws.db()).unwrap().execute_batch(sql).unwrap();
        let before = snapshot(&ws.db());
        let before_files = files(&ws);
        for args in
            [&["status"][..], &["leaderboard", "local"], &["plan", "local.toml"], &["run", "local.toml", "--yes"]]
        {
            let (code, out, err) = ws.run(args);
            assert_eq!(code, 2, "{name}: {args:?}:\n{err}");
            assert!(out.is_empty(), "{out}");
            assert!(err.contains("is an SQLite file of another application") && err.contains(what), "{name}:\n{err}");
            assert!(err.contains("not an ftsweep database") && err.contains("hint: "), "{err}");
            assert!(err.lines().count() <= 3, "a short message:\n{err}");
        }
        assert_eq!(snapshot(&ws.db()), before, "{name}: the file is not modified");
        assert_eq!(files(&ws), before_files);
    }
}

#[test]
fn the_sweep_database_and_the_serve_state_file_are_not_mixed_up() {
    let ws = recorded();
    let server = Server::start(&ws, "serve.db", KEY);
    drop(server);
    assert_eq!(application_id(&ws.path("serve.db")), SERVE_ID);
    let (code, _, err) = ws.run(&["--db", "serve.db", "status"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is `ftsweep serve`'s state file (`--state`), not an ftsweep database"), "{err}");
    let (code, _, err) = ws.run(&["serve", "--port", "0", "--key", "input-test-key-6b0d2f", "--state", "ftsweep.db"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is a sweep database (`--db`), not an `ftsweep serve` state file"), "{err}");
    assert!(err.contains("hint: point --state at"), "{err}");
}

#[test]
fn a_directory_or_a_damaged_file_is_refused_with_exit_2() {
    let ws = recorded();
    let mut damaged = std::fs::read(ws.db()).unwrap();
    // Keep the header, zero the first pages of the schema.
    for b in &mut damaged[100..8192] {
        *b = 0;
    }
    ws.write("local.toml", &sweep_toml("local", ONE));
    std::fs::write(ws.path("damaged.db"), &damaged).unwrap();
    std::fs::write(ws.path("random.db"), (0..10_000u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<u8>>()).unwrap();
    ws.write("text.db", &"not a database\n".repeat(300));
    std::fs::create_dir(ws.path("folder.db")).unwrap();
    let cases = [
        ("folder.db", "the database path `folder.db` is a directory"),
        ("random.db", "`random.db` is not an SQLite database, or it is damaged"),
        ("text.db", "`text.db` is not an SQLite database, or it is damaged"),
        ("damaged.db", "`damaged.db` is not an SQLite database, or it is damaged"),
    ];
    for (file, message) in cases {
        let before = std::fs::metadata(ws.path(file)).unwrap().is_file().then(|| snapshot(&ws.path(file)));
        for args in
            [&["status"][..], &["leaderboard", "local"], &["plan", "local.toml"], &["run", "local.toml", "--yes"]]
        {
            let args: Vec<&str> = ["--db", file].iter().chain(args).copied().collect();
            let (code, _, err) = ws.run(&args);
            assert_eq!(code, 2, "{args:?}:\n{err}");
            assert!(err.starts_with(&format!("error: {message}")), "{args:?}:\n{err}");
            assert!(err.contains("hint: ") && err.lines().count() <= 3, "{err}");
        }
        if let Some(before) = before {
            assert_eq!(snapshot(&ws.path(file)), before, "{file} is not modified");
        }
    }
}

/// A command that cannot write to the database file: as another user when run as root (who may
/// write any file), else on a file without write permission.
#[cfg(unix)]
#[allow(unsafe_code)] // libc::geteuid
fn without_write_permission(ws: &Workspace, cmd: &mut Command) {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    std::fs::set_permissions(ws.db(), std::fs::Permissions::from_mode(0o444)).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // `nobody` must reach the workspace, but not write in it.
        std::fs::set_permissions(ws.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        cmd.uid(65534).gid(65534);
    }
}

#[cfg(unix)]
#[test]
fn a_read_only_database_is_read_and_never_written() {
    let ws = recorded();
    let before = snapshot(&ws.db());
    let run = |args: &[&str]| {
        let mut cmd = ftsweep(&ws);
        cmd.args(args);
        without_write_permission(&ws, &mut cmd);
        let out = cmd.output().unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), code_and_stderr(&out).1)
    };
    for args in [&["leaderboard", "local"][..], &["status"], &["status", "local"], &["best", "local"], &["aliases"]] {
        let (code, out, err) = run(args);
        assert_eq!(code, 0, "{args:?} reads a read-only database:\n{err}");
        assert!(!out.is_empty() || args[0] == "aliases", "{args:?}");
    }
    let (code, out, err) = run(&["plan", "local.toml", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"done\""), "{out}");
    for args in [&["run", "local.toml", "--yes"][..], &["eval", "--model", "m", "--sweep", "local"]] {
        let (code, _, err) = run(args);
        assert_eq!(code, 2, "{args:?}:\n{err}");
        assert!(err.contains("the database `ftsweep.db` cannot be written: the file is read-only"), "{err}");
        assert!(err.contains("hint: make it writable"), "{err}");
    }
    assert_eq!(snapshot(&ws.db()), before, "nothing was written");
}

/// `/dev/full`, where every write fails with ENOSPC (Linux).
fn dev_full() -> Option<File> {
    File::options().write(true).open("/dev/full").ok()
}

#[test]
fn a_stdout_or_stderr_that_cannot_be_written_ends_with_exit_1_without_a_panic() {
    let Some(_) = dev_full() else { return };
    let ws = recorded();
    for args in [&["leaderboard", "local"][..], &["best", "local"], &["status"], &["plan", "local.toml"]] {
        let out = ftsweep(&ws).args(args).stdout(dev_full().unwrap()).output().unwrap();
        let (code, err) = code_and_stderr(&out);
        assert_eq!(code, 1, "{args:?}:\n{err}");
        assert!(err.contains("error: cannot write to stdout: No space left on device"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // The sweep stops as on Ctrl-C; the database is consistent.
    ws.write("more.toml", &sweep_toml("more", "n_epochs = [1, 2]\nlearning_rate_multiplier = [1.0]\nbatch_size = [8]"));
    let out = ftsweep(&ws).args(["run", "more.toml", "--yes"]).stderr(dev_full().unwrap()).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a run whose stderr is full exits 1");
    let in_flight = query(&ws.db(), "SELECT count(*) FROM runs WHERE state IN ('launching', 'training', 'evaluating')");
    assert_eq!(in_flight, ["0"]);
    // A full stdout after the sweep: the runs are recorded, the exit code is 1.
    let out = ftsweep(&ws).args(["run", "more.toml", "--yes"]).stdout(dev_full().unwrap()).output().unwrap();
    let (code, err) = code_and_stderr(&out);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot write to stdout") && !err.contains("panicked"), "{err}");
    assert_eq!(query(&ws.db(), "SELECT DISTINCT state FROM runs"), ["done"]);
}

/// Waits until `n` runs are training, or 30 s.
fn wait_training(ws: &Workspace, child: &mut Child, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let training = || {
        rusqlite::Connection::open_with_flags(ws.db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("SELECT count(*) FROM runs WHERE state = 'training'", [], |r| r.get::<_, i64>(0)))
            .unwrap_or(0)
    };
    while training() < n && Instant::now() < deadline {
        assert!(child.try_wait().unwrap().is_none(), "the sweep ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(unix)]
#[test]
#[allow(unsafe_code)] // libc::kill
fn sigterm_stops_a_run_as_ctrl_c_does() {
    let ws = Workspace::new();
    ws.write(
        "s.toml",
        &sweep_toml("t", "n_epochs = [20, 30]\nlearning_rate_multiplier = [0.5, 1.0]\nbatch_size = [1]"),
    );
    let mut child =
        ftsweep(&ws).args(["run", "s.toml", "--yes"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    wait_training(&ws, &mut child, 2);
    // SAFETY: a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    let (code, err) = code_and_stderr(&out);
    assert_eq!(code, 143, "exit code 143 after SIGTERM:\n{err}");
    assert!(err.contains("terminated (SIGTERM): no new launches; recording the runs in flight"), "{err}");
    let in_flight = query(&ws.db(), "SELECT count(*) FROM runs WHERE state IN ('launching', 'training', 'evaluating')");
    assert_eq!(in_flight, ["0"], "{err}");
    assert_eq!(query(&ws.db(), "SELECT DISTINCT state FROM runs"), ["planned"], "{err}");
}

#[test]
fn a_command_grader_that_does_not_read_its_input_is_not_the_death_of_ftsweep() {
    // Its input is larger than a pipe holds, so the write to it fails (EPIPE) once it closes its
    // stdin: with SIGPIPE at its default, that killed ftsweep (exit 141, the run left unfinished).
    let ws = Workspace::new();
    let example = serde_json::json!({"messages": [
        {"role": "user", "content": "word ".repeat(40_000)},
        {"role": "assistant", "content": "greetings"},
    ]});
    let valid = ws.write("valid.jsonl", &format!("{example}\n"));
    let text = sweep_toml("g", ONE).replace(&example_data("topics-valid.jsonl"), valid.to_str().unwrap())
        + "\n[[evaluation.graders]]\ntype = \"command\"\nname = \"deaf\"\ncommand = [\"sh\", \"-c\", \"exec <&-; echo 1\"]\n";
    ws.write("g.toml", &text);
    let (code, _, err) = ws.run(&["run", "g.toml", "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(query(&ws.db(), "SELECT state FROM runs"), ["done"]);
}
