//! `/v1/files`: uploads (multipart `file` + `purpose`), listing, retrieval, raw content and
//! deletion. Files and their content live in the serve store.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;

use super::errors::{ApiError, INVALID};
use super::limits::ChannelBody;
use super::{App, Params, new_id, unix_now};
use crate::store::StoreError;
use crate::store::serve::SharedServeStore;
use crate::wire::openai::{Deleted, FileObject, List};

/// The purposes an upload may have; only `fine-tune` files can train jobs.
const PURPOSES: [&str; 6] = ["assistants", "batch", "fine-tune", "vision", "user_data", "evals"];

/// The purpose of the CSV of a job's step metrics.
pub const RESULTS_PURPOSE: &str = "fine-tune-results";

fn multipart_error(e: &MultipartError) -> ApiError {
    ApiError::new(e.status(), INVALID, format!("Could not read the multipart body: {}", e.body_text()))
}

/// Uploads are written to the store in chunks of this many bytes, as they arrive.
const CHUNK_BYTES: usize = 1024 * 1024;

/// `POST /files`: the `file` field goes to the store a chunk at a time, so that an upload is never
/// whole in memory and other requests use the store between its chunks; the file exists once
/// all of it is stored.
pub async fn upload(
    State(app): State<Arc<App>>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<FileObject>, ApiError> {
    let mut multipart = multipart.map_err(|e| {
        ApiError::invalid(format!("Send multipart/form-data with a `file` and a `purpose` field ({e})."), None)
    })?;
    let (mut file, mut purpose) = (None, None);
    while let Some(mut field) = multipart.next_field().await.map_err(|e| multipart_error(&e))? {
        match field.name() {
            Some("file") => {
                let filename = field.file_name().unwrap_or("upload.jsonl").to_string();
                let mut upload = PendingUpload::new(&app);
                while let Some(bytes) = field.chunk().await.map_err(|e| multipart_error(&e))? {
                    upload.push(&bytes).await?;
                }
                file = Some((filename, upload));
            }
            Some("purpose") => {
                let text = field.text().await.map_err(|e| multipart_error(&e))?;
                // Refused before the file when it comes first.
                check_purpose(&text)?;
                purpose = Some(text);
            }
            // Other fields (e.g. `expires_after[...]`) are accepted and ignored.
            _ => {}
        }
    }
    let purpose =
        purpose.ok_or_else(|| ApiError::invalid("Missing required parameter: 'purpose'.", Some("purpose")))?;
    let (filename, upload) =
        file.ok_or_else(|| ApiError::invalid("Missing required parameter: 'file'.", Some("file")))?;
    Ok(Json(upload.finish(&filename, &purpose).await?))
}

fn check_purpose(purpose: &str) -> Result<(), ApiError> {
    if PURPOSES.contains(&purpose) {
        return Ok(());
    }
    let message = format!("Invalid value for 'purpose': '{purpose}'. Expected one of {}.", PURPOSES.join(", "));
    Err(ApiError::invalid(message, Some("purpose")))
}

/// An upload on its way to the store: at most a chunk is held in memory, and chunks are written
/// by blocking threads. Dropped before `finish` (an error, a client gone, a deadline), it deletes
/// the chunks it wrote; the server's next start deletes any it could not.
pub(super) struct PendingUpload {
    store: SharedServeStore,
    id: String,
    buffer: Vec<u8>,
    chunks: u64,
    bytes: u64,
    /// The write of the last chunk, while it runs.
    writing: Option<tokio::task::JoinHandle<Result<(), StoreError>>>,
    finished: bool,
}

impl PendingUpload {
    fn new(app: &App) -> PendingUpload {
        PendingUpload::with_id(app, new_id("file-"))
    }

    /// An upload that becomes the file `id` (Together announces the id before the bytes come).
    pub(super) fn with_id(app: &App, id: String) -> PendingUpload {
        PendingUpload {
            store: app.store.clone(),
            id,
            buffer: Vec::with_capacity(CHUNK_BYTES),
            chunks: 0,
            bytes: 0,
            writing: None,
            finished: false,
        }
    }

    pub(super) async fn push(&mut self, mut data: &[u8]) -> Result<(), ApiError> {
        self.bytes += data.len() as u64;
        while !data.is_empty() {
            let (now, rest) = data.split_at(data.len().min(CHUNK_BYTES - self.buffer.len()));
            self.buffer.extend_from_slice(now);
            data = rest;
            if self.buffer.len() == CHUNK_BYTES {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// Writes what is buffered as the next chunk.
    async fn flush(&mut self) -> Result<(), ApiError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK_BYTES));
        let (store, id, n) = (self.store.clone(), self.id.clone(), self.chunks);
        let write = tokio::task::spawn_blocking(move || store.lock().insert_chunk(&id, n, &data));
        let result = self.writing.insert(write).await;
        self.writing = None;
        result.map_err(|e| ApiError::internal(&e))??;
        self.chunks += 1;
        Ok(())
    }

    /// Writes the last chunk and records the file, in one short statement.
    pub(super) async fn finish(mut self, filename: &str, purpose: &str) -> Result<FileObject, ApiError> {
        self.flush().await?;
        let object = FileObject { id: self.id.clone(), ..file_object(filename, purpose, self.bytes as usize) };
        self.store.lock().insert_file(&object, &[])?;
        self.finished = true;
        Ok(object)
    }
}

impl Drop for PendingUpload {
    fn drop(&mut self) {
        if self.finished || (self.chunks == 0 && self.writing.is_none()) {
            return;
        }
        let (store, id, writing) = (self.store.clone(), std::mem::take(&mut self.id), self.writing.take());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Some(write) = writing {
                    let _ = write.await;
                }
                let deleted = tokio::task::spawn_blocking(move || store.delete_chunks(&id)).await;
                if let Ok(Err(e)) = deleted {
                    tracing::warn!("deleting an unfinished upload: {e}");
                }
            });
        }
    }
}

