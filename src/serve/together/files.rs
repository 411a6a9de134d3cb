//! Together's files: the presigned upload flow the SDKs use (`POST /v1/files` with the file's
//! name, type, purpose and checksum as JSON, form or multipart fields → 302 to a PUT URL and
//! `X-Together-File-Id`; the PUT streams into the store's chunks; `POST …/preprocess` counts the
//! lines and marks the file processed), listing, retrieval, content and deletion. A checksum equal
//! to an earlier complete upload's answers 409 with that file's id at the top level.

use std::path::Path as FsPath;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::header::{CONTENT_TYPE, HOST, LOCATION};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::super::MAX_UPLOAD_BYTES;
use super::super::errors::ApiError;
use super::super::files::PendingUpload;
use super::{UPLOADS, error_with, invalid, new_uuid_id, not_found};
use crate::data::parse_chat_jsonl;
use crate::serve::{App, random_hex, unix_now};
use crate::store::serve::TogetherUpload;
use crate::wire::openai::FileObject;

/// Together's file purposes.
const PURPOSES: [&str; 7] =
    ["fine-tune", "eval", "eval-sample", "eval-output", "eval-summary", "batch-generated", "batch-api"];

/// Together's file types.
const FILE_TYPES: [&str; 3] = ["jsonl", "csv", "parquet"];

/// The fields of an upload's announcement, whatever the body's encoding.
#[derive(Default)]
struct Announcement {
    purpose: Option<String>,
    file_name: Option<String>,
    file_type: Option<String>,
    checksum: Option<String>,
}

impl Announcement {
    fn set(&mut self, key: &str, value: String) {
        let slot = match key {
            "purpose" => &mut self.purpose,
            "file_name" => &mut self.file_name,
            "file_type" => &mut self.file_type,
            "checksum" => &mut self.checksum,
            _ => return,
        };
        if slot.is_none() && !value.is_empty() {
            *slot = Some(value);
        }
    }
}

/// Reads the announcement from a JSON, form-encoded or multipart body, and the query string (the
/// TypeScript SDK sends the fields there too).
async fn read_announcement(request: Request) -> Result<Announcement, ApiError> {
    let mut a = Announcement::default();
    let content_type =
        (request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok())).unwrap_or("").to_ascii_lowercase();
    if let Some(query) = request.uri().query() {
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            a.set(&k, v.into_owned());
        }
    }
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(request, &())
            .await
            .map_err(|e| ApiError::invalid(format!("Could not read the multipart body: {e}"), None))?;
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| ApiError::invalid(format!("Could not read the multipart body: {e}"), None))?
        {
            let name = field.name().unwrap_or("").to_string();
            if name == "file" {
                return Err(invalid(
                    "Send the file's bytes with a PUT to the URL this request answers (302 Location), not in this body",
                    "file",
                ));
            }
            let text = field
                .text()
                .await
                .map_err(|e| ApiError::invalid(format!("Could not read the field '{name}': {e}"), None))?;
            a.set(&name, text);
        }
        return Ok(a);
    }
    let body = axum::body::to_bytes(request.into_body(), 64 * 1024)
        .await
        .map_err(|e| ApiError::invalid(format!("Could not read the request body: {e}"), None))?;
    if content_type.starts_with("application/json") || body.first() == Some(&b'{') {
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid(format!("We could not parse the JSON body of your request ({e})"), None))?;
        let Value::Object(object) = value else {
            return Err(ApiError::invalid("The request body must be a JSON object", None));
        };
        for (k, v) in object {
            match v {
                Value::String(s) => a.set(&k, s),
                Value::Null => {}
                other => a.set(&k, other.to_string()),
            }
        }
    } else {
        for (k, v) in url::form_urlencoded::parse(&body) {
            a.set(&k, v.into_owned());
        }
    }
    Ok(a)
}

