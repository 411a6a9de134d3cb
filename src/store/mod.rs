//! The SQLite store: the only module that holds SQL. One file, WAL, a busy
//! timeout, and append-only migrations applied on open.

mod deployments;
mod durability;
mod eval;
mod scores;
pub mod serve;
mod types;
mod weights;

pub use deployments::{DeploymentRow, DeploymentState, NewDeployment};
pub use durability::{Budget, BudgetState, Claim, RunControl, RunProgress};
pub use eval::{AliasRecord, CachedPrediction, EvalExample, EvaluationRecord};
pub use scores::{decode_scores, encode_scores};
pub use weights::{CHECKPOINT_NOT_KEPT, WeightsRow};

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::run::{
    BATCH_SIZE, Definition, LEARNING_RATE_MULTIPLIER, Origin, OriginKind, PlannedRun, RunConfig, RunRecord, RunState,
    SweepRole, Value,
};

/// The migrations, in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_uploads.sql"),
    include_str!("migrations/0003_evaluation.sql"),
    include_str!("migrations/0004_durability.sql"),
    include_str!("migrations/0005_search.sql"),
    include_str!("migrations/0006_weights.sql"),
    include_str!("migrations/0007_evalstore.sql"),
    include_str!("migrations/0008_hyperparameters.sql"),
    include_str!("migrations/0009_deployments.sql"),
    include_str!("migrations/0010_eval_scores.sql"),
];

/// A kind of database file: the `PRAGMA application_id` that marks it, its migrations, and the
/// tables that tell one made before files were marked.
pub(crate) struct Schema {
    /// How messages name a file of this kind.
    pub what: &'static str,
    /// The command-line option that names the file, for hints.
    pub option: &'static str,
    pub application_id: i32,
    pub migrations: &'static [&'static str],
    /// Tables that every file of this kind has had since its first migration.
    pub tables: &'static [&'static str],
}

/// `PRAGMA application_id` of a sweep database: "FTSW".
pub(crate) const SWEEPS_APPLICATION_ID: i32 = 0x4654_5357;
/// `PRAGMA application_id` of `ftsweep serve`'s state file: "FTSV".
pub(crate) const SERVE_APPLICATION_ID: i32 = 0x4654_5356;

/// The sweep database.
const SWEEPS: Schema = Schema {
    what: "an ftsweep database",
    option: "--db (or FTSWEEP_DB)",
    application_id: SWEEPS_APPLICATION_ID,
    migrations: MIGRATIONS,
    tables: &["sweeps", "runs", "sweep_runs"],
};

/// How a database is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read and write, creating the file if there is none.
    Create,
    /// Read and write an existing file, or only read it when it cannot be written.
    Existing,
    /// Only read: nothing is written, not even a `-wal` file when no other process has it open.
    ReadOnly,
}

/// A store error, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the database `{path}`: {source}\n  hint: check the path ({option}) and that its folder exists"
    )]
    Open { path: String, option: &'static str, source: rusqlite::Error },
    #[error(
        "the database path `{path}` is a directory\n  hint: point {option} at a file in it, e.g. `{path}/ftsweep.db`"
    )]
    Directory { path: String, option: &'static str },
    #[error(
        "`{path}` is not an SQLite database, or it is damaged ({detail})\n  hint: point {option} at {expected}, or move \
         this file away to start a new one"
    )]
    NotDatabase { path: String, option: &'static str, expected: &'static str, detail: String },
    #[error(
        "`{path}` is {found}, not {expected}: ftsweep leaves it as it is\n  hint: point {option} at {expected}, or at a \
         new file name"
    )]
    Foreign { path: String, option: &'static str, expected: &'static str, found: String },
    #[error("the database `{path}` cannot be written: {why}\n  hint: {hint}")]
    ReadOnly { path: String, why: &'static str, hint: String },
    #[error(
        "the database `{path}` has schema version {found}, newer than this ftsweep knows ({known})\n  hint: use the \
         newer ftsweep that wrote it"
    )]
    TooNew { path: String, found: i64, known: i64 },
    #[error("cannot upgrade the database `{path}` to schema version {version}: {detail}")]
    Migration { path: String, version: usize, detail: String },
    #[error("database error while {doing}: {source}")]
    Sql { doing: &'static str, source: rusqlite::Error },
    /// A run id is a hash of the run's definition: a stored run with the id
    /// and another definition is never reused.
    #[error(
        "the database has a run `{run_id}` defined otherwise than the run planned under that id\n  \
         stored:  {stored}\n  planned: {planned}\n  \
         hint: nothing was launched for it; the id hashes a run's definition, so this is a hash collision or \
         a database changed by hand: record this sweep in another database (--db), or delete the stored run"
    )]
    IdConflict { run_id: String, stored: Box<Definition>, planned: Box<Definition> },
}

impl StoreError {
    /// The database named is not one this command can use (missing, foreign, damaged, read-only,
    /// of another version): the user's to fix, exit code 2.
    pub fn is_bad_input(&self) -> bool {
        match self {
            StoreError::Migration { .. } => false,
            // A hash collision or a database changed by hand, not the user's input.
            StoreError::IdConflict { .. } => false,
            StoreError::Sql { source, .. } => source.sqlite_error_code() == Some(ErrorCode::ReadOnly),
            _ => true,
        }
    }
}

type Result<T> = std::result::Result<T, StoreError>;

trait Doing<T> {
    fn doing(self, what: &'static str) -> Result<T>;
}

impl<T> Doing<T> for rusqlite::Result<T> {
    fn doing(self, what: &'static str) -> Result<T> {
        self.map_err(|source| StoreError::Sql { doing: what, source })
    }
}

/// A sweep as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepRecord {
    pub id: i64,
    pub name: String,
    pub spec_path: String,
    pub provider: String,
    pub base_model: String,
    pub training_file: String,
    pub training_sha256: String,
    pub validation_file: String,
    pub validation_sha256: String,
    pub metric: String,
}

