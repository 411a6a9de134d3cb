//! `ftsweep serve`: the OpenAI fine-tuning protocol (files, jobs, events, checkpoints, chat
//! completions, models) over HTTP, backed by the local provider and its own SQLite file, so
//! OpenAI clients and SDKs can train and query local models. Jobs validate on the whole
//! validation set four times per epoch (metrics events with `full_valid_loss`), and can continue
//! a model the server fine-tuned. vLLM's runtime LoRA endpoints load the adapters `ftsweep train`
//! writes (`adapters`). Uploads go to the store in chunks as they arrive; slow clients
//! and a stopping server have deadlines (`limits`).

mod adapters;
mod azure;
mod chat;
mod errors;
mod files;
mod guard;
mod jobs;
mod limits;
mod objects;
mod together;
mod worker;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::routing::{get, post};
use rand::Rng;

use crate::provider::local::{LocalProvider, ModelRepo, VALIDATIONS_PER_EPOCH};
use crate::store::serve::{ServeStore, SharedServeStore};
pub use errors::ServeError;
use errors::{ApiError, INVALID};
pub use limits::SHUTDOWN_GRACE;

/// The largest upload, as on OpenAI.
const MAX_UPLOAD_BYTES: usize = 512 * 1024 * 1024;

/// The organization that owns fine-tuned models and jobs.
const ORGANIZATION: &str = "org-local";

/// Which provider's protocol the server speaks, over the same jobs and models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Protocol {
    /// OpenAI's fine-tuning API and chat completions under `/v1`.
    #[default]
    Openai,
    /// Azure OpenAI: the v1 data plane under `/openai/v1`, and Azure Resource
    /// Manager's deployments under `/subscriptions/…` (a fine-tuned model
    /// answers only through a deployment).
    Azure,
    /// Together AI: `/v1/files` (the SDKs' presigned upload flow),
    /// `/v1/fine-tunes`, dedicated `/v1/endpoints`, chat completions.
    Together,
}

impl Protocol {
    /// The URL clients are given: the base URL of the API (for Azure, the
    /// resource endpoint, whose data plane is `{url}/openai/v1` and whose
    /// management URL is the same address).
    pub fn url(self, addr: SocketAddr) -> String {
        match self {
            Protocol::Openai | Protocol::Together => format!("http://{addr}/v1"),
            Protocol::Azure => format!("http://{addr}"),
        }
    }
}

/// How the server runs.
pub struct Settings {
    /// The protocol it speaks.
    pub protocol: Protocol,
    /// The key clients must present.
    pub key: String,
    /// How many jobs train at the same time.
    pub max_running: usize,
    /// Requests per minute, if limited.
    pub rpm: Option<u32>,
    /// A pause after each training step, so that jobs last like hosted ones.
    pub example_delay: Duration,
    /// How many LoRA adapters may be loaded at a time (`adapters`).
    pub max_loras: usize,
    /// How long a Together dedicated endpoint takes to start (`--protocol together`).
    pub endpoint_delay: Duration,
}

/// What the handlers share.
pub struct App {
    store: SharedServeStore,
    provider: Arc<LocalProvider>,
    /// One permit per job allowed to train at the same time.
    slots: Arc<tokio::sync::Semaphore>,
    /// The jobs a worker is working on, by id.
    controls: Mutex<HashMap<String, Arc<worker::Control>>>,
    key: String,
    limiter: Option<guard::RateLimiter>,
    /// The LoRA adapters loaded (in memory only).
    adapters: Mutex<adapters::Adapters>,
    /// The protocol it speaks.
    protocol: Protocol,
    /// How long a Together dedicated endpoint takes to start.
    endpoint_delay: Duration,
}

impl App {
    fn adapters(&self) -> MutexGuard<'_, adapters::Adapters> {
        self.adapters.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn controls(&self) -> MutexGuard<'_, HashMap<String, Arc<worker::Control>>> {
        self.controls.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The local provider keeps its weights in the serve store.
impl ModelRepo for SharedServeStore {
    fn save_model(&self, model: &str, job_id: &str, epoch: u32, weights: &[u8], keep: u32) -> Result<(), String> {
        self.lock().save_model(model, job_id, epoch, weights, keep).map_err(|e| e.to_string())
    }