/// `POST /v1/files`: announces an upload. 302 with `Location` (the PUT URL) and
/// `X-Together-File-Id`; 409 with `file_id` when an earlier complete upload has the checksum.
pub async fn announce(State(app): State<Arc<App>>, request: Request) -> Result<Response, ApiError> {
    let host = (request.headers().get(HOST).and_then(|v| v.to_str().ok()).map(str::to_string))
        .ok_or_else(|| ApiError::invalid("The request has no Host header", None))?;
    let a = read_announcement(request).await?;
    let purpose = a.purpose.ok_or_else(|| invalid("Missing required parameter: 'purpose'", "purpose"))?;
    if !PURPOSES.contains(&purpose.as_str()) {
        let message = format!("Invalid value for 'purpose': '{purpose}'. Expected one of {}", PURPOSES.join(", "));
        return Err(invalid(message, "purpose"));
    }
    let file_name = a.file_name.ok_or_else(|| invalid("Missing required parameter: 'file_name'", "file_name"))?;
    let file_type = a.file_type.unwrap_or_else(|| "jsonl".into()).to_ascii_lowercase();
    if !FILE_TYPES.contains(&file_type.as_str()) {
        let message =
            format!("Invalid value for 'file_type': '{file_type}'. Expected one of {}", FILE_TYPES.join(", "));
        return Err(invalid(message, "file_type"));
    }
    let checksum = a.checksum.map(|c| c.to_ascii_lowercase());
    if let Some(c) = &checksum
        && (c.len() != 64 || !c.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(invalid(format!("Invalid value for 'checksum': '{c}'. Expected a SHA-256 in hex"), "checksum"));
    }
    let mut store = app.store.lock();
    if let Some(c) = &checksum
        && let Some(file_id) = store.together_file_with_checksum(c)?
    {
        let message = format!("A file with the same checksum already exists: {file_id}");
        return Ok(error_with(StatusCode::CONFLICT, &message, "file_already_exists", json!({"file_id": file_id})));
    }
    let upload = TogetherUpload {
        file_id: new_uuid_id("file-"),
        token: random_hex(32),
        filename: file_name,
        purpose,
        file_type,
        checksum,
        created_at: unix_now(),
        line_count: None,
    };
    store.insert_together_upload(&upload)?;
    let location = format!("http://{host}{UPLOADS}{}", upload.token);
    Ok((StatusCode::FOUND, [(LOCATION, location), ("x-together-file-id".parse().unwrap(), upload.file_id)])
        .into_response())
}

/// `POST /v1/files/upload` (the spec's one-request multipart upload): not served; the SDKs use
/// the presigned flow.
pub async fn upload_unsupported() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        super::INVALID,
        "This server takes uploads through the presigned flow: POST /v1/files with purpose, file_name, \
         file_type and checksum, then PUT the bytes to the Location it answers",
    )
}

/// `PUT /v1/uploads/{token}`: the upload's bytes, streamed into the store a chunk at a time; the
/// file exists once all of them are stored. No credential: the token is the secret.
pub async fn put(State(app): State<Arc<App>>, Path(token): Path<String>, body: Body) -> Result<Response, ApiError> {
    let mut body = body;
    // A refusal reads the body first: answering while the client is still sending makes the
    // server close the connection, and a client that pooled it fails its next request.
    let Some(upload) = app.store.lock().together_upload_by_token(&token)? else {
        drain(&mut body).await;
        return Err(not_found("Upload", "URL"));
    };
    if app.store.lock().file(&upload.file_id)?.is_some() {
        drain(&mut body).await;
        let message = format!("The file {} was uploaded already", upload.file_id);
        return Err(ApiError::new(StatusCode::CONFLICT, super::INVALID, message));
    }
    let mut pending = PendingUpload::with_id(&app, upload.file_id.clone());
    let mut bytes = 0usize;
    while let Some(chunk) = next_data(&mut body).await {
        let chunk = chunk.map_err(|e| ApiError::invalid(format!("Could not read the upload: {e}"), None))?;
        bytes += chunk.len();
        if bytes > MAX_UPLOAD_BYTES {
            let message = format!("The upload is larger than this server's limit of {MAX_UPLOAD_BYTES} bytes");
            return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, super::INVALID, message));
        }
        pending.push(&chunk).await?;
    }
    let file = pending.finish(&upload.filename, &upload.purpose).await?;
    tracing::debug!("upload {} complete: {} bytes", file.id, file.bytes);
    Ok(StatusCode::OK.into_response())
}

/// Reads and drops a refused upload's body, up to the size limit (past it the connection may close).
async fn drain(body: &mut Body) {
    let mut bytes = 0usize;
    while let Some(Ok(chunk)) = next_data(body).await {
        bytes += chunk.len();
        if bytes > MAX_UPLOAD_BYTES {
            return;
        }
    }
}

/// The next data frame of a body (trailers are skipped), without a stream crate.
async fn next_data(body: &mut Body) -> Option<Result<axum::body::Bytes, axum::Error>> {
    use hyper::body::Body as _;
    loop {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await?;
        match frame {
            Err(e) => return Some(Err(e)),
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
        }
    }
}