/// What a sweep is recorded with.
#[derive(Debug, Clone)]
pub struct NewSweep<'a> {
    pub name: &'a str,
    pub spec_path: &'a str,
    pub spec_toml: &'a str,
    pub provider: &'a str,
    pub base_model: &'a str,
    pub training_file: &'a str,
    pub training_sha256: &'a str,
    pub validation_file: &'a str,
    pub validation_sha256: &'a str,
    pub metric: &'a str,
}

/// One training metric row.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub step: u64,
    pub epoch: u32,
    pub epoch_end: bool,
    pub train_loss: Option<f64>,
    pub train_accuracy: Option<f64>,
    pub valid_loss: Option<f64>,
    pub valid_accuracy: Option<f64>,
}

/// A checkpoint: the model at the end of an epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointRow {
    pub epoch: u32,
    pub step: u64,
    pub model: String,
    pub train_loss: Option<f64>,
    pub valid_loss: Option<f64>,
    pub valid_accuracy: Option<f64>,
}

/// How training ended.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingResult {
    pub model: String,
    pub trained_tokens: i64,
    pub train_loss: Option<f64>,
    pub train_accuracy: Option<f64>,
    pub valid_loss: Option<f64>,
    pub valid_accuracy: Option<f64>,
    pub seconds: f64,
}

/// One graded validation example.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRow {
    pub example: usize,
    pub line: usize,
    pub reference: String,
    pub prediction: String,
    pub probability: Option<f64>,
    pub score: f64,
}

/// An open database.
pub struct Store {
    conn: Connection,
}

/// The store shared by the tasks of one process: one connection, so one
/// writer; the lock is never held across an `.await`.
#[derive(Clone)]
pub struct SharedStore(Arc<Mutex<Store>>);

impl SharedStore {
    pub fn new(store: Store) -> SharedStore {
        SharedStore(Arc::new(Mutex::new(store)))
    }

    pub fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock leaves SQLite consistent (every
        // write is a transaction), so a poisoned lock is still usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Opens a database (a file, or in memory for `None`) of the kind `schema` describes. A file of
/// another kind, another application's file or a damaged one is refused before anything is
/// written to it. Written, it gets WAL, a busy timeout and foreign keys, its application id, and
/// the migrations it has not applied yet, each in its own transaction, counted by
/// `PRAGMA user_version`. Read only, it must have every migration already.
pub(crate) fn connect(path: Option<&Path>, schema: &Schema, access: Access) -> Result<Connection> {
    let shown = path.map_or(":memory:".to_string(), |p| p.display().to_string());
    let open_error = |source| StoreError::Open { path: shown.clone(), option: schema.option, source };
    let mut conn = match path {
        Some(p) if p.is_dir() => return Err(StoreError::Directory { path: shown, option: schema.option }),
        Some(p) if access == Access::ReadOnly => open_read_only(p).map_err(open_error)?,
        Some(p) => {
            let create = if access == Access::Create { OpenFlags::SQLITE_OPEN_CREATE } else { OpenFlags::empty() };
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                | create
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            Connection::open_with_flags(p, flags).map_err(open_error)?
        }
        None => Connection::open_in_memory().doing("opening an in-memory database")?,
    };
    conn.busy_timeout(Duration::from_secs(30)).doing("setting the busy timeout")?;
    // SQLite opens a file it may not write read-only, without saying so.
    let read_only = conn.is_readonly(rusqlite::MAIN_DB).doing("checking the database's access")?;
    match (access, read_only) {
        (Access::Existing, true) => return connect(path, schema, Access::ReadOnly),
        (Access::Create, true) => {
            return Err(StoreError::ReadOnly {
                path: shown.clone(),
                why: "the file is read-only",
                hint: format!("make it writable (chmod u+w {shown}), or point {} at a writable copy", schema.option),
            });
        }
        _ => {}
    }
    let found = match inspect(&conn) {
        Ok(f) => f,
        // A WAL database in a folder this process cannot write to can still be read.
        Err(e) if access == Access::Existing && cannot_write(&e) => return connect(path, schema, Access::ReadOnly),
        Err(e) => return Err(unreadable(e, &shown, schema)),
    };
    let known = schema.migrations.len() as i64;
    let ours = found.application_id == schema.application_id;
    let empty = found.application_id == 0 && found.version == 0 && found.objects == 0;
    // Made by an ftsweep that did not mark its files yet.
    let unmarked = found.application_id == 0
        && found.version > 0
        && schema.tables.iter().all(|t| found.tables.iter().any(|f| f == t));
    if !(ours || empty || unmarked) {
        return Err(StoreError::Foreign {
            path: shown,
            option: schema.option,
            expected: schema.what,
            found: describe_foreign(&found),
        });
    }
    if found.version > known {
        return Err(StoreError::TooNew { path: shown, found: found.version, known });
    }
    if access == Access::ReadOnly || read_only {
        if found.version < known {
            // An older schema is read through a copy in memory that is brought up to date there:
            // the file itself is never written (the first command that writes upgrades it).
            let mut copy = Connection::open_in_memory().doing("opening an in-memory copy")?;
            rusqlite::backup::Backup::new(&conn, &mut copy)
                .and_then(|b| b.run_to_completion(1024, Duration::ZERO, None))
                .doing("copying an older database into memory to read it")?;
            drop(conn);
            migrate(&mut copy, schema, found.version, &shown)?;
            return Ok(copy);
        }
        return Ok(conn);
    }
    conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| match cannot_write(&e) {
        true => StoreError::ReadOnly {
            path: shown.clone(),
            why: "its folder is read-only, and SQLite keeps its `-wal` and `-shm` files beside it",
            hint: format!("make the folder writable, or point {} at a file in a writable folder", schema.option),
        },
        false => StoreError::Sql { doing: "enabling WAL", source: e },
    })?;
    conn.pragma_update(None, "synchronous", "NORMAL").doing("setting synchronous")?;
    conn.pragma_update(None, "foreign_keys", "ON").doing("enabling foreign keys")?;
    migrate(&mut conn, schema, found.version, &shown)?;
    if !ours && found.version == known {
        // An unmarked file from before, up to date: mark it.
        conn.pragma_update(None, "application_id", schema.application_id).doing("marking the database")?;
    }
    Ok(conn)
}

/// Applies the migrations after `from`, each in its own transaction, counted by
/// `PRAGMA user_version`; the transaction that gives a new file its first tables also marks it.
fn migrate(conn: &mut Connection, schema: &Schema, from: i64, shown: &str) -> Result<()> {
    for (i, sql) in schema.migrations.iter().enumerate().skip(from as usize) {
        // Another process may open the same new database at the same time:
        // take the write lock first, then look again at what is applied.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).doing("starting a migration")?;
        let applied: i64 =
            tx.pragma_query_value(None, "user_version", |r| r.get(0)).doing("reading the schema version")?;
        if applied <= i as i64 {
            tx.execute_batch(sql).map_err(|e| StoreError::Migration {
                path: shown.to_string(),
                version: i + 1,
                // Not the migration's SQL, which rusqlite's message would quote whole.
                detail: match &e {
                    rusqlite::Error::SqlInputError { msg, .. } => msg.clone(),
                    other => other.to_string(),
                },
            })?;
            tx.pragma_update(None, "user_version", (i + 1) as i64).doing("recording a migration")?;
        }
        // A new file is marked in the transaction that gives it its first tables.
        tx.pragma_update(None, "application_id", schema.application_id).doing("marking the database")?;
        tx.commit().doing("committing a migration")?;
    }
    Ok(())
}

/// Opens a file read-only. While another connection has it open its `-wal` file exists and is
/// read through; otherwise the file is opened as immutable, so that SQLite creates no `-wal` and
/// `-shm` files beside it (and can read it in a folder it may not write to). A writer that starts
/// during such a read is not seen by it; at worst (a checkpoint into the file meanwhile) the read
/// fails. The file itself is never at risk: this connection cannot write.
fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    match immutable_uri(path) {
        Some(uri) if !Path::new(&wal).exists() => Connection::open_with_flags(uri, flags),
        _ => Connection::open_with_flags(path, flags),
    }
}

