//! The serve store's rows for `serve --protocol together`: announced uploads (the presigned
//! flow), each fine-tune's Together parameters, and dedicated endpoints. Objects are kept as
//! JSON, like the OpenAI objects.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Doing, Result, ServeStore, from_json, to_json};

/// An upload announced by `POST /v1/files`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TogetherUpload {
    pub file_id: String,
    /// The secret of its PUT URL.
    pub token: String,
    pub filename: String,
    pub purpose: String,
    pub file_type: String,
    /// The SHA-256 hex the client announced, if any.
    pub checksum: Option<String>,
    pub created_at: i64,
    /// Set by `preprocess`.
    pub line_count: Option<u64>,
}

fn upload_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TogetherUpload> {
    Ok(TogetherUpload {
        file_id: r.get(0)?,
        token: r.get(1)?,
        filename: r.get(2)?,
        purpose: r.get(3)?,
        file_type: r.get(4)?,
        checksum: r.get(5)?,
        created_at: r.get(6)?,
        line_count: r.get::<_, Option<i64>>(7)?.map(|n| n as u64),
    })
}

const UPLOAD_COLUMNS: &str = "file_id, token, filename, purpose, file_type, checksum, created_at, line_count";

impl ServeStore {
    pub fn insert_together_upload(&mut self, u: &TogetherUpload) -> Result<()> {
        self.conn
            .execute(
                &format!("INSERT INTO together_uploads ({UPLOAD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)"),
                params![u.file_id, u.token, u.filename, u.purpose, u.file_type, u.checksum, u.created_at],
            )
            .doing("storing an announced upload")?;
        Ok(())
    }

    pub fn together_upload(&self, file_id: &str) -> Result<Option<TogetherUpload>> {
        self.conn
            .query_row(
                &format!("SELECT {UPLOAD_COLUMNS} FROM together_uploads WHERE file_id = ?1"),
                [file_id],
                upload_row,
            )
            .optional()
            .doing("reading an announced upload")
    }

    pub fn together_upload_by_token(&self, token: &str) -> Result<Option<TogetherUpload>> {
        self.conn
            .query_row(&format!("SELECT {UPLOAD_COLUMNS} FROM together_uploads WHERE token = ?1"), [token], upload_row)
            .optional()
            .doing("reading an announced upload")
    }