    fn load_model(&self, model: &str) -> Result<Option<Vec<u8>>, String> {
        self.lock().load_model(model).map_err(|e| e.to_string())
    }
}

/// A bound server, ready to run.
pub struct Server {
    listener: tokio::net::TcpListener,
    app: Arc<App>,
}

impl Server {
    /// Listens on `host:port` (port 0: any free port) over the state in `store`.
    pub async fn bind(host: &str, port: u16, store: ServeStore, settings: Settings) -> Result<Server, ServeError> {
        let listener = tokio::net::TcpListener::bind((host, port))
            .await
            .map_err(|source| ServeError::Bind { addr: format!("{host}:{port}"), source })?;
        let mut store = store;
        let stray = store.delete_stray_chunks()?;
        if stray > 0 {
            tracing::info!("deleted {stray} chunk(s) of uploads the last run left unfinished");
        }
        let store = SharedServeStore::new(store);
        let app = App {
            provider: Arc::new(
                LocalProvider::new(Arc::new(store.clone()))
                    .with_validations_per_epoch(VALIDATIONS_PER_EPOCH)
                    .with_example_delay(settings.example_delay),
            ),
            store,
            slots: Arc::new(tokio::sync::Semaphore::new(settings.max_running.max(1))),
            controls: Mutex::default(),
            key: settings.key,
            limiter: settings.rpm.map(guard::RateLimiter::new),
            adapters: Mutex::new(adapters::Adapters::new(settings.max_loras)),
            protocol: settings.protocol,
            endpoint_delay: settings.endpoint_delay,
        };
        Ok(Server { listener, app: Arc::new(app) })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, ServeError> {
        Ok(self.listener.local_addr()?)
    }

    /// Re-queues the jobs an earlier run left unfinished, then serves until `shutdown` completes
    /// and the open requests are answered, or `SHUTDOWN_GRACE` has passed. Returns how many
    /// connections were still busy then (they are dropped with the runtime). Training threads are
    /// not waited for: their jobs are re-queued on the next start.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<usize, ServeError> {
        worker::resume(&self.app)?;
        let router = router(self.app);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // Every connection holds a sender: `recv` answers once they are all gone.
        let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<()>(1);
        let open = open_tx.downgrade();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!("accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            tokio::spawn(connection(stream, router.clone(), stop_rx.clone(), open_tx.clone()));
        }
        drop(self.listener);
        let _ = stop_tx.send(true);
        drop(open_tx);
        match tokio::time::timeout(SHUTDOWN_GRACE, open_rx.recv()).await {
            Ok(_) => Ok(0),
            Err(_) => Ok(open.strong_count()),
        }
    }
}

/// Serves one connection over HTTP/1.1, with the header deadline, until it closes, or until
/// `stop` and its request in progress is answered.
async fn connection(
    stream: tokio::net::TcpStream,
    router: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
    _open: tokio::sync::mpsc::Sender<()>,
) {
    let _ = stream.set_nodelay(true);
    let service = hyper_util::service::TowerToHyperService::new(router);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(limits::HEADER_TIMEOUT);
    let mut conn = std::pin::pin!(builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = async { drop(stop.wait_for(|stopping| *stopping).await) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection: {e}");
    }
}

/// The routes of the server's protocol, behind the guard.
fn router(app: Arc<App>) -> Router {
    let routes = match app.protocol {
        Protocol::Openai => Router::new().nest("/v1", openai_routes()),
        Protocol::Azure => azure::routes(),
        Protocol::Together => together::routes(),
    };
    routes
        .fallback(unknown_route)
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard::guard))
        .with_state(app)
}