/// The file object Together answers: `FileType`, `Processed` and `LineCount` are capitalised.
pub fn file_json(upload: &TogetherUpload, file: Option<&FileObject>) -> Value {
    let processed = file.is_some() && upload.line_count.is_some();
    let mut v = json!({
        "id": upload.file_id,
        "object": "file",
        "created_at": upload.created_at,
        "filename": upload.filename,
        "bytes": file.map_or(0, |f| f.bytes),
        "purpose": upload.purpose,
        "FileType": upload.file_type,
        "Processed": processed,
        "LineCount": upload.line_count.unwrap_or(0),
        "processing_status": if processed { "COMPLETED" } else { "PENDING" },
    });
    if processed {
        v["validation_report"] = json!({
            "valid": true,
            "dataset_format": "CONVERSATION",
            "nlines": upload.line_count,
            "file_id": upload.file_id,
        });
    }
    v
}

/// A file's announcement and its stored object (none until its bytes came).
pub fn find(app: &App, id: &str) -> Result<(TogetherUpload, Option<FileObject>), ApiError> {
    let store = app.store.lock();
    let upload = store.together_upload(id)?.ok_or_else(|| not_found("File", id))?;
    let file = store.file(id)?;
    Ok((upload, file))
}

/// Checks an uploaded file's content (Together's conversation format, as the trainer reads it)
/// and records its line count, once. The TypeScript SDK never calls `preprocess`: a fine-tune
/// processes its files itself.
pub async fn process(app: &App, id: &str) -> Result<(TogetherUpload, FileObject), ApiError> {
    let (upload, file) = find(app, id)?;
    let Some(file) = file else {
        let message = format!("The file {id} has not been uploaded yet: PUT its bytes to the upload URL first");
        return Err(invalid(message, "id").with_code("file_not_uploaded"));
    };
    if upload.line_count.is_some() {
        return Ok((upload, file));
    }
    let (store, fid) = (app.store.clone(), id.to_string());
    let content = (tokio::task::spawn_blocking(move || store.read_content(&fid)).await)
        .map_err(|e| ApiError::internal(&e))??
        .unwrap_or_default();
    let lines = match parse_chat_jsonl(FsPath::new(&upload.filename), &content) {
        Ok(conversations) => conversations.len() as u64,
        Err(e) => {
            let at = e.line.map_or(String::new(), |l| format!(" line {l}"));
            let message = format!("Invalid file format in {}{at}: {}", upload.filename, e.message);
            return Err(invalid(message, "file").with_code("invalid_format"));
        }
    };
    app.store.lock().set_together_line_count(id, lines)?;
    Ok((TogetherUpload { line_count: Some(lines), ..upload }, file))
}

/// `POST /v1/files/{id}/preprocess`: processes the file and answers it.
pub async fn preprocess(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (upload, file) = process(&app, &id).await?;
    Ok(Json(file_json(&upload, Some(&file))))
}

/// `GET /v1/files`: `{data:[…]}`, oldest first, no pagination.
pub async fn list(State(app): State<Arc<App>>, _uri: Uri) -> Result<Json<Value>, ApiError> {
    let store = app.store.lock();
    let mut data = Vec::new();
    for upload in store.together_uploads()? {
        let file = store.file(&upload.file_id)?;
        data.push(file_json(&upload, file.as_ref()));
    }
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `GET /v1/files/{id}`.
pub async fn retrieve(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (upload, file) = find(&app, &id)?;
    Ok(Json(file_json(&upload, file.as_ref())))
}

/// `GET /v1/files/{id}/content`: the bytes as uploaded.
pub async fn content(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (_, file) = find(&app, &id)?;
    if file.is_none() {
        return Err(invalid(format!("The file {id} has not been uploaded yet"), "id"));
    }
    super::super::files::content(State(app), Path(id)).await.map(IntoResponse::into_response)
}

/// `DELETE /v1/files/{id}` → `{id, deleted:true}`.
pub async fn delete(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let had_file = {
        let mut store = app.store.lock();
        if !store.delete_together_upload(&id)? {
            return Err(not_found("File", &id));
        }
        store.delete_file(&id)?
    };
    if had_file {
        let (store, chunks_of) = (app.store.clone(), id.clone());
        tokio::task::spawn_blocking(move || store.delete_chunks(&chunks_of))
            .await
            .map_err(|e| ApiError::internal(&e))??;
    }
    Ok(Json(json!({"id": id, "object": "file", "deleted": true})))
}
