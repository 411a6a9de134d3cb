//! `/v1/files`: uploads (multipart `file` + `purpose`), listing, retrieval, raw content and
//! deletion. Files and their content live in the serve store.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;

use super::errors::{ApiError, INVALID};
use super::{App, Params, new_id, unix_now};
use crate::provider::openai::wire::{Deleted, FileObject, List};

/// The purposes an upload may have; only `fine-tune` files can train jobs.
const PURPOSES: [&str; 6] = ["assistants", "batch", "fine-tune", "vision", "user_data", "evals"];

/// The purpose of the CSV of a job's step metrics.
pub const RESULTS_PURPOSE: &str = "fine-tune-results";

fn multipart_error(e: &MultipartError) -> ApiError {
    ApiError::new(e.status(), INVALID, format!("Could not read the multipart body: {}", e.body_text()))
}

/// `POST /files`.
pub async fn upload(
    State(app): State<Arc<App>>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<FileObject>, ApiError> {
    let mut multipart = multipart.map_err(|e| {
        ApiError::invalid(format!("Send multipart/form-data with a `file` and a `purpose` field ({e})."), None)
    })?;
    let (mut file, mut purpose) = (None, None);
    while let Some(field) = multipart.next_field().await.map_err(|e| multipart_error(&e))? {
        match field.name() {
            Some("file") => {
                let filename = field.file_name().unwrap_or("upload.jsonl").to_string();
                file = Some((filename, field.bytes().await.map_err(|e| multipart_error(&e))?));
            }
            Some("purpose") => purpose = Some(field.text().await.map_err(|e| multipart_error(&e))?),
            // Other fields (e.g. `expires_after[...]`) are accepted and ignored.
            _ => {}
        }
    }
    let purpose =
        purpose.ok_or_else(|| ApiError::invalid("Missing required parameter: 'purpose'.", Some("purpose")))?;
    if !PURPOSES.contains(&purpose.as_str()) {
        let message = format!("Invalid value for 'purpose': '{purpose}'. Expected one of {}.", PURPOSES.join(", "));
        return Err(ApiError::invalid(message, Some("purpose")));
    }
    let (filename, content) =
        file.ok_or_else(|| ApiError::invalid("Missing required parameter: 'file'.", Some("file")))?;
    Ok(Json(store_file(&app, &filename, &purpose, &content)?))
}

/// Stores a new upload and returns its object.
fn store_file(app: &App, filename: &str, purpose: &str, content: &[u8]) -> Result<FileObject, ApiError> {
    let object = file_object(filename, purpose, content.len());
    app.store.lock().insert_file(&object, content)?;
    Ok(object)
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

/// `GET /files/{id}/content`: the bytes as uploaded (or the result CSV).
pub async fn content(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let content = app.store.lock().file_content(&id)?.ok_or_else(|| ApiError::no_such("File", &id))?;
    Ok((StatusCode::OK, [(CONTENT_TYPE, "application/octet-stream")], Bytes::from(content)))
}

/// `DELETE /files/{id}`.
pub async fn delete(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<Deleted>, ApiError> {
    if !app.store.lock().delete_file(&id)? {
        return Err(ApiError::no_such("File", &id));
    }
    Ok(Json(Deleted { id, object: "file".into(), deleted: true }))
}