/// `file:///ABSOLUTE/PATH?immutable=1`, its path percent-encoded; `None` where paths are not bytes.
fn immutable_uri(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let absolute = std::path::absolute(path).ok()?;
        let mut uri = String::from("file://");
        for &b in absolute.as_os_str().as_bytes() {
            if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
                uri.push(b as char);
            } else {
                uri.push_str(&format!("%{b:02X}"));
            }
        }
        uri.push_str("?immutable=1");
        Some(uri)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// What a file holds, read before anything is written to it.
struct Found {
    application_id: i32,
    version: i64,
    /// Tables, indexes, views and triggers.
    objects: i64,
    tables: Vec<String>,
}

fn inspect(conn: &Connection) -> rusqlite::Result<Found> {
    let application_id = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let version = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let objects = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?;
    let tables = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(Found { application_id, version, objects, tables })
}

/// An error that says the file, or its folder, cannot be written.
fn cannot_write(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen))
}

/// Why a file that opened cannot be read.
fn unreadable(e: rusqlite::Error, shown: &str, schema: &Schema) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::NotDatabase {
            path: shown.to_string(),
            option: schema.option,
            expected: schema.what,
            detail: e.to_string(),
        },
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            StoreError::Open { path: shown.to_string(), option: schema.option, source: e }
        }
        _ => StoreError::Sql { doing: "reading the database's header", source: e },
    }
}

/// What a file of another kind is, for the message that refuses it.
fn describe_foreign(found: &Found) -> String {
    match found.application_id {
        SWEEPS_APPLICATION_ID => "a sweep database (`--db`)".to_string(),
        SERVE_APPLICATION_ID => "`ftsweep serve`'s state file (`--state`)".to_string(),
        0 => {
            let mut names: Vec<&str> = found.tables.iter().map(String::as_str).take(5).collect();
            if found.tables.len() > 5 {
                names.push("…");
            }
            match names.is_empty() {
                true => format!("an SQLite file of another application (schema version {})", found.version),
                false => format!("an SQLite file of another application (its tables: {})", names.join(", ")),
            }
        }
        id => format!("an SQLite file of another application (application_id {id:#010x})"),
    }
}

/// The columns `run_record` reads, before the sweep's rung and role.
const RUN_COLUMNS: &str = "r.run_id, r.n_epochs, r.batch_size, r.learning_rate_multiplier, r.seed, r.state, r.attempt,
     r.job_id, r.model, r.error, r.trained_tokens, r.train_loss, r.train_accuracy, r.valid_loss, r.valid_accuracy,
     r.metric, r.score, r.n_eval, r.train_seconds, r.eval_seconds, r.origin, r.source_run, r.parent_epochs,
     r.stop_reason, r.model_epochs, r.hyperparameters";

fn run_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        run_id: r.get(0)?,
        config: run_config(r, 1, 25)?,
        state: r.get(5)?,
        attempt: r.get(6)?,
        job_id: r.get(7)?,
        model: r.get(8)?,
        error: r.get(9)?,
        trained_tokens: r.get(10)?,
        train_loss: r.get(11)?,
        train_accuracy: r.get(12)?,
        valid_loss: r.get(13)?,
        valid_accuracy: r.get(14)?,
        metric: r.get(15)?,
        score: r.get(16)?,
        n_eval: r.get(17)?,
        train_seconds: r.get(18)?,
        eval_seconds: r.get(19)?,
        origin: origin(r, 20)?,
        stop_reason: r.get(23)?,
        model_epochs: r.get(24)?,
        rung: r.get(26)?,
        role: r.get(27)?,
    })
}

