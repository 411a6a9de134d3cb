//! `ftsweep serve`'s own SQLite file: uploaded files with their content, jobs, events, checkpoints
//! and the local provider's weights. Objects are kept as their protocol JSON; `seq` orders them.
//! Same pragmas and migration scheme as the sweep store, with its own migrations.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[path = "serve_together.rs"]
mod together;
pub use together::TogetherUpload;

use super::{Access, Doing, Result, SERVE_APPLICATION_ID, Schema, connect, now};
use crate::wire::openai::{Checkpoint, FileObject, Job, JobEvent};

/// The migrations, in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    include_str!("serve_migrations/0001_init.sql"),
    include_str!("serve_migrations/0002_file_chunks.sql"),
    include_str!("serve_migrations/0003_together.sql"),
];

/// How many chunks one lock of the store deletes, so that deleting a big file never holds it long.
const CHUNKS_PER_DELETE: usize = 8;

/// The serve state file: its own application id and migrations.
const SCHEMA: Schema = Schema {
    what: "an `ftsweep serve` state file",
    option: "--state",
    application_id: SERVE_APPLICATION_ID,
    migrations: MIGRATIONS,
    tables: &["files", "jobs", "events"],
};

/// An open serve database.
pub struct ServeStore {
    conn: Connection,
}

/// The serve store shared by the server's tasks and training threads; the lock is never held
/// across an `.await`.
#[derive(Clone)]
pub struct SharedServeStore(Arc<Mutex<ServeStore>>);

impl SharedServeStore {
    pub fn new(store: ServeStore) -> SharedServeStore {
        SharedServeStore(Arc::new(Mutex::new(store)))
    }

    pub fn lock(&self) -> MutexGuard<'_, ServeStore> {
        // Every write is one statement or one transaction, so a poisoned lock is still usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands a file's content to `each` a piece at a time (its inline content, then its chunks),
    /// locking the store for one piece at a time; stops early when `each` returns false. Returns
    /// whether the file exists and all its bytes were handed over (false if it is deleted while
    /// it is read).
    pub fn each_piece(&self, id: &str, mut each: impl FnMut(Vec<u8>) -> bool) -> Result<bool> {
        let Some((file, inline)) = ({
            let store = self.lock();
            store.file(id)?.zip(store.inline_content(id)?)
        }) else {
            return Ok(false);
        };
        let mut sent = inline.len() as u64;
        if !inline.is_empty() && !each(inline) {
            return Ok(false);
        }
        for n in 0.. {
            let Some(chunk) = self.lock().file_chunk(id, n)? else { break };
            sent += chunk.len() as u64;
            if !each(chunk) {
                return Ok(false);
            }
        }
        Ok(sent == file.bytes)
    }

    /// A file's whole content, read a chunk at a time; `None` if there is no such file (or it is
    /// deleted while it is read).
    pub fn read_content(&self, id: &str) -> Result<Option<Vec<u8>>> {
        let mut content = Vec::new();
        let whole = self.each_piece(id, |piece| {
            content.extend_from_slice(&piece);
            true
        })?;
        Ok(whole.then_some(content))
    }

    /// Deletes a file's chunks (an upload that failed, or a deleted file's) a few at a time.
    pub fn delete_chunks(&self, id: &str) -> Result<()> {
        while self.lock().delete_some_chunks(id, CHUNKS_PER_DELETE)? > 0 {}
        Ok(())
    }
}

/// Encodes an object as JSON for a column.
fn to_json<T: Serialize>(value: &T) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// Decodes the JSON in column `i` of a row.
fn from_json<T: DeserializeOwned>(row: &Row<'_>, i: usize) -> rusqlite::Result<T> {
    let text: String = row.get(i)?;
    serde_json::from_str(&text).map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, Type::Text, Box::new(e)))
}

impl ServeStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<ServeStore> {
        Ok(ServeStore { conn: connect(Some(path), &SCHEMA, Access::Create)? })
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> Result<ServeStore> {
        Ok(ServeStore { conn: connect(None, &SCHEMA, Access::Create)? })
    }

