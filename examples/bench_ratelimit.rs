//! Benchmark: the evaluation runner against a rate-limited server. Starts
//! `ftsweep serve` in-process with `--rpm N` (a sliding one-minute window that
//! answers 429 above the limit, with `x-ratelimit-*` headers), evaluates the
//! base model on distinct synthetic conversations through the OpenAI client
//! (which paces itself by those headers), and prints the requests per minute
//! achieved against the limit, and the 429s.
//!
//! `cargo run --release --example bench_ratelimit [-- RPM WINDOWS CONCURRENCY]`
//! (default 600 requests per minute, 2 windows, 8 in flight: about two minutes).
//!
//! The run sends `WINDOWS × RPM + 1` requests, so that it spans whole windows:
//! the achieved rate is the requests between the first and the last answer,
//! per minute of the time between them.

use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ftsweep::data::{ChatFile, Conversation, Message, Prompt};
use ftsweep::eval::Session;
use ftsweep::eval::runner::{self, Answerer, Target};
use ftsweep::provider::openai::client::{Client, ClientConfig, Secret};
use ftsweep::provider::openai::{OpenAiProvider, PollPolicy};
use ftsweep::provider::{Completion, Provider, ProviderError};
use ftsweep::run::EvalKind;
use ftsweep::serve::{Server, Settings};
use ftsweep::spec::{Auth, Decoding, Evaluation};
use ftsweep::store::serve::ServeStore;
use ftsweep::store::{SharedStore, Store};

/// The provider, with the time each answer arrived.
struct Timed {
    inner: Provider,
    answered: Mutex<Vec<Instant>>,
}

impl Answerer for Timed {
    async fn complete(&self, model: &str, prompt: &Prompt, decoding: &Decoding) -> Result<Completion, ProviderError> {
        let answer = self.inner.complete(model, prompt, decoding).await;
        self.answered.lock().unwrap_or_else(|p| p.into_inner()).push(Instant::now());
        answer
    }

    fn decoding(&self, decoding: &Decoding) -> String {
        Answerer::decoding(&self.inner, decoding)
    }
}

fn arg(i: usize, default: u32) -> u32 {
    std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn main() -> ExitCode {
    let (rpm, windows, concurrency) = (arg(1, 600), arg(2, 2), arg(3, 8));
    let requests = (windows * rpm + 1) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let key = "sk-bench-ratelimit";
    let result = runtime.block_on(async {
        let settings = Settings {
            protocol: ftsweep::serve::Protocol::Openai,
            key: key.into(),
            max_running: 1,
            rpm: Some(rpm),
            example_delay: std::time::Duration::ZERO,
            max_loras: 8,
            endpoint_delay: std::time::Duration::ZERO,
            deployment_delay: std::time::Duration::ZERO,
            file_delay: std::time::Duration::ZERO,
        };
        let state = ServeStore::open(&dir.path().join("serve.db")).expect("the serve database");
        let server = Server::bind("127.0.0.1", 0, state, settings).await.expect("binding the server");
        let url = format!("http://{}/v1", server.local_addr().expect("an address"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));

        let store = SharedStore::new(Store::open_in_memory().expect("a database"));
        let client =
            Client::new(ClientConfig::new(&url, Secret::new(key.into()), "BENCH_KEY", Auth::Bearer)).expect("a client");
        let provider = Provider::OpenAi(OpenAiProvider::new(client, store.clone(), PollPolicy::default()));
        let timed = Arc::new(Timed { inner: provider, answered: Mutex::default() });
        let conversations = (0..requests)
            .map(|i| Conversation {
                line: i + 1,
                messages: vec![Message::text("user", format!("question {i}")), Message::text("assistant", "answer")],
                ..Conversation::default()
            })
            .collect();
        let data = ChatFile { path: "synthetic.jsonl".into(), sha256: "synthetic".into(), bytes: 0, conversations };
        let evaluation = Evaluation { concurrency, baseline: false, ..Evaluation::default() };
        let session = Arc::new(Session::new(&evaluation, Path::new("bench.toml")));
        let target = Target {
            model: "local/ngram",
            data: &data,
            kind: EvalKind::Model,
            run_id: None,
            epoch: None,
            sweep_id: None,
        };
        eprintln!(
            "{requests} completions against `ftsweep serve --rpm {rpm}` ({windows} windows of one minute), \
             {concurrency} in flight..."
        );
        let started = Instant::now();
        let watcher = {
            let timed = timed.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                    let n = timed.answered.lock().unwrap_or_else(|p| p.into_inner()).len();
                    eprintln!("  {:>5.0} s: {n} answers", started.elapsed().as_secs_f64());
                }
            })
        };
        let outcome = runner::evaluate(&store, &timed, &session, &target).await;
        watcher.abort();
        let wall = started.elapsed().as_secs_f64();
        let _ = stop.send(());
        let _ = serving.await;
        let Provider::OpenAi(p) = &timed.inner else { unreachable!("an OpenAI provider") };
        let counts = p.client.counts.snapshot();
        let mut answered = timed.answered.lock().unwrap_or_else(|e| e.into_inner()).clone();
        answered.sort();
        (outcome.map(|o| o.examples.len()), wall, counts, answered)
    });
    let (outcome, wall, counts, answered) = result;
    let n = match outcome {
        Ok(n) => n,
        Err(e) => {
            eprintln!("the evaluation failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let span = match (answered.first(), answered.last()) {
        (Some(a), Some(b)) => b.duration_since(*a).as_secs_f64(),
        _ => 0.0,
    };
    let achieved = if span > 0.0 { (answered.len() - 1) as f64 / span * 60.0 } else { 0.0 };
    let sent = counts["completions"];
    let limited = counts["rate_limited"];
    println!("allowed:   {rpm} requests per minute");
    println!(
        "achieved:  {achieved:.1} requests per minute ({:.1} % of allowed), {} answers over {span:.1} s; wall {wall:.1} s",
        100.0 * achieved / f64::from(rpm),
        answered.len()
    );
    println!(
        "requests:  {sent} sent for {n} examples, {limited} answered 429 ({:.2} %), {} retries",
        100.0 * limited as f64 / sent.max(1) as f64,
        counts["retries"]
    );
    let ok = achieved >= 0.95 * f64::from(rpm) && (limited as f64) <= 0.01 * sent as f64;
    println!("goal (>= 95 % of allowed, <= 1 % 429s): {}", if ok { "met" } else { "NOT met" });
    ExitCode::SUCCESS
}