/// A run's configuration from four columns starting at `first` (n_epochs,
/// batch_size, learning_rate_multiplier, seed) and the JSON object of its
/// other hyperparameters at `others`.
fn run_config(r: &rusqlite::Row<'_>, first: usize, others: usize) -> rusqlite::Result<RunConfig> {
    let mut config =
        RunConfig { n_epochs: r.get(first)?, seed: r.get::<_, i64>(first + 3)? as u64, ..RunConfig::default() };
    config.set(BATCH_SIZE, r.get::<_, Option<i64>>(first + 1)?.map(Value::Int));
    config.set(LEARNING_RATE_MULTIPLIER, r.get::<_, Option<f64>>(first + 2)?.map(Value::Float));
    if let Some(json) = r.get::<_, Option<String>>(others)? {
        let bad = |e: String| rusqlite::Error::FromSqlConversionFailure(others, rusqlite::types::Type::Text, e.into());
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&json)
            .map_err(|e| bad(format!("the hyperparameters `{json}` are not a JSON object: {e}")))?;
        for (name, v) in map {
            let value = match (v.as_i64(), v.as_f64()) {
                (Some(i), _) if !v.is_f64() => Value::Int(i),
                (_, Some(x)) => Value::Float(x),
                _ => return Err(bad(format!("hyperparameter `{name}` is not a number: {v}"))),
            };
            config.set(&name, Some(value));
        }
    }
    Ok(config)
}

/// The hyperparameters of `c` that have no column of their own, as the
/// JSON object stored in `runs.hyperparameters` (`None` when there are none).
fn other_hyperparameters(c: &RunConfig) -> Option<String> {
    let others: serde_json::Map<String, serde_json::Value> = c
        .params
        .iter()
        .filter(|(name, _)| !crate::run::is_legacy_name(name))
        .map(|(name, v)| (name.clone(), (*v).into()))
        .collect();
    (!others.is_empty()).then(|| serde_json::Value::Object(others).to_string())
}

/// A run's origin from three columns starting at `first`: its kind, the run
/// it comes from, the parent chain's epochs.
fn origin(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Origin> {
    let kind: OriginKind = r.get(first)?;
    Origin::from_parts(kind, r.get(first + 1)?, r.get(first + 2)?).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            first + 1,
            rusqlite::types::Type::Null,
            format!("a `{kind}` run without the run its model comes from").into(),
        )
    })
}

/// The columns `definition` reads.
const DEFINITION_COLUMNS: &str = "provider, base_model, training_sha256, validation_sha256, n_epochs, batch_size,
     learning_rate_multiplier, seed, origin, source_run, parent_epochs, hyperparameters";

fn definition(r: &rusqlite::Row<'_>) -> rusqlite::Result<Definition> {
    Ok(Definition {
        provider: r.get(0)?,
        base_model: r.get(1)?,
        training_sha256: r.get(2)?,
        validation_sha256: r.get(3)?,
        config: run_config(r, 4, 11)?,
        origin: origin(r, 8)?,
    })
}

fn run_definition(conn: &Connection, run_id: &str) -> Result<Option<Definition>> {
    conn.prepare_cached(&format!("SELECT {DEFINITION_COLUMNS} FROM runs WHERE run_id = ?1"))
        .doing("reading a run's definition")?
        .query_row([run_id], definition)
        .optional()
        .doing("reading a run's definition")
}