/// OpenAI's routes, relative to `/v1`.
fn openai_routes() -> Router<Arc<App>> {
    Router::new()
        .route("/files", post(files::upload).get(files::list).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)))
        .route("/files/{id}", get(files::retrieve).delete(files::delete))
        .route("/files/{id}/content", get(files::content))
        .route("/fine_tuning/jobs", post(jobs::create).get(jobs::list))
        .route("/fine_tuning/jobs/{id}", get(jobs::retrieve))
        .route("/fine_tuning/jobs/{id}/cancel", post(jobs::cancel))
        .route("/fine_tuning/jobs/{id}/events", get(jobs::events))
        .route("/fine_tuning/jobs/{id}/checkpoints", get(jobs::checkpoints))
        .route("/chat/completions", post(chat::complete))
        .route("/load_lora_adapter", post(adapters::load).layer(DefaultBodyLimit::max(adapters::MAX_BODY_BYTES)))
        .route("/unload_lora_adapter", post(adapters::unload).layer(DefaultBodyLimit::max(adapters::MAX_BODY_BYTES)))
        .route("/models", get(chat::models))
        // Model ids hold `/` (`local/ngram`), so the id is the rest of the path.
        .route("/models/{*id}", get(chat::model))
}

async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    let message = format!("Invalid URL ({method} {})", uri.path());
    ApiError::new(axum::http::StatusCode::NOT_FOUND, INVALID, message)
}

/// `n` random bytes in hex.
fn random_hex(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n).map(|_| format!("{:02x}", rng.random::<u8>())).collect()
}

/// A new object id: the prefix and 12 random bytes in hex.
fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", random_hex(12))
}

/// The time in Unix seconds.
fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The query string's parameters, in order.
struct Params(Vec<(String, String)>);

impl Params {
    fn from_uri(uri: &Uri) -> Result<Params, ApiError> {
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map(|q| Params(q.0))
            .map_err(|e| ApiError::invalid(format!("Invalid query string: {e}"), None))
    }

    /// A parameter's value; an empty value counts as absent.
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, v)| k == key && !v.is_empty()).map(|(_, v)| v.as_str())
    }

    /// `limit`: a whole number from 1, `default` when absent; larger than `max` is `max`.
    fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(default),
            Some(text) => match text.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(n.min(max)),
                _ => Err(ApiError::invalid(
                    format!("Invalid value for 'limit': expected a whole number of at least 1, got '{text}'."),
                    Some("limit"),
                )),
            },
        }
    }
}

/// One page of a list held in memory: up to `limit` items after the one with id `after` (none if
/// `after` is unknown), and whether more follow.
fn page<T>(items: Vec<T>, id: impl Fn(&T) -> &str, after: Option<&str>, limit: usize) -> (Vec<T>, bool) {
    let start = match after {
        None => 0,
        Some(after) => items.iter().position(|x| id(x) == after).map_or(items.len(), |i| i + 1),
    };
    let mut rest: Vec<T> = items.into_iter().skip(start).collect();
    let has_more = rest.len() > limit;
    rest.truncate(limit);
    (rest, has_more)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_start_after_the_given_id() {
        let items = vec!["a", "b", "c"];
        assert_eq!(page(items.clone(), |x| x, None, 2), (vec!["a", "b"], true));
        assert_eq!(page(items.clone(), |x| x, Some("a"), 2), (vec!["b", "c"], false));
        assert_eq!(page(items, |x| x, Some("zzz"), 2), (vec![], false));
    }

    #[test]
    fn limits_are_checked() {
        let q = |s: &str| Params::from_uri(&format!("/x?{s}").parse().unwrap()).unwrap();
        assert_eq!(q("").limit(20, 100).unwrap(), 20);
        assert_eq!(q("limit=500").limit(20, 100).unwrap(), 100);
        assert_eq!(q("limit=0").limit(20, 100).unwrap_err().param.as_deref(), Some("limit"));
        assert_eq!(q("metadata%5Bk%5D=v").get("metadata[k]"), Some("v"));
    }
}