/// The object of a new file (an upload or a job's results) with a fresh random id: two uploads
/// of the same content are two files.
pub fn file_object(filename: &str, purpose: &str, bytes: usize) -> FileObject {
    FileObject {
        id: new_id("file-"),
        object: "file".into(),
        bytes: bytes as u64,
        created_at: unix_now(),
        filename: filename.to_string(),
        purpose: purpose.to_string(),
        status: Some("processed".into()),
        expires_at: None,
    }
}

/// `GET /files?purpose=&limit=&order=&after=`.
pub async fn list(State(app): State<Arc<App>>, uri: Uri) -> Result<Json<List<FileObject>>, ApiError> {
    let q = Params::from_uri(&uri)?;
    let limit = q.limit(10_000, 10_000)?;
    let ascending = match q.get("order").unwrap_or("desc") {
        "asc" => true,
        "desc" => false,
        other => {
            let message = format!("Invalid value for 'order': '{other}'. Expected 'asc' or 'desc'.");
            return Err(ApiError::invalid(message, Some("order")));
        }
    };
    let mut data = app.store.lock().files(q.get("purpose"), ascending, q.get("after"), limit + 1)?;
    let has_more = data.len() > limit;
    data.truncate(limit);
    let (first_id, last_id) = (data.first().map(|f| f.id.clone()), data.last().map(|f| f.id.clone()));
    Ok(Json(List { object: "list".into(), data, has_more, first_id, last_id }))
}

/// `GET /files/{id}`.
pub async fn retrieve(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<FileObject>, ApiError> {
    let file = app.store.lock().file(&id)?;
    file.map(Json).ok_or_else(|| ApiError::no_such("File", &id))
}

/// `GET /files/{id}/content`: the bytes as uploaded (or the result CSV), read from the store a
/// chunk at a time as the client takes them.
pub async fn content(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let file = app.store.lock().file(&id)?.ok_or_else(|| ApiError::no_such("File", &id))?;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let store = app.store.clone();
    tokio::task::spawn_blocking(move || {
        let sent = store.each_piece(&id, |piece| tx.blocking_send(Ok(Bytes::from(piece))).is_ok());
        // A file deleted while it is sent ends the response short, as an error.
        if !matches!(sent, Ok(true)) {
            let _ = tx.blocking_send(Err(std::io::Error::other(format!("file {id} could not be read whole"))));
        }
    });
    let headers = [(CONTENT_TYPE, "application/octet-stream".to_string()), (CONTENT_LENGTH, file.bytes.to_string())];
    Ok((StatusCode::OK, headers, Body::new(ChannelBody(rx))))
}

/// `DELETE /files/{id}`: the file at once, then its chunks a few at a time.
pub async fn delete(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<Deleted>, ApiError> {
    if !app.store.lock().delete_file(&id)? {
        return Err(ApiError::no_such("File", &id));
    }
    let (store, chunks_of) = (app.store.clone(), id.clone());
    tokio::task::spawn_blocking(move || store.delete_chunks(&chunks_of))
        .await
        .map_err(|e| ApiError::internal(&e))??;
    Ok(Json(Deleted { id, object: "file".into(), deleted: true }))
}