/// Inserts runs (new ones as `planned`, known ones kept as they are) and
/// makes them active in the sweep, positioned from `first`; a run the sweep
/// already lists keeps its position when `role` is not `search`. A stored
/// run with a planned run's id and another definition is refused, and the
/// transaction with it.
fn insert_runs(tx: &Transaction<'_>, sweep_id: i64, runs: &[PlannedRun], role: SweepRole, first: i64) -> Result<()> {
    let t = now();
    let (provider, base_model, training_sha256, validation_sha256): (String, String, String, String) = tx
        .query_row(
            "SELECT provider, base_model, training_sha256, validation_sha256 FROM sweeps WHERE id = ?1",
            [sweep_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .doing("reading the sweep")?;
    for (i, run) in runs.iter().enumerate() {
        let c = &run.config;
        if let Some(stored) = run_definition(tx, &run.run_id)? {
            let planned = Definition {
                provider: provider.clone(),
                base_model: base_model.clone(),
                training_sha256: training_sha256.clone(),
                validation_sha256: validation_sha256.clone(),
                config: run.config.clone(),
                origin: run.origin.clone(),
            };
            if stored != planned {
                return Err(StoreError::IdConflict {
                    run_id: run.run_id.clone(),
                    stored: Box::new(stored),
                    planned: Box::new(planned),
                });
            }
        }
        tx.execute(
            "INSERT INTO runs (run_id, provider, base_model, training_sha256, validation_sha256, n_epochs,
                               batch_size, learning_rate_multiplier, seed, state, origin, source_run,
                               parent_epochs, created_at, updated_at, hyperparameters)
             SELECT ?1, provider, base_model, training_sha256, validation_sha256, ?2, ?3, ?4, ?5, ?11, ?6, ?7,
                    ?8, ?9, ?9, ?12
             FROM sweeps WHERE id = ?10
             ON CONFLICT (run_id) DO NOTHING",
            params![
                run.run_id,
                c.n_epochs,
                c.int(BATCH_SIZE),
                c.float(LEARNING_RATE_MULTIPLIER),
                c.seed as i64,
                run.origin.kind(),
                run.origin.source(),
                run.origin.parent_epochs(),
                t,
                sweep_id,
                RunState::Planned,
                other_hyperparameters(c),
            ],
        )
        .doing("recording a run")?;
        let position = first + i as i64;
        let sql = if role == SweepRole::Search {
            "INSERT INTO sweep_runs (sweep_id, run_id, position, active, rung, role) VALUES (?1, ?2, ?3, 1, ?4, ?5)
             ON CONFLICT (sweep_id, run_id) DO UPDATE SET position = ?3, active = 1, rung = ?4, role = ?5"
        } else {
            "INSERT INTO sweep_runs (sweep_id, run_id, position, active, rung, role) VALUES (?1, ?2, ?3, 1, ?4, ?5)
             ON CONFLICT (sweep_id, run_id) DO UPDATE SET active = 1"
        };
        tx.execute(sql, params![sweep_id, run.run_id, position, run.rung, role]).doing("adding a run to the sweep")?;
    }
    Ok(())
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Store> {
        Ok(Store { conn: connect(Some(path), &SWEEPS, Access::Create)? })
    }

    /// Opens an existing database, and migrates it, to write to it if it can be written, else
    /// to read it (then it must be up to date).
    pub fn open_existing(path: &Path) -> Result<Store> {
        Ok(Store { conn: connect(Some(path), &SWEEPS, Access::Existing)? })
    }

    /// Opens an existing, up-to-date database to read it: writes nothing, not even beside it.
    pub fn open_read_only(path: &Path) -> Result<Store> {
        Ok(Store { conn: connect(Some(path), &SWEEPS, Access::ReadOnly)? })
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> Result<Store> {
        Ok(Store { conn: connect(None, &SWEEPS, Access::Create)? })
    }

    /// Records a sweep and its planned runs in one transaction: new runs are
    /// added as `planned`, known runs are kept as they are, and the sweep's
    /// active set becomes exactly `runs`.
    pub fn record_sweep(&mut self, sweep: &NewSweep<'_>, runs: &[PlannedRun]) -> Result<SweepRecord> {
        let t = now();
        let tx = self.conn.transaction().doing("starting to record the sweep")?;
        tx.execute(
            "INSERT INTO sweeps (name, spec_path, spec_toml, provider, base_model, training_file, training_sha256,
                                 validation_file, validation_sha256, metric, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)
             ON CONFLICT (name) DO UPDATE SET spec_path = ?2, spec_toml = ?3, provider = ?4, base_model = ?5,
                 training_file = ?6, training_sha256 = ?7, validation_file = ?8, validation_sha256 = ?9,
                 metric = ?10, updated_at = ?11",
            params![
                sweep.name,
                sweep.spec_path,
                sweep.spec_toml,
                sweep.provider,
                sweep.base_model,
                sweep.training_file,
                sweep.training_sha256,
                sweep.validation_file,
                sweep.validation_sha256,
                sweep.metric,
                t
            ],
        )
        .doing("recording the sweep")?;
        let sweep_id: i64 = tx
            .query_row("SELECT id FROM sweeps WHERE name = ?1", [sweep.name], |r| r.get(0))
            .doing("reading the sweep id")?;
        tx.execute("UPDATE sweep_runs SET active = 0 WHERE sweep_id = ?1", [sweep_id])
            .doing("resetting the sweep's runs")?;
        insert_runs(&tx, sweep_id, runs, SweepRole::Search, 0)?;
        tx.commit().doing("committing the sweep")?;
        self.sweep(sweep.name)?
            .ok_or(StoreError::Sql { doing: "reading back the sweep", source: rusqlite::Error::QueryReturnedNoRows })
    }

    /// Adds runs to a sweep's active set (the next rung of successive halving,
    /// replicates), in one transaction; runs it already has are reactivated
    /// where they stand.
    pub fn add_runs(&mut self, sweep_id: i64, runs: &[PlannedRun], role: SweepRole) -> Result<()> {
        let tx = self.conn.transaction().doing("adding runs to a sweep")?;
        let next: i64 = tx
            .query_row("SELECT COALESCE(MAX(position) + 1, 0) FROM sweep_runs WHERE sweep_id = ?1", [sweep_id], |r| {
                r.get(0)
            })
            .doing("reading a sweep's positions")?;
        insert_runs(&tx, sweep_id, runs, role, next)?;
        tx.commit().doing("adding runs to a sweep")
    }

    /// A stored run's definition.
    pub fn run_definition(&self, run_id: &str) -> Result<Option<Definition>> {
        run_definition(&self.conn, run_id)
    }

    /// Whether the database holds a run id of ftsweep 0.1 (40 bits): only
    /// then may planned runs be found again under an older id (see
    /// [`crate::plan::adopt_stored`]).
    pub fn has_legacy_ids(&self) -> Result<bool> {
        // Only ftsweep 0.1 wrote 12-character ids.
        self.conn
            .query_row("SELECT EXISTS (SELECT 1 FROM runs WHERE length(run_id) = 12)", [], |r| r.get(0))
            .doing("looking for 40-bit run ids")
    }

    /// A sweep by name.
    pub fn sweep(&self, name: &str) -> Result<Option<SweepRecord>> {
        self.conn
            .query_row(
                "SELECT id, name, spec_path, provider, base_model, training_file, training_sha256,
                        validation_file, validation_sha256, metric
                 FROM sweeps WHERE name = ?1",
                [name],
                |r| {
                    Ok(SweepRecord {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        spec_path: r.get(2)?,
                        provider: r.get(3)?,
                        base_model: r.get(4)?,
                        training_file: r.get(5)?,
                        training_sha256: r.get(6)?,
                        validation_file: r.get(7)?,
                        validation_sha256: r.get(8)?,
                        metric: r.get(9)?,
                    })
                },
            )
            .optional()
            .doing("reading a sweep")
    }

    /// The sweep file a sweep was last run with.
    pub fn sweep_text(&self, sweep_id: i64) -> Result<String> {
        self.conn
            .query_row("SELECT spec_toml FROM sweeps WHERE id = ?1", [sweep_id], |r| r.get(0))
            .doing("reading a sweep file")
    }

    /// The names of all sweeps, newest first.
    pub fn sweep_names(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare("SELECT name FROM sweeps ORDER BY updated_at DESC").doing("listing sweeps")?;
        let rows = stmt.query_map([], |r| r.get(0)).doing("listing sweeps")?;
        rows.collect::<rusqlite::Result<Vec<String>>>().doing("listing sweeps")
    }

    /// The runs the sweep's latest version plans, in plan order.
    pub fn sweep_runs(&self, sweep_id: i64) -> Result<Vec<RunRecord>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS}, s.rung, s.role
             FROM sweep_runs s JOIN runs r ON r.run_id = s.run_id
             WHERE s.sweep_id = ?1 AND s.active = 1
             ORDER BY s.position"
        );
        let mut stmt = self.conn.prepare(&sql).doing("listing a sweep's runs")?;
        let rows = stmt.query_map([sweep_id], run_record).doing("listing a sweep's runs")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().doing("listing a sweep's runs")
    }

    /// One run, outside any sweep (no rung, role `search`).
    pub fn run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        let sql = format!("SELECT {RUN_COLUMNS}, NULL, ?2 FROM runs r WHERE r.run_id = ?1");
        self.conn.query_row(&sql, params![run_id, SweepRole::Search], run_record).optional().doing("reading a run")
    }

    /// Records the provider's job id of a run's current attempt: it trains.
    pub fn set_job(&mut self, run_id: &str, job_id: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET state = ?4, job_id = ?2, updated_at = ?3 WHERE run_id = ?1",
                params![run_id, job_id, now(), RunState::Training],
            )
            .doing("recording a job id")?;
        Ok(())
    }

    /// Forgets the metrics of a run's attempt, before its job is followed again
    /// from the start.
    pub fn clear_attempt_metrics(&mut self, run_id: &str, attempt: i64) -> Result<()> {
        self.conn
            .execute("DELETE FROM metrics WHERE run_id = ?1 AND attempt = ?2", params![run_id, attempt])
            .doing("clearing metrics")?;
        self.conn
            .execute("DELETE FROM checkpoints WHERE run_id = ?1 AND attempt = ?2", params![run_id, attempt])
            .doing("clearing checkpoints")?;
        Ok(())
    }

    /// Records a batch of training metrics and, at an epoch's end, its
    /// checkpoint, in one transaction.
    pub fn record_progress(
        &mut self,
        run_id: &str,
        attempt: i64,
        metrics: &[MetricRow],
        checkpoint: Option<&CheckpointRow>,
    ) -> Result<()> {
        let tx = self.conn.transaction().doing("recording metrics")?;
        insert_metrics(&tx, run_id, attempt, metrics)?;
        if let Some(c) = checkpoint {
            tx.execute(
                "INSERT OR REPLACE INTO checkpoints (run_id, attempt, epoch, step, model, train_loss, valid_loss,
                                                     valid_accuracy, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    run_id,
                    attempt,
                    c.epoch,
                    c.step as i64,
                    c.model,
                    c.train_loss,
                    c.valid_loss,
                    c.valid_accuracy,
                    now()
                ],
            )
            .doing("recording a checkpoint")?;
        }
        tx.commit().doing("recording metrics")
    }

    /// Marks a run as trained.
    pub fn finish_training(&mut self, run_id: &str, r: &TrainingResult) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET state = ?10, model = ?2, trained_tokens = ?3, train_loss = ?4,
                     train_accuracy = ?5, valid_loss = ?6, valid_accuracy = ?7, train_seconds = ?8, updated_at = ?9
                 WHERE run_id = ?1",
                params![
                    run_id,
                    r.model,
                    r.trained_tokens,
                    r.train_loss,
                    r.train_accuracy,
                    r.valid_loss,
                    r.valid_accuracy,
                    r.seconds,
                    now(),
                    RunState::Trained,
                ],
            )
            .doing("recording a trained run")?;
        Ok(())
    }

    /// Marks a run as failed, with the reason.
    pub fn fail_run(&mut self, run_id: &str, reason: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET state = ?4, error = ?2, updated_at = ?3 WHERE run_id = ?1",
                params![run_id, reason, now(), RunState::Failed],
            )
            .doing("recording a failed run")?;
        Ok(())
    }

    /// Marks a run as being evaluated.
    pub fn start_evaluation(&mut self, run_id: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET state = ?3, updated_at = ?2 WHERE run_id = ?1",
                params![run_id, now(), RunState::Evaluating],
            )
            .doing("starting an evaluation")?;
        Ok(())
    }

    /// Records a run's score, the mean of its examples' scores by the sweep's metric, and marks it
    /// done. Its graded examples are its model's evaluation's; graded rows recorded for the model
    /// before evaluations were (`eval_results`) go.
    pub fn finish_evaluation(
        &mut self,
        run_id: &str,
        model: &str,
        metric: &str,
        scores: &[f64],
        seconds: f64,
    ) -> Result<f64> {
        let score = if scores.is_empty() { 0.0 } else { scores.iter().sum::<f64>() / scores.len() as f64 };
        let tx = self.conn.transaction().doing("recording an evaluation")?;
        tx.execute("DELETE FROM eval_results WHERE run_id = ?1 AND model = ?2", params![run_id, model])
            .doing("replacing an evaluation")?;
        tx.execute(
            "UPDATE runs SET state = ?7, metric = ?2, score = ?3, n_eval = ?4, eval_seconds = ?5, updated_at = ?6
             WHERE run_id = ?1",
            params![run_id, metric, score, scores.len() as i64, seconds, now(), RunState::Done],
        )
        .doing("recording a run's score")?;
        tx.commit().doing("recording an evaluation")?;
        Ok(score)
    }

    /// A run's metrics of its current attempt, in step order.
    pub fn run_metrics(&self, run_id: &str) -> Result<Vec<MetricRow>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT m.step, m.epoch, m.kind, m.train_loss, m.train_accuracy, m.valid_loss, m.valid_accuracy
                 FROM metrics m JOIN runs r ON r.run_id = m.run_id AND r.attempt = m.attempt
                 WHERE m.run_id = ?1 ORDER BY m.step, m.kind DESC, m.seq",
            )
            .doing("reading metrics")?;
        let rows = stmt
            .query_map([run_id], |r| {
                Ok(MetricRow {
                    step: r.get::<_, i64>(0)? as u64,
                    epoch: r.get(1)?,
                    epoch_end: r.get::<_, String>(2)? == "epoch",
                    train_loss: r.get(3)?,
                    train_accuracy: r.get(4)?,
                    valid_loss: r.get(5)?,
                    valid_accuracy: r.get(6)?,
                })
            })
            .doing("reading metrics")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().doing("reading metrics")
    }

    /// A run's checkpoints of its current attempt, by epoch.
    pub fn run_checkpoints(&self, run_id: &str) -> Result<Vec<CheckpointRow>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT c.epoch, c.step, c.model, c.train_loss, c.valid_loss, c.valid_accuracy
                 FROM checkpoints c JOIN runs r ON r.run_id = c.run_id AND r.attempt = c.attempt
                 WHERE c.run_id = ?1 ORDER BY c.epoch",
            )
            .doing("reading checkpoints")?;
        let rows = stmt
            .query_map([run_id], |r| {
                Ok(CheckpointRow {
                    epoch: r.get(0)?,
                    step: r.get::<_, i64>(1)? as u64,
                    model: r.get(2)?,
                    train_loss: r.get(3)?,
                    valid_loss: r.get(4)?,
                    valid_accuracy: r.get(5)?,
                })
            })
            .doing("reading checkpoints")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().doing("reading checkpoints")
    }

    /// A run's graded examples for a model, as recorded before evaluations were.
    pub fn eval_rows(&self, run_id: &str, model: &str) -> Result<Vec<EvalRow>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT example, line, reference, prediction, probability, score FROM eval_results
                 WHERE run_id = ?1 AND model = ?2 ORDER BY example",
            )
            .doing("reading evaluation results")?;
        let rows = stmt
            .query_map(params![run_id, model], |r| {
                Ok(EvalRow {
                    example: r.get::<_, i64>(0)? as usize,
                    line: r.get::<_, i64>(1)? as usize,
                    reference: r.get(2)?,
                    prediction: r.get(3)?,
                    probability: r.get(4)?,
                    score: r.get(5)?,
                })
            })
            .doing("reading evaluation results")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().doing("reading evaluation results")
    }

    /// The id of a file already uploaded to `server` with this content.
    pub fn upload(&self, server: &str, sha256: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT file_id FROM uploads WHERE server = ?1 AND sha256 = ?2", [server, sha256], |r| r.get(0))
            .optional()
            .doing("looking up an upload")
    }

    /// Records an upload.
    pub fn record_upload(&mut self, server: &str, sha256: &str, file_id: &str, bytes: u64) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO uploads (server, sha256, file_id, bytes, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![server, sha256, file_id, bytes as i64, now()],
            )
            .doing("recording an upload")?;
        Ok(())
    }

    /// Forgets an upload (the server lost the file).
    pub fn forget_upload(&mut self, server: &str, sha256: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM uploads WHERE server = ?1 AND sha256 = ?2", [server, sha256])
            .doing("forgetting an upload")?;
        Ok(())
    }
}

