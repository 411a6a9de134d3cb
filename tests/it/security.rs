//! Trust before features: the key never goes in clear to a host that only
//! looks like loopback; a server's headers neither panic nor stall the
//! client; a run whose task panics is a failed row; header values and data
//! paths from the sweep file are bad input (exit 2, file, line and key).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::protocol::{KEY, Server, openai_sweep, small_validation};
use crate::util::{Workspace, query, sweep_toml};

const ONE: &str = "n_epochs = 1\nlearning_rate_multiplier = 1.0\nbatch_size = 32";

/// `plan` and `run` of `file` (with `env`) both exit 2 before writing
/// anything, with every needle in the error and the key nowhere.
fn refused(ws: &Workspace, file: &Path, env: &[(&str, &str)], needles: &[&str]) {
    for command in ["plan", "run"] {
        let mut cmd = ws.cmd();
        cmd.arg(command).arg(file).env("FTSWEEP_TEST_KEY", KEY).env_remove("OPENAI_BASE_URL");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("running ftsweep");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(2), "`{command}` exits with 2:\n{stderr}");
        assert!(stdout.is_empty(), "nothing on stdout: {stdout}");
        assert!(stderr.starts_with("error: ") && stderr.contains("hint: "), "{stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "`{needle}` is in the error:\n{stderr}");
        }
        assert!(!stderr.contains(KEY) && !stderr.contains("LEAK-CANARY"), "the key is named nowhere");
        assert!(!ws.db().exists(), "`{command}` wrote no database");
    }
}

#[test]
fn plain_http_to_a_host_that_only_looks_loopback_is_refused_and_nothing_connects() {
    let ws = Workspace::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let cases = [
        // The host is `otherhost`: `127.0.0.1` is a user name.
        (format!("http://127.0.0.1@otherhost:{port}/v1"), "user-info"),
        (format!("http://127.0.0.1@localhost:{port}/v1"), "user-info"),
        (format!("http://user:pw@127.0.0.1:{port}/v1"), "user-info"),
        ("http://127.0.0.1.example.com/v1".to_string(), "not a loopback host"),
    ];
    for (url, says) in &cases {
        let file = ws.write("s.toml", &openai_sweep("s", url, ONE));
        refused(&ws, &file, &[], &["s.toml:23:", "`openai.base_url`", says]);
        // The environment's override is held to the same rule.
        let file = ws.write("s.toml", &openai_sweep("s", &format!("http://127.0.0.1:{port}/v1"), ONE));
        refused(&ws, &file, &[("OPENAI_BASE_URL", url)], &["OPENAI_BASE_URL", says]);
    }
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the loopback listener got a connection: {other:?}"),
    }
}

/// A proxy in front of `upstream` that adds `headers` to every answer.
async fn hostile_proxy(upstream: &str, headers: &'static [(&'static str, &'static str)]) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let origin = upstream.trim_end_matches("/v1").to_string();
    let http = reqwest::Client::new();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (http, origin) = (http.clone(), origin.clone());
            tokio::spawn(async move {
                let _ = forward(socket, &http, &origin, headers).await;
            });
        }
    });
    url
}

async fn forward(
    mut socket: tokio::net::TcpStream,
    http: &reqwest::Client,
    origin: &str,
    extra: &[(&str, &str)],
) -> std::io::Result<()> {
    // A connection closed before a whole request is simply done.
    let Ok((method, target, headers, body)) = crate::protocol::read_request(&mut socket).await else {
        return Ok(());
    };
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = http.request(method, format!("{origin}{target}")).body(body);
    for (k, v) in &headers {
        if !matches!(k.as_str(), "host" | "content-length" | "connection") {
            req = req.header(k, v);
        }
    }
    let Ok(response) = req.send().await else { return Ok(()) };
    let status = response.status().as_u16();
    let mut out = String::new();
    for (k, v) in response.headers() {
        if !matches!(k.as_str(), "content-length" | "connection" | "transfer-encoding") {
            out.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap_or_default()));
        }
    }
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    let bytes = response.bytes().await.unwrap_or_default();
    let head = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n{out}\r\n", bytes.len());
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(&bytes).await?;
    socket.shutdown().await
}

/// Runs `ftsweep run FILE --yes`; a run that has not ended after `guard`
/// is stopped and reported as a stall (the guard is no timing assertion:
/// a finished sweep takes seconds).
fn run_guarded(ws: &Workspace, file: &Path, env: &[(&str, &str)], guard: Duration) -> (i32, String, String) {
    let (out_path, err_path) = (ws.path("run.out"), ws.path("run.err"));
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("ftsweep"));
    cmd.current_dir(ws.dir.path())
        .env_remove("FTSWEEP_DB")
        .env_remove("RUST_LOG")
        .env_remove("OPENAI_BASE_URL")
        .env("FTSWEEP_TEST_KEY", KEY)
        .arg("run")
        .arg(file)
        .arg("--yes")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("running ftsweep");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > guard {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the sweep stalled: still running after {guard:?}\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let read = |p| std::fs::read_to_string(p).unwrap_or_default();
    (status.code().unwrap_or(-1), read(&out_path), read(&err_path))
}