    /// Stores a file and its inline content (for an upload, none: its chunks were stored first).
    pub fn insert_file(&mut self, file: &FileObject, content: &[u8]) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO files (id, purpose, object, content) VALUES (?1, ?2, ?3, ?4)",
                params![file.id, file.purpose, to_json(file).doing("encoding a file")?, content],
            )
            .doing("storing a file")?;
        Ok(())
    }

    pub fn file(&self, id: &str) -> Result<Option<FileObject>> {
        self.conn
            .query_row("SELECT object FROM files WHERE id = ?1", [id], |r| from_json(r, 0))
            .optional()
            .doing("reading a file")
    }

    /// The content kept in a file's row: all of a result file's, none of an upload's.
    fn inline_content(&self, id: &str) -> Result<Option<Vec<u8>>> {
        self.conn
            .query_row("SELECT content FROM files WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .doing("reading a file's content")
    }

    /// Stores chunk `n` (from 0) of the upload that will be file `file_id`.
    pub fn insert_chunk(&mut self, file_id: &str, n: u64, data: &[u8]) -> Result<()> {
        self.conn
            .execute("INSERT INTO file_chunks (file_id, n, data) VALUES (?1, ?2, ?3)", params![file_id, n as i64, data])
            .doing("storing a chunk of an upload")?;
        Ok(())
    }

    /// Chunk `n` of a file's content, if it has one.
    pub fn file_chunk(&self, file_id: &str, n: u64) -> Result<Option<Vec<u8>>> {
        self.conn
            .prepare_cached("SELECT data FROM file_chunks WHERE file_id = ?1 AND n = ?2")
            .and_then(|mut stmt| stmt.query_row(params![file_id, n as i64], |r| r.get(0)).optional())
            .doing("reading a chunk of a file")
    }

    /// Deletes up to `limit` of a file's chunks; returns how many.
    fn delete_some_chunks(&mut self, file_id: &str, limit: usize) -> Result<usize> {
        self.conn
            .execute(
                "DELETE FROM file_chunks WHERE seq IN (SELECT seq FROM file_chunks WHERE file_id = ?1 LIMIT ?2)",
                params![file_id, limit as i64],
            )
            .doing("deleting a file's chunks")
    }

    /// Deletes the chunks of uploads that never became files (the server stopped during them, or
    /// while it deleted a file); returns how many. Only while no upload is arriving.
    pub fn delete_stray_chunks(&mut self) -> Result<usize> {
        self.conn
            .execute("DELETE FROM file_chunks WHERE file_id NOT IN (SELECT id FROM files)", [])
            .doing("deleting the chunks of unfinished uploads")
    }

    /// Up to `limit` files (of one purpose, if given), oldest or newest first, after the file
    /// `after` in that order (none if `after` is unknown).
    pub fn files(
        &self,
        purpose: Option<&str>,
        ascending: bool,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<FileObject>> {
        let sql = if ascending {
            "SELECT object FROM files WHERE (?1 IS NULL OR purpose = ?1)
               AND (?2 IS NULL OR seq > (SELECT seq FROM files WHERE id = ?2)) ORDER BY seq LIMIT ?3"
        } else {
            "SELECT object FROM files WHERE (?1 IS NULL OR purpose = ?1)
               AND (?2 IS NULL OR seq < (SELECT seq FROM files WHERE id = ?2)) ORDER BY seq DESC LIMIT ?3"
        };
        let mut stmt = self.conn.prepare_cached(sql).doing("listing files")?;
        let rows = stmt.query_map(params![purpose, after, limit as i64], |r| from_json(r, 0)).doing("listing files")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().doing("listing files")
    }

    /// Deletes a file (not its chunks: `SharedServeStore::delete_chunks` does that, a few at a
    /// time); returns whether it existed.
    pub fn delete_file(&mut self, id: &str) -> Result<bool> {
        Ok(self.conn.execute("DELETE FROM files WHERE id = ?1", [id]).doing("deleting a file")? > 0)
    }

    pub fn insert_job(&mut self, job: &Job) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO jobs (id, object) VALUES (?1, ?2)",
                params![job.id, to_json(job).doing("encoding a job")?],
            )
            .doing("storing a job")?;
        Ok(())
    }

    pub fn update_job(&mut self, job: &Job) -> Result<()> {
        self.conn
            .execute(
                "UPDATE jobs SET object = ?2 WHERE id = ?1",
                params![job.id, to_json(job).doing("encoding a job")?],
            )
            .doing("updating a job")?;
        Ok(())
    }

    pub fn job(&self, id: &str) -> Result<Option<Job>> {
        self.conn
            .query_row("SELECT object FROM jobs WHERE id = ?1", [id], |r| from_json(r, 0))
            .optional()
            .doing("reading a job")
    }

    /// Every job, newest first.
    pub fn jobs(&self) -> Result<Vec<Job>> {
        let mut stmt = self.conn.prepare_cached("SELECT object FROM jobs ORDER BY seq DESC").doing("listing jobs")?;
        let rows = stmt.query_map([], |r| from_json(r, 0)).doing("listing jobs")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().doing("listing jobs")
    }

    /// Records the local provider's job id of a job's training attempt.
    pub fn set_provider_job(&mut self, id: &str, provider_job: &str) -> Result<()> {
        self.conn
            .execute("UPDATE jobs SET provider_job = ?2 WHERE id = ?1", params![id, provider_job])
            .doing("recording a job's training attempt")?;
        Ok(())
    }

    /// Forgets what an interrupted training attempt left: its checkpoints and weights.
    pub fn forget_attempt(&mut self, id: &str) -> Result<()> {
        let tx = self.conn.transaction().doing("forgetting a training attempt")?;
        tx.execute(
            "DELETE FROM models WHERE job_id = (SELECT provider_job FROM jobs WHERE id = ?1 AND provider_job IS NOT NULL)",
            [id],
        )
        .doing("deleting an attempt's weights")?;
        tx.execute("DELETE FROM checkpoints WHERE job_id = ?1", [id]).doing("deleting an attempt's checkpoints")?;
        tx.execute("UPDATE jobs SET provider_job = NULL WHERE id = ?1", [id]).doing("forgetting a training attempt")?;
        tx.commit().doing("forgetting a training attempt")
    }

    /// Appends a job's events, in order, in one transaction.
    pub fn insert_events(&mut self, job_id: &str, events: &[JobEvent]) -> Result<()> {
        let tx = self.conn.transaction().doing("storing events")?;
        for e in events {
            tx.execute(
                "INSERT INTO events (id, job_id, object) VALUES (?1, ?2, ?3)",
                params![e.id, job_id, to_json(e).doing("encoding an event")?],
            )
            .doing("storing an event")?;
        }
        tx.commit().doing("storing events")
    }

    /// Up to `limit` of a job's events, newest first, older than the event `after` (none if
    /// `after` is unknown).
    pub fn events(&self, job_id: &str, after: Option<&str>, limit: usize) -> Result<Vec<JobEvent>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT object FROM events WHERE job_id = ?1
                   AND (?2 IS NULL OR seq < (SELECT seq FROM events WHERE id = ?2)) ORDER BY seq DESC LIMIT ?3",
            )
            .doing("listing events")?;
        let rows = stmt.query_map(params![job_id, after, limit as i64], |r| from_json(r, 0)).doing("listing events")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().doing("listing events")
    }

    /// Stores an epoch's checkpoint and drops the job's checkpoints older than its last `keep`
    /// epochs.
    pub fn insert_checkpoint(&mut self, job_id: &str, epoch: u32, checkpoint: &Checkpoint, keep: u32) -> Result<()> {
        let tx = self.conn.transaction().doing("storing a checkpoint")?;
        tx.execute(
            "INSERT INTO checkpoints (id, job_id, epoch, object) VALUES (?1, ?2, ?3, ?4)",
            params![checkpoint.id, job_id, epoch, to_json(checkpoint).doing("encoding a checkpoint")?],
        )
        .doing("storing a checkpoint")?;
        tx.execute(
            "DELETE FROM checkpoints WHERE job_id = ?1 AND epoch <= ?2",
            params![job_id, i64::from(epoch) - i64::from(keep)],
        )
        .doing("dropping old checkpoints")?;
        tx.commit().doing("storing a checkpoint")
    }

    /// A job's checkpoints, newest first.
    pub fn checkpoints(&self, job_id: &str) -> Result<Vec<Checkpoint>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT object FROM checkpoints WHERE job_id = ?1 ORDER BY epoch DESC, seq DESC")
            .doing("listing checkpoints")?;
        let rows = stmt.query_map([job_id], |r| from_json(r, 0)).doing("listing checkpoints")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().doing("listing checkpoints")
    }

    /// Saves a model's weights and drops the provider job's weights older than its last `keep`
    /// epochs.
    pub fn save_model(&mut self, model: &str, job_id: &str, epoch: u32, weights: &[u8], keep: u32) -> Result<()> {
        let tx = self.conn.transaction().doing("saving a model")?;
        tx.execute(
            "INSERT OR REPLACE INTO models (model, job_id, epoch, weights, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![model, job_id, epoch, weights, now() as i64],
        )
        .doing("saving a model")?;
        tx.execute(
            "DELETE FROM models WHERE job_id = ?1 AND epoch <= ?2",
            params![job_id, i64::from(epoch) - i64::from(keep)],
        )
        .doing("dropping old checkpoints' weights")?;
        tx.commit().doing("saving a model")
    }

    pub fn load_model(&self, model: &str) -> Result<Option<Vec<u8>>> {
        self.conn
            .query_row("SELECT weights FROM models WHERE model = ?1", [model], |r| r.get(0))
            .optional()
            .doing("loading a model")
    }

    /// Whether `model` is a succeeded job's fine-tuned model or one of that job's kept
    /// checkpoints, and its weights are here: a model a new job can continue. (An unfinished
    /// job's checkpoints are not: a restart forgets them.)
    pub fn is_fine_tuned_model(&self, model: &str) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM models WHERE model = ?1)
                   AND EXISTS (SELECT 1 FROM jobs j WHERE json_extract(j.object, '$.status') = 'succeeded'
                     AND (json_extract(j.object, '$.fine_tuned_model') = ?1
                          OR EXISTS (SELECT 1 FROM checkpoints c WHERE c.job_id = j.id
                                       AND json_extract(c.object, '$.fine_tuned_model_checkpoint') = ?1)))",
                [model],
                |r| r.get(0),
            )
            .doing("looking up a fine-tuned model")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(id: &str, purpose: &str) -> FileObject {
        FileObject {
            id: id.into(),
            object: "file".into(),
            bytes: 1,
            created_at: 0,
            filename: "f.jsonl".into(),
            purpose: purpose.into(),
            status: None,
            expires_at: None,
        }
    }

    #[test]
    fn every_migration_applies_and_reopening_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.db");
        drop(ServeStore::open(&path).unwrap());
        let s = ServeStore::open(&path).unwrap();
        let version: i64 = s.conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    #[test]
    fn files_page_in_both_orders_and_filter_by_purpose() {
        let mut s = ServeStore::open_in_memory().unwrap();
        for (id, purpose) in [("a", "fine-tune"), ("b", "batch"), ("c", "fine-tune")] {
            s.insert_file(&file(id, purpose), b"x").unwrap();
        }
        let ids = |v: Vec<FileObject>| v.into_iter().map(|f| f.id).collect::<Vec<_>>();
        assert_eq!(ids(s.files(None, false, None, 10).unwrap()), ["c", "b", "a"]);
        assert_eq!(ids(s.files(None, true, Some("a"), 1).unwrap()), ["b"]);
        assert_eq!(ids(s.files(Some("fine-tune"), false, Some("c"), 10).unwrap()), ["a"]);
        assert!(s.files(None, false, Some("unknown"), 10).unwrap().is_empty());
        assert!(s.delete_file("b").unwrap() && !s.delete_file("b").unwrap());
        assert_eq!(s.inline_content("c").unwrap(), Some(b"x".to_vec()));
    }

    #[test]
    fn an_upload_is_its_chunks_in_order_and_unfinished_uploads_leave_nothing() {
        let shared = SharedServeStore::new(ServeStore::open_in_memory().unwrap());
        {
            let mut s = shared.lock();
            s.insert_chunk("up", 1, b"world").unwrap();
            s.insert_chunk("up", 0, b"hello ").unwrap();
            s.insert_file(&FileObject { bytes: 11, ..file("up", "fine-tune") }, &[]).unwrap();
            for n in 0..20 {
                s.insert_chunk("stray", n, b"y").unwrap();
            }
        }
        assert_eq!(shared.read_content("up").unwrap().as_deref(), Some(&b"hello world"[..]));
        assert_eq!(shared.read_content("stray").unwrap(), None, "chunks without a file are no file");
        // A file whose chunks are missing (deleted while it is read) is not handed over whole.
        shared.lock().insert_file(&FileObject { bytes: 3, ..file("short", "fine-tune") }, b"ab").unwrap();
        assert_eq!(shared.read_content("short").unwrap(), None);
        assert_eq!(shared.lock().delete_stray_chunks().unwrap(), 20);
        shared.lock().insert_chunk("failed", 0, b"z").unwrap();
        shared.delete_chunks("failed").unwrap();
        assert!(shared.lock().delete_file("up").unwrap());
        shared.delete_chunks("up").unwrap();
        let left: i64 = shared.lock().conn.query_row("SELECT COUNT(*) FROM file_chunks", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 0);
    }

    /// Job `j`'s checkpoint at `epoch` (step = epoch), for `model`.
    fn checkpoint(epoch: u32, model: &str) -> Checkpoint {
        Checkpoint {
            id: format!("ftckpt_{epoch}"),
            object: "fine_tuning.job.checkpoint".into(),
            created_at: 0,
            fine_tuning_job_id: "j".into(),
            step_number: u64::from(epoch),
            fine_tuned_model_checkpoint: model.to_string(),
            metrics: Default::default(),
        }
    }

    #[test]
    fn models_and_checkpoints_keep_the_last_three_epochs() {
        let mut s = ServeStore::open_in_memory().unwrap();
        for epoch in 1..=5u32 {
            s.save_model(&format!("m{epoch}"), "p", epoch, &[epoch as u8], 3).unwrap();
            s.insert_checkpoint("j", epoch, &checkpoint(epoch, &format!("m{epoch}")), 3).unwrap();
        }
        assert_eq!(s.load_model("m2").unwrap(), None);
        assert_eq!(s.load_model("m3").unwrap(), Some(vec![3]));
        let kept: Vec<u64> = s.checkpoints("j").unwrap().iter().map(|c| c.step_number).collect();
        assert_eq!(kept, [5, 4, 3]);
    }

    #[test]
    fn fine_tuned_models_are_a_succeeded_job_s_model_and_checkpoints_with_weights() {
        let mut s = ServeStore::open_in_memory().unwrap();
        let mut job: Job = serde_json::from_str(r#"{"id":"j","status":"running"}"#).unwrap();
        s.insert_job(&job).unwrap();
        for (model, epoch) in [("ft:m:ckpt-step-1", 1), ("ft:m:ckpt-step-2", 2), ("ft:m", 2)] {
            s.save_model(model, "p", epoch, &[1], 3).unwrap();
        }
        for epoch in [1, 2, 3] {
            s.insert_checkpoint("j", epoch, &checkpoint(epoch, &format!("ft:m:ckpt-step-{epoch}")), 3).unwrap();
        }
        let known = |s: &ServeStore| {
            ["ft:m", "ft:m:ckpt-step-1", "ft:m:ckpt-step-2", "ft:m:ckpt-step-3", "ft:other"]
                .map(|m| s.is_fine_tuned_model(m).unwrap())
        };
        assert_eq!(known(&s), [false; 5], "the job has not succeeded");
        (job.status, job.fine_tuned_model) = ("succeeded".into(), Some("ft:m".into()));
        s.update_job(&job).unwrap();
        assert_eq!(known(&s), [true, true, true, false, false], "checkpoint 3 has no weights");
    }
}