    /// The oldest file with this checksum whose bytes all arrived (and which was not deleted).
    pub fn together_file_with_checksum(&self, checksum: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT u.file_id FROM together_uploads u JOIN files f ON f.id = u.file_id
                  WHERE u.checksum = ?1 ORDER BY f.seq LIMIT 1",
                [checksum],
                |r| r.get(0),
            )
            .optional()
            .doing("looking up a file by checksum")
    }

    pub fn set_together_line_count(&mut self, file_id: &str, lines: u64) -> Result<()> {
        self.conn
            .execute("UPDATE together_uploads SET line_count = ?2 WHERE file_id = ?1", params![file_id, lines as i64])
            .doing("recording a file's line count")?;
        Ok(())
    }

    /// Forgets an announced upload; returns whether there was one.
    pub fn delete_together_upload(&mut self, file_id: &str) -> Result<bool> {
        let n = (self.conn.execute("DELETE FROM together_uploads WHERE file_id = ?1", [file_id]))
            .doing("deleting an announced upload")?;
        Ok(n > 0)
    }

    /// Every announced upload, oldest first.
    pub fn together_uploads(&self) -> Result<Vec<TogetherUpload>> {
        let mut stmt = (self
            .conn
            .prepare_cached(&format!("SELECT {UPLOAD_COLUMNS} FROM together_uploads ORDER BY created_at, rowid")))
        .doing("listing announced uploads")?;
        let rows = stmt.query_map([], upload_row).doing("listing announced uploads")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().doing("listing announced uploads")
    }

    pub fn insert_together_job<T: Serialize>(&mut self, job_id: &str, params: &T) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO together_jobs (job_id, object) VALUES (?1, ?2)",
                params![job_id, to_json(params).doing("encoding a fine-tune's parameters")?],
            )
            .doing("storing a fine-tune's parameters")?;
        Ok(())
    }

    pub fn together_job<T: DeserializeOwned>(&self, job_id: &str) -> Result<Option<T>> {
        self.conn
            .query_row("SELECT object FROM together_jobs WHERE job_id = ?1", [job_id], |r| from_json(r, 0))
            .optional()
            .doing("reading a fine-tune's parameters")
    }

    /// Every fine-tune's parameters, by job id.
    pub fn together_jobs<T: DeserializeOwned>(&self) -> Result<Vec<(String, T)>> {
        let mut stmt = (self.conn.prepare_cached("SELECT job_id, object FROM together_jobs"))
            .doing("listing fine-tunes' parameters")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, from_json(r, 1)?))).doing("listing fine-tunes' parameters")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().doing("listing fine-tunes' parameters")
    }

    pub fn insert_endpoint<T: Serialize>(&mut self, id: &str, name: &str, created_ms: i64, endpoint: &T) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO together_endpoints (id, name, created_ms, object) VALUES (?1, ?2, ?3, ?4)",
                params![id, name, created_ms, to_json(endpoint).doing("encoding an endpoint")?],
            )
            .doing("storing an endpoint")?;
        Ok(())
    }

    /// An endpoint by id or by name, with the time it was created (Unix milliseconds).
    pub fn endpoint<T: DeserializeOwned>(&self, id_or_name: &str) -> Result<Option<(T, i64)>> {
        self.conn
            .query_row(
                "SELECT object, created_ms FROM together_endpoints WHERE id = ?1 OR name = ?1",
                [id_or_name],
                |r| Ok((from_json(r, 0)?, r.get(1)?)),
            )
            .optional()
            .doing("reading an endpoint")
    }

    /// Every endpoint, oldest first, with the time it was created.
    pub fn endpoints<T: DeserializeOwned>(&self) -> Result<Vec<(T, i64)>> {
        let mut stmt = (self.conn.prepare_cached("SELECT object, created_ms FROM together_endpoints ORDER BY seq"))
            .doing("listing endpoints")?;
        let rows = stmt.query_map([], |r| Ok((from_json(r, 0)?, r.get(1)?))).doing("listing endpoints")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().doing("listing endpoints")
    }

    /// Deletes an endpoint; returns whether it existed.
    pub fn delete_endpoint(&mut self, id: &str) -> Result<bool> {
        Ok(self.conn.execute("DELETE FROM together_endpoints WHERE id = ?1", [id]).doing("deleting an endpoint")? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::openai::FileObject;

    fn upload(id: &str, checksum: &str) -> TogetherUpload {
        TogetherUpload {
            file_id: id.into(),
            token: format!("tok-{id}"),
            filename: "t.jsonl".into(),
            purpose: "fine-tune".into(),
            file_type: "jsonl".into(),
            checksum: Some(checksum.into()),
            created_at: 1,
            line_count: None,
        }
    }

    #[test]
    fn a_checksum_finds_only_complete_uploads() {
        let mut s = ServeStore::open_in_memory().unwrap();
        s.insert_together_upload(&upload("file-a", "c1")).unwrap();
        assert_eq!(s.together_file_with_checksum("c1").unwrap(), None, "announced, not uploaded");
        let file = FileObject {
            id: "file-a".into(),
            object: "file".into(),
            bytes: 1,
            created_at: 1,
            filename: "t.jsonl".into(),
            purpose: "fine-tune".into(),
            status: None,
            expires_at: None,
        };
        s.insert_file(&file, b"x").unwrap();
        assert_eq!(s.together_file_with_checksum("c1").unwrap().as_deref(), Some("file-a"));
        assert_eq!(s.together_upload_by_token("tok-file-a").unwrap().unwrap().file_id, "file-a");
        s.set_together_line_count("file-a", 7).unwrap();
        assert_eq!(s.together_upload("file-a").unwrap().unwrap().line_count, Some(7));
        s.delete_file("file-a").unwrap();
        assert_eq!(s.together_file_with_checksum("c1").unwrap(), None, "deleted");
    }

    #[test]
    fn endpoints_are_found_by_id_or_name() {
        let mut s = ServeStore::open_in_memory().unwrap();
        s.insert_endpoint("endpoint-1", "me/m-1", 5, &serde_json::json!({"id": "endpoint-1"})).unwrap();
        let (v, at): (serde_json::Value, i64) = s.endpoint("me/m-1").unwrap().unwrap();
        assert_eq!((v["id"].as_str(), at), (Some("endpoint-1"), 5));
        assert!(s.delete_endpoint("endpoint-1").unwrap() && !s.delete_endpoint("endpoint-1").unwrap());
        assert!(s.endpoints::<serde_json::Value>().unwrap().is_empty());
    }
}