#[test]
fn hostile_rate_limit_headers_neither_panic_nor_stall_the_sweep() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cases: [&'static [(&str, &str)]; 3] = [
        &[("x-ratelimit-remaining-requests", "5"), ("x-ratelimit-reset-requests", "99999999999999999999h")],
        &[("x-ratelimit-remaining-requests", "5"), ("x-ratelimit-reset-requests", "10000000000000000000s")],
        // "No request left, and the window resets in 114 years."
        &[("x-ratelimit-remaining-requests", "0"), ("x-ratelimit-reset-requests", "1000000h")],
    ];
    for headers in cases {
        let ws = Workspace::new();
        let server = Server::start(&ws, "serve.db", KEY);
        let proxy = runtime.block_on(hostile_proxy(&server.url, headers));
        let valid = small_validation(&ws, 5);
        let text = openai_sweep("s", &proxy, ONE).replace(&crate::util::example_data("topics-valid.jsonl"), &valid);
        let file = ws.write("s.toml", &text);
        let started = Instant::now();
        let (code, _, err) = run_guarded(&ws, &file, &[], Duration::from_secs(300));
        eprintln!("{headers:?}: exit {code} after {:.1}s", started.elapsed().as_secs_f64());
        assert!(!err.contains("panicked"), "no panic:\n{err}");
        assert_eq!(code, 0, "{err}");
        assert_eq!(query(&ws.db(), "SELECT state FROM runs"), ["done"], "{err}");
    }
}

#[test]
fn a_run_whose_task_panics_is_a_failed_row_and_the_sweep_goes_on() {
    let ws = Workspace::new();
    let file =
        ws.write("s.toml", &sweep_toml("s", "n_epochs = 1\nlearning_rate_multiplier = [0.5, 1.0]\nbatch_size = 32"));
    let (code, _, err) = run_guarded(&ws, &file, &[("FTSWEEP_TEST_PANIC_RUN", "1")], Duration::from_secs(300));
    assert_eq!(code, 1, "failed runs, not a crash (101):\n{err}");
    let rows = query(&ws.db(), "SELECT state || ' | ' || coalesce(owner, 'no owner') || ' | ' || error FROM runs");
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in &rows {
        assert!(row.starts_with("failed | no owner | internal error: the run's task panicked: injected"), "{row}");
    }
    assert!(err.contains("2 failed"), "{err}");
}

#[test]
fn organization_and_project_must_be_sendable_as_headers() {
    let ws = Workspace::new();
    let base = openai_sweep("s", "http://127.0.0.1:9/v1", ONE);
    for (line, key) in [
        ("organization = \"org-1\\r\\nX-Evil: 1\"", "openai.organization"),
        ("project = \"proj_1\\u007f\"", "openai.project"),
        ("project = \"proj_\\u0000\"", "openai.project"),
    ] {
        let file = ws.write("s.toml", &format!("{base}{line}\n"));
        refused(&ws, &file, &[], &["s.toml:25:", &format!("`{key}`"), "cannot be sent in an HTTP header"]);
    }
}

#[test]
fn a_data_path_that_is_not_a_file_says_what_it_is_with_the_sweep_file_line_and_key() {
    let ws = Workspace::new();
    std::fs::create_dir(ws.path("data")).unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(ws.path("loop-b"), ws.path("loop-a")).unwrap();
        std::os::unix::fs::symlink(ws.path("loop-a"), ws.path("loop-b")).unwrap();
        std::os::unix::fs::symlink(ws.path("gone.jsonl"), ws.path("dangling.jsonl")).unwrap();
    }
    let mut cases = vec![
        ("nope/train.jsonl", "does not exist"),
        (".", "is a directory, not a file"),
        ("data", "is a directory, not a file"),
    ];
    if cfg!(unix) {
        cases.extend([
            ("/dev/null", "is not a regular file"),
            ("loop-a", "its symbolic links form a loop"),
            ("dangling.jsonl", "is a symbolic link to"),
        ]);
    }
    let good = sweep_toml("s", ONE);
    let train = crate::util::example_data("topics-train.jsonl");
    let valid = crate::util::example_data("topics-valid.jsonl");
    for (path, says) in cases {
        let file = ws.write("s.toml", &good.replace(&train, path));
        refused(&ws, &file, &[], &["s.toml:4:", "`training_file`", says]);
        let file = ws.write("s.toml", &good.replace(&valid, path));
        refused(&ws, &file, &[], &["s.toml:5:", "`validation_file`", says]);
    }
}

#[test]
fn a_too_deep_key_and_a_too_large_number_are_located() {
    let ws = Workspace::new();
    let good = sweep_toml("s", ONE);
    let deep = format!("{good}\n[{}]\nx = 1\n", vec!["a"; 20_000].join("."));
    let file = ws.write("s.toml", &deep);
    refused(&ws, &file, &[], &["s.toml:22:", "20000 dotted parts"]);
    let file = ws.write("s.toml", &good.replace("max_concurrent = 2", "max_concurrent = 99999999999999999999"));
    refused(&ws, &file, &[], &["s.toml:20:", "`limits.max_concurrent`", "too large"]);
    let file = ws.write("s.toml", &good.replace("seed = 42", "seed = 99999999999999999999"));
    refused(&ws, &file, &[], &["s.toml:6:", "`seed`", "too large"]);
}
