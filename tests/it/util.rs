//! Shared helpers: a temporary workspace with sweep files, and the binary.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

/// Runs `plan` and `run` on the sweep file `path`: both must exit with 2,
/// print nothing on stdout, say `error:`, every `needles` and a `hint:`,
/// and leave no database behind.
pub fn assert_refused(ws: &Workspace, path: &Path, needles: &[&str]) {
    for command in ["plan", "run"] {
        let (code, out, err) = ws.run(&[command, path.to_str().unwrap()]);
        assert_eq!(code, 2, "`{command}` exits with 2:\n{err}");
        assert!(out.is_empty(), "nothing on stdout: {out}");
        assert!(err.starts_with("error: "), "{err}");
        for needle in needles {
            assert!(err.contains(needle), "`{needle}` is in the error of `{command}`:\n{err}");
        }
        assert!(err.contains("hint: "), "a fix is suggested:\n{err}");
        assert!(!ws.db().exists(), "`{command}` wrote no database");
    }
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temporary folder to run `ftsweep` in; its database is `ftsweep.db`.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        Workspace { dir: tempfile::tempdir().expect("a temporary folder") }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn db(&self) -> PathBuf {
        self.path("ftsweep.db")
    }

    /// Writes a file into the workspace and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("writing a fixture");
        p
    }

    /// The binary, run in the workspace with a clean environment.
    pub fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("ftsweep").expect("the ftsweep binary");
        c.current_dir(self.dir.path()).env_remove("FTSWEEP_DB").env_remove("RUST_LOG").env_remove("COLUMNS");
        c
    }

    /// Runs `ftsweep ARGS` and returns (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.cmd().args(args).output().expect("running ftsweep");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs a command that must succeed and print JSON on stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "ftsweep {args:?} failed:\n{err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{out}"))
    }
}

/// The example data file `name` under examples/data.
pub fn example_data(name: &str) -> String {
    root().join("examples/data").join(name).display().to_string()
}

/// A sweep file over the example data with the given hyperparameter lines.
pub fn sweep_toml(name: &str, hyperparameters: &str) -> String {
    format!(
        r#"name = "{name}"
provider = "local"
base_model = "local/ngram"
training_file = "{train}"
validation_file = "{valid}"
seed = 42

[search]
strategy = "grid"

[hyperparameters]
{hyperparameters}

[evaluation]
metric = "exact_match"

[limits]
max_concurrent = 2
"#,
        train = example_data("topics-train.jsonl"),
        valid = example_data("topics-valid.jsonl"),
    )
}

/// The schema version a database has once opened by this build: the number of its migrations
/// (`src/store/migrations/NNNN_*.sql`), as `PRAGMA user_version` prints it.
pub fn latest_schema() -> String {
    let dir = root().join("src/store/migrations");
    let n = std::fs::read_dir(&dir)
        .expect("the migrations folder")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql")))
        .count();
    n.to_string()
}

/// Reads one column of every row of a query, as strings.
pub fn query(db: &Path, sql: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).expect("opening the database");
    let mut stmt = conn.prepare(sql).expect("a valid query");
    stmt.query_map([], |r| r.get::<_, rusqlite::types::Value>(0))
        .expect("running the query")
        .map(|v| match v.expect("a row") {
            rusqlite::types::Value::Null => "NULL".to_string(),
            rusqlite::types::Value::Integer(i) => i.to_string(),
            rusqlite::types::Value::Real(f) => f.to_string(),
            rusqlite::types::Value::Text(t) => t,
            rusqlite::types::Value::Blob(b) => format!("<{} bytes>", b.len()),
        })
        .collect()
}
