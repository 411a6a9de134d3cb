//! The sweep's wall time and requests against a real `ftsweep serve` over 127.0.0.1: the longest
//! jobs launch first (in the order the server receives the creates, and as `plan` shows it),
//! and a job is polled quietly: its events are read at its end (pages below the newest with
//! `after`), not at every poll, and its checkpoints once. Structural facts only, no timings.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::protocol::{Faults, KEY, Server, openai_sweep, read_request, run_sweep, start_proxy};
use crate::util::Workspace;

/// What the recording proxy keeps of a request: its method, target and answer's body.
type Seen = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A proxy in front of `upstream` (a server's URL with `/v1`) that passes every request on and
/// keeps each one's method, target and answer, in the order they came.
async fn recording_proxy(upstream: &str) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let origin = upstream.trim_end_matches('/').trim_end_matches("/v1").to_string();
    let (kept, http) = (seen.clone(), reqwest::Client::new());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (kept, http, origin) = (kept.clone(), http.clone(), origin.clone());
            tokio::spawn(async move {
                let Ok((method, target, headers, body)) = read_request(&mut socket).await else { return };
                let mut req = http.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), origin + &target);
                for (k, v) in headers.iter().filter(|(k, _)| !matches!(k.as_str(), "host" | "content-length")) {
                    req = req.header(k, v);
                }
                let Ok(response) = req.body(body).send().await else { return };
                let status = response.status().as_u16();
                let kind = response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
                let bytes = response.bytes().await.unwrap_or_default();
                kept.lock().unwrap().push((method.clone(), target.clone(), bytes.to_vec()));
                let mut head =
                    format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n", bytes.len());
                if let Some(kind) = kind {
                    head.push_str(&format!("content-type: {kind}\r\n"));
                }
                head.push_str("\r\n");
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&bytes).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (format!("http://127.0.0.1:{port}/v1"), seen)
}

#[test]
fn the_longest_jobs_are_created_first_and_plan_shows_that_order() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ws = Workspace::new();
    let server = Server::start(&ws, "serve.db", KEY);
    let creates = Arc::new(Mutex::new(Vec::new()));
    let proxy = runtime.block_on(start_proxy(
        server.url.clone(),
        Faults { create_bodies: Some(creates.clone()), ..Faults::default() },
    ));
    // Plan order: 1, 3, 2 epochs (and two learning rates each); one job at a time.
    let hp = "n_epochs = [1, 3, 2]\nlearning_rate_multiplier = [0.1, 1.0]\nbatch_size = [32]";
    ws.write("s.toml", &openai_sweep("order", &proxy.url, hp).replace("max_concurrent = 2", "max_concurrent = 1"));

    let plan = ws.json(&["plan", ws.path("s.toml").to_str().unwrap(), "--json"]);
    // The table's rows are numbered from 1, in the order of the JSON's runs.
    let epochs_of: Vec<i64> =
        plan["runs"].as_array().expect("the plan's runs").iter().map(|r| r["n_epochs"].as_i64().unwrap()).collect();
    let (code, out, err) = ws.run(&["plan", ws.path("s.toml").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let line = out.lines().find(|l| l.starts_with("launch order (1 at a time")).unwrap_or_else(|| panic!("{out}"));
    let shown: Vec<i64> = line
        .split(": ")
        .nth(1)
        .unwrap()
        .split(", ")
        .map(|entry| {
            epochs_of[entry.trim_start_matches('#').split_whitespace().next().unwrap().parse::<usize>().unwrap() - 1]
        })
        .collect();
    assert_eq!(shown, [3, 3, 2, 2, 1, 1], "plan shows the longest first:\n{line}");

    let (code, _, err) = run_sweep(&ws, "s.toml", &[]);
    assert_eq!(code, 0, "{err}");
    let created: Vec<i64> = creates
        .lock()
        .unwrap()
        .iter()
        .map(|b| b["method"]["supervised"]["hyperparameters"]["n_epochs"].as_i64().unwrap())
        .collect();
    assert_eq!(created, [3, 3, 2, 2, 1, 1], "the server received the creates longest first");
}

#[test]
fn a_job_is_polled_quietly_its_events_read_at_its_end_with_after_and_its_checkpoints_once() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ws = Workspace::new();
    // Jobs of about a second and a half (182 steps of 8 examples, 1 ms each): shorter than the
    // first quiet read of events (3 s), polled several times at the old pace.
    let server = Server::start_args(&ws, "serve.db", KEY, &["--example-delay-ms", "1"]);
    let (proxy, seen) = runtime.block_on(recording_proxy(&server.url));
    let hp = "n_epochs = [2]\nlearning_rate_multiplier = [0.1, 1.0]\nbatch_size = [8]";
    ws.write("s.toml", &openai_sweep("quiet", &proxy, hp));
    // No reads of events by the clock: only at a job's changes and its end.
    let path = ws.path("s.toml");
    let out = ws
        .cmd()
        .arg("run")
        .arg(&path)
        .env("FTSWEEP_TEST_KEY", KEY)
        .env("FTSWEEP_TEST_QUIET_EVENTS_SECS", "3600")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .expect("running ftsweep");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // By job: its polls, its reads of the newest events (a page with no `after`; limit 100),
    // its pages further down (`after`), its checkpoint reads, and the polls that found the job
    // changed since the one before.
    let mut by_job: BTreeMap<String, [usize; 5]> = BTreeMap::new();
    let mut last: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (method, target, body) in seen.lock().unwrap().iter().filter(|(m, _, _)| m == "GET") {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let parts: Vec<&str> = path.trim_start_matches("/v1/fine_tuning/jobs/").split('/').collect();
        if !path.starts_with("/v1/fine_tuning/jobs/") {
            continue;
        }
        let counts = by_job.entry(parts[0].to_string()).or_default();
        match parts.get(1).copied() {
            None => {
                counts[0] += 1;
                if last.insert(parts[0].to_string(), body.clone()).is_some_and(|before| before != *body) {
                    counts[4] += 1;
                }
            }
            Some("events") if query.contains("after=") => counts[2] += 1,
            Some("events") if query.contains("limit=100") => counts[1] += 1,
            Some("events") => {}
            Some("checkpoints") => counts[3] += 1,
            Some(other) => panic!("{method} {target}: {other}"),
        }
    }
    assert_eq!(by_job.len(), 2, "{by_job:?}");
    for (job, [polls, newest, further, checkpoints, changed]) in &by_job {
        eprintln!(
            "{job}: {polls} polls ({changed} found it changed), {newest} + {further} event pages, {checkpoints} checkpoint reads"
        );
        assert!(*polls >= 1, "{job}");
        assert_eq!(*checkpoints, 1, "{job}: its checkpoints are read once");
        assert!(*further >= 1, "{job}: its 180-odd events are read in pages, the older ones with `after`");
        // Its newest events are read when a poll found the job changed, and at its end; the
        // final poll is a change too (it ended). Never at every poll where nothing changed.
        assert!(
            *newest <= *changed.max(&1),
            "{job}: {newest} reads of its newest events over {polls} polls, {changed} changed"
        );
    }
    let (_, status, _) = ws.run(&["status", "quiet", "--json"]);
    let status: Value = serde_json::from_str(&status).unwrap();
    let runs = status[0]["runs"].as_array().unwrap();
    assert!(runs.iter().all(|r| r["state"] == "done"), "{status}");
}