fn insert_metrics(tx: &Transaction<'_>, run_id: &str, attempt: i64, metrics: &[MetricRow]) -> Result<()> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO metrics (run_id, attempt, step, epoch, kind, seq, train_loss, train_accuracy, valid_loss,
                                  valid_accuracy)
             VALUES (?1, ?2, ?3, ?4, ?5,
                     (SELECT count(*) FROM metrics WHERE run_id = ?1 AND attempt = ?2 AND step = ?3 AND kind = ?5),
                     ?6, ?7, ?8, ?9)",
        )
        .doing("recording metrics")?;
    for m in metrics {
        stmt.execute(params![
            run_id,
            attempt,
            m.step as i64,
            m.epoch,
            if m.epoch_end { "epoch" } else { "step" },
            m.train_loss,
            m.train_accuracy,
            m.valid_loss,
            m.valid_accuracy
        ])
        .doing("recording metrics")?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An in-memory store with one sweep; returns it and the sweep's id.
    pub(crate) fn store_with_sweep() -> (Store, i64) {
        let mut s = Store::open_in_memory().unwrap();
        let id = s.record_sweep(&sweep(), &[]).unwrap().id;
        (s, id)
    }

    fn sweep<'a>() -> NewSweep<'a> {
        NewSweep {
            name: "s",
            spec_path: "s.toml",
            spec_toml: "",
            provider: "local",
            base_model: "local/ngram",
            training_file: "t.jsonl",
            training_sha256: "aa",
            validation_file: "v.jsonl",
            validation_sha256: "bb",
            metric: "exact_match",
        }
    }

    fn run(id: &str, n_epochs: u32) -> PlannedRun {
        PlannedRun {
            run_id: id.into(),
            config: RunConfig::supervised(Some(n_epochs), Some(4), Some(1.0), 1),
            origin: Origin::Job,
            rung: None,
        }
    }

    /// A new attempt of a run, as the scheduler launches one: claimed with the launch, then its job.
    fn launch(s: &mut Store, sweep_id: i64, run_id: &str, job_id: &str) -> i64 {
        let claim = s.claim(run_id, "me:1:0", 60.0, &|_| true, Some((Budget::default(), 0, 0.0, sweep_id))).unwrap();
        let Claim::Claimed { attempt: Some(attempt) } = claim else { panic!("{claim:?}") };
        s.set_job(run_id, job_id).unwrap();
        attempt
    }

    #[test]
    fn every_migration_applies_and_reopening_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let version = |s: Store| s.conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0)).unwrap();
        assert_eq!(version(Store::open(&path).unwrap()), MIGRATIONS.len() as i64);
        assert_eq!(version(Store::open(&path).unwrap()), MIGRATIONS.len() as i64);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        Store::open(&path).unwrap().conn.pragma_update(None, "user_version", 99).unwrap();
        assert!(matches!(Store::open(&path), Err(StoreError::TooNew { found: 99, .. })));
    }

    #[test]
    fn re_recording_keeps_run_state_and_tracks_the_active_set() {
        let mut s = Store::open_in_memory().unwrap();
        let rec = s.record_sweep(&sweep(), &[run("a", 1), run("b", 2)]).unwrap();
        let attempt = launch(&mut s, rec.id, "a", "job-a");
        assert_eq!(attempt, 1);
        s.finish_training(
            "a",
            &TrainingResult {
                model: "m".into(),
                trained_tokens: 10,
                train_loss: Some(0.1),
                train_accuracy: None,
                valid_loss: Some(0.2),
                valid_accuracy: None,
                seconds: 0.5,
            },
        )
        .unwrap();
        let rec2 = s.record_sweep(&sweep(), &[run("a", 1), run("c", 3)]).unwrap();
        assert_eq!(rec.id, rec2.id);
        let runs = s.sweep_runs(rec.id).unwrap();
        let ids: Vec<_> = runs.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["a", "c"], "b left the active set");
        assert_eq!(runs[0].state, RunState::Trained);
        assert_eq!(runs[0].model.as_deref(), Some("m"));
        assert_eq!(runs[1].state, RunState::Planned);
    }

    #[test]
    fn a_stored_run_defined_otherwise_than_a_planned_run_of_its_id_is_refused() {
        let mut s = Store::open_in_memory().unwrap();
        let rec = s.record_sweep(&sweep(), &[run("a", 1)]).unwrap();
        let e = s.record_sweep(&sweep(), &[run("b", 2), run("a", 2)]).unwrap_err();
        assert!(matches!(&e, StoreError::IdConflict { run_id, .. } if run_id == "a"), "{e}");
        assert!(e.to_string().contains("stored:  local local/ngram training aa validation bb n_epochs=1"), "{e}");
        assert!(e.to_string().contains("planned: local local/ngram training aa validation bb n_epochs=2"), "{e}");
        assert!(s.run("b").unwrap().is_none(), "the transaction is rolled back");
        assert!(matches!(s.add_runs(rec.id, &[run("a", 3)], SweepRole::Search), Err(StoreError::IdConflict { .. })));
        let other_data = NewSweep { training_sha256: "ab", ..sweep() };
        assert!(matches!(s.record_sweep(&other_data, &[run("a", 1)]), Err(StoreError::IdConflict { .. })));
        assert_eq!(s.run("a").unwrap().unwrap().config.n_epochs, Some(1));
    }

    #[test]
    fn a_new_attempt_hides_the_old_attempts_metrics() {
        let mut s = Store::open_in_memory().unwrap();
        let rec = s.record_sweep(&sweep(), &[run("a", 1)]).unwrap();
        let m = |step| MetricRow {
            step,
            epoch: 1,
            epoch_end: false,
            train_loss: Some(1.0),
            train_accuracy: None,
            valid_loss: None,
            valid_accuracy: None,
        };
        let a1 = launch(&mut s, rec.id, "a", "j");
        s.record_progress("a", a1, &[m(1), m(2)], None).unwrap();
        let a2 = launch(&mut s, rec.id, "a", "j");
        s.record_progress("a", a2, &[m(1)], None).unwrap();
        assert_eq!(s.run_metrics("a").unwrap().len(), 1);
    }

    #[test]
    fn local_models_keep_the_last_three_epochs() {
        let mut s = Store::open_in_memory().unwrap();
        for epoch in 1..=5 {
            s.save_local_model(&format!("m{epoch}"), "j", epoch, &[epoch as u8], 3).unwrap();
        }
        assert_eq!(s.load_local_model("m2").unwrap(), None);
        assert_eq!(s.load_local_model("m3").unwrap(), Some(vec![3]));
        assert_eq!(s.load_local_model("m5").unwrap(), Some(vec![5]));
    }

    #[test]
    fn evaluation_scores_the_mean() {
        let mut s = Store::open_in_memory().unwrap();
        s.record_sweep(&sweep(), &[run("a", 1)]).unwrap();
        // Graded rows of the model recorded before evaluations were: read until it is evaluated again.
        s.conn
            .execute(
                "INSERT INTO eval_results (run_id, model, example, line, reference, prediction, probability, score)
                 VALUES ('a', 'm', 0, 1, 'x', 'y', NULL, 1.0)",
                [],
            )
            .unwrap();
        assert_eq!(s.eval_rows("a", "m").unwrap()[0].prediction, "y");
        let score = s.finish_evaluation("a", "m", "exact_match", &[1.0, 0.0, 1.0], 0.1).unwrap();
        assert!((score - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.run("a").unwrap().unwrap().n_eval, Some(3));
        assert!(s.eval_rows("a", "m").unwrap().is_empty(), "the examples are the evaluation's, written once");
    }
}
