//! `ftsweep report`: the page in a real headless Chromium, driven through ChromeDriver's W3C
//! WebDriver API on 127.0.0.1. The page loads with no console error and no network request
//! (Chromium's proxy is a listener of the test's that counts connections), every plot has drawn
//! marks, a header click sorts the table, and a full-page screenshot shows each plot's region
//! non-blank. The screenshots are kept under target/report-screenshots/ to be looked at.
//! ChromeDriver comes from `FTSWEEP_CHROMEDRIVER` (set by scripts/test, which installs
//! Debian's chromium and chromium-driver when missing), else `chromedriver` on PATH.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::util::{Workspace, root, sweep_toml};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its address").port()
}

/// Counts the connections made to it: Chromium's proxy, so that any request the page makes is seen.
struct Proxy {
    port: u16,
    connections: Arc<AtomicUsize>,
    /// The first line of each request (`CONNECT host:443 HTTP/1.1`).
    requests: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a listener on 127.0.0.1");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let port = listener.local_addr().expect("its address").port();
        let (connections, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, s, r) = (connections.clone(), stop.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        c.fetch_add(1, Ordering::Relaxed);
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                        let mut head = [0u8; 512];
                        let n = stream.read(&mut head).unwrap_or(0);
                        let line = String::from_utf8_lossy(&head[..n]).lines().next().unwrap_or("").to_string();
                        r.lock().unwrap().push(line);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Proxy { port, connections, requests, stop, thread: Some(thread) }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn chromedriver_path() -> PathBuf {
    let path = std::env::var_os("FTSWEEP_CHROMEDRIVER").map_or_else(|| PathBuf::from("chromedriver"), PathBuf::from);
    let found = Command::new(&path).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "no ChromeDriver at `{}`: run the tests with `bash scripts/test`, which installs Debian's chromium and \
         chromium-driver (scripts/chromium), or set FTSWEEP_CHROMEDRIVER to a chromedriver executable",
        path.display()
    );
    path
}

/// ChromeDriver in a process group of its own, with the browsers it starts; the group is killed on drop.
struct Driver {
    child: Child,
    url: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
    profile: PathBuf,
}

impl Driver {
    async fn start() -> Driver {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let child = Command::new(chromedriver_path())
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let profile = tempfile::tempdir().expect("a profile folder");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            profile: profile.path().to_path_buf(),
            _profile: profile,
        };
        let started = Instant::now();
        loop {
            if let Ok(r) = driver.http.get(format!("{}/status", driver.url)).send().await {
                let v: Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(started.elapsed() < Duration::from_secs(30), "chromedriver did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        driver
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("WebDriver {path}: {e}"));
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or_else(|e| panic!("WebDriver {path}: not JSON: {e}"));
        assert!(status.is_success(), "WebDriver {path}: {status}: {v}");
        v["value"].clone()
    }

    async fn session(&self, proxy: u16) -> Session<'_> {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Chromium's own traffic (network time, sign-in, variations, hints), which is not the page's.
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-domain-reliability",
            "--disable-client-side-phishing-detection",
            "--no-pings",
            "--no-default-browser-check",
            "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,OptimizationGuideModelDownloading,\
             MediaRouter,Translate,AutofillServerCommunication,CertificateTransparencyComponentUpdater,\
             SafeBrowsing,InterestFeedContentSuggestions,SignInProfileCreation,ChromeSignin",
            "--allow-pre-commit-input",
        ]
        .map(String::from)
        .into_iter()
        .chain([
            format!("--user-data-dir={}", self.profile.display()),
            format!("--proxy-server=http://127.0.0.1:{proxy}"),
        ])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let v = self.call(reqwest::Method::POST, "/session", Some(caps)).await;
        let id = v["sessionId"].as_str().expect("a session id").to_string();
        Session { driver: self, id }
    }
}

impl Drop for Driver {
    #[allow(unsafe_code)] // libc::kill
    fn drop(&mut self) {
        let group = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a negative pid signals the process group chromedriver leads, which
        // holds the browsers it started; no memory is involved.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl Session<'_> {
    async fn post(&self, path: &str, body: Value) -> Value {
        self.driver.call(reqwest::Method::POST, &format!("/session/{}{path}", self.id), Some(body)).await
    }

    async fn script(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": []})).await
    }

    async fn click(&self, css: &str) {
        let e = self.post("/element", json!({"using": "css selector", "value": css})).await;
        let id = e.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).expect("an element").to_string();
        self.post(&format!("/element/{id}/click"), json!({})).await;
    }

    async fn close(self) {
        self.driver.call(reqwest::Method::DELETE, &format!("/session/{}", self.id), None).await;
    }
}

/// The processes of process group `group` still alive.
fn group_members(group: u32) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let mut stat = String::new();
        let path = entry.path().join("stat");
        if std::fs::File::open(&path).and_then(|mut f| f.read_to_string(&mut stat)).is_err() {
            continue;
        }
        // pid (comm) state ppid pgrp ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == group.to_string() {
            out.push(stat.clone());
        }
    }
    out
}

/// Where the screenshots are kept.
fn screenshot_dir() -> PathBuf {
    let dir = root().join("target/report-screenshots");
    std::fs::create_dir_all(&dir).expect("the screenshot folder");
    dir
}

/// Checks the page at `html` and saves its screenshot as `name`.png.
async fn check_page(session: &Session<'_>, proxy: &Proxy, html: &Path, name: &str) {
    let url = url::Url::from_file_path(html).expect("a file URL").to_string();
    // The plots are measured at this width and the screenshot is taken at it, the page's full height.
    session.post("/window/rect", json!({"width": 1300, "height": 900})).await;
    session.post("/url", json!({"url": url})).await;
    // No console error (the browser log) and no request: no resource entry, no proxy connection.
    let log = session.post("/se/log", json!({"type": "browser"})).await;
    let errors: Vec<&Value> = log.as_array().into_iter().flatten().filter(|e| e["level"] == "SEVERE").collect();
    assert!(errors.is_empty(), "{name}: console errors: {errors:?}");
    let resources = session.script("return performance.getEntriesByType('resource').map(e => e.name)").await;
    assert_eq!(resources, json!([]), "{name}: the page loaded resources");
    assert_eq!(session.script("return document.scripts.length").await, json!(1), "{name}: one script, the page's own");

    // Every plot has drawn marks.
    let plots = session
        .script(
            "return Array.from(document.querySelectorAll('[data-plot]')).map(p => {
               const r = p.getBoundingClientRect();
               const drawn = Array.from(p.querySelectorAll('path,polyline,circle,rect,line')).filter(e => {
                 const b = e.getBoundingClientRect(); return b.width > 0 || b.height > 0; });
               const layers = Array.from(p.querySelectorAll('.layer')).filter(l => l.getClientRects().length > 0);
               return {name: p.getAttribute('data-plot'), marks: drawn.length, stacked: p.querySelector('.layer') !== null,
                       layers: layers.length, x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height};
             })",
        )
        .await;
    let plots = plots.as_array().expect("the plots").clone();
    let names: Vec<&str> = plots.iter().filter_map(|p| p["name"].as_str()).collect();
    for want in ["training loss", "validation loss", "parallel coordinates", "metric vs tokens"] {
        assert!(names.contains(&want), "{name}: no `{want}` plot among {names:?}");
    }
    for p in &plots {
        assert!(p["marks"].as_u64().unwrap_or(0) >= 5, "{name}: the plot {p} drew too little");
        if p["stacked"] == true {
            assert!(p["layers"].as_u64().unwrap_or(0) >= 1, "{name}: no run's curve shows on {p}");
        }
    }

    screenshot(session, &plots, name).await;
    check_sorting(session, name).await;
    let requests = proxy.requests.lock().unwrap().clone();
    let page: Vec<&String> = requests.iter().filter(|r| !is_chromium_own(r)).collect();
    let connections = proxy.connections.load(Ordering::Relaxed);
    eprintln!("{name}: {connections} proxy connections: {requests:?}");
    assert!(page.is_empty(), "{name}: the page made network requests: {page:?}");
}

/// Chromium's own requests, which its flags do not all turn off and which come whatever the page
/// (sign-in, Google's connectivity checks and network time: `CONNECT accounts.google.com:443`,
/// `CONNECT www.google.com:443`, `CONNECT android.clients.google.com:443`,
/// `GET http://clients2.google.com/time/...`, varying from run to run): any request to a host under
/// google.com. The page's own loads, to any host, show in its resource timing, which must be empty.
fn is_chromium_own(request: &str) -> bool {
    let target = request.split_whitespace().nth(1).unwrap_or("");
    let host = target.strip_prefix("http://").unwrap_or(target);
    let host = host.split(['/', ':']).next().unwrap_or("");
    host == "google.com" || host.ends_with(".google.com")
}

/// A click on the trained-tokens header sorts the rows by it; a second reverses them.
async fn check_sorting(session: &Session<'_>, name: &str) {
    let column = "Array.from(document.querySelectorAll('#ranked thead th')).findIndex(th => th.textContent === 'trained_tokens')";
    let read = format!(
        "const c = {column}; return Array.from(document.querySelectorAll('#ranked tbody tr')).map(r => \
         [r.cells[1].textContent, r.cells[c].getAttribute('data-v')])"
    );
    let before = session.script(&read).await;
    let index = session.script(&format!("return {column}")).await.as_u64().expect("a trained_tokens column");
    session.click(&format!("#ranked thead th:nth-child({})", index + 1)).await;
    let after = session.script(&read).await;
    let tokens = |v: &Value| -> Vec<Option<f64>> {
        v.as_array().unwrap().iter().map(|r| r[1].as_str().and_then(|s| s.parse().ok())).collect()
    };
    let t = tokens(&after);
    let known: Vec<f64> = t.iter().flatten().copied().collect();
    assert!(known.windows(2).all(|w| w[0] <= w[1]), "{name}: not sorted by tokens: {after}");
    assert_ne!(before, after, "{name}: the click changed nothing");
    session.click(&format!("#ranked thead th:nth-child({})", index + 1)).await;
    let again = tokens(&session.script(&read).await);
    let known: Vec<f64> = again.iter().flatten().copied().collect();
    assert!(known.windows(2).all(|w| w[0] >= w[1]), "{name}: a second click does not reverse");
}

/// A full-page screenshot, saved; each plot's region must have enough non-background pixels.
async fn screenshot(session: &Session<'_>, plots: &[Value], name: &str) {
    let size =
        session.script("return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]").await;
    let (w, h) = (size[0].as_u64().unwrap().max(1300), size[1].as_u64().unwrap());
    session.post("/window/rect", json!({"width": w, "height": h})).await;
    let png_b64 = session.driver.call(reqwest::Method::GET, &format!("/session/{}/screenshot", session.id), None).await;
    let bytes = base64::engine::general_purpose::STANDARD.decode(png_b64.as_str().expect("base64")).expect("a PNG");
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, &bytes).expect("saving the screenshot");
    eprintln!("{name}: screenshot {} ({} bytes)", path.display(), bytes.len());
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().expect("a PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("a buffer size")];
    let info = reader.next_frame(&mut buf).expect("a PNG frame");
    let channels = info.color_type.samples();
    let ratio = session.script("return window.devicePixelRatio").await.as_f64().unwrap_or(1.0);
    for p in plots {
        let f = |k: &str| (p[k].as_f64().unwrap_or(0.0) * ratio) as u32;
        let (x0, y0) = (f("x"), f("y"));
        let (x1, y1) = ((x0 + f("w")).min(info.width), (y0 + f("h")).min(info.height));
        assert!(x1 > x0 && y1 > y0, "{name}: the plot {p} is outside the screenshot ({}x{})", info.width, info.height);
        let mut ink = 0u64;
        for y in y0..y1 {
            for x in x0..x1 {
                let i = ((y * info.width + x) as usize) * channels;
                if buf[i..i + 3].iter().any(|&c| c < 200) {
                    ink += 1;
                }
            }
        }
        let share = ink as f64 / f64::from((x1 - x0) * (y1 - y0));
        assert!(share > 0.01, "{name}: the plot {} is blank in the screenshot ({share:.4} inked)", p["name"]);
    }
}

fn report(ws: &Workspace, sweep: &str, out: &str) -> PathBuf {
    let spec = root().join(format!("sweeps/{sweep}.toml")).display().to_string();
    let (code, _, err) = ws.run(&["run", &spec]);
    assert_eq!(code, 0, "run {sweep}:\n{err}");
    let started = Instant::now();
    let (code, stdout, err) = ws.run(&["report", sweep, "-o", out]);
    assert_eq!(code, 0, "report {sweep}:\n{err}");
    let path = ws.path(out);
    assert_eq!(stdout.trim(), out, "the path on stdout");
    let text = std::fs::read_to_string(&path).expect("the report");
    eprintln!("{sweep}: report {} bytes in {:?}", text.len(), started.elapsed());
    for bad in ["http://", "https://", "//cdn", "src=", "href=", "url("] {
        assert!(!text.contains(bad), "{sweep}: the report contains `{bad}`");
    }
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn the_report_loads_offline_in_chromium_with_every_plot_drawn() {
    let ws = Workspace::new();
    let halving = report(&ws, "halving", "halving.html");
    let text = std::fs::read_to_string(&halving).unwrap();
    assert!(
        text.contains("data-plot=\"rungs\"") && text.contains("data-plot=\"seeds\""),
        "halving has rungs and seeds"
    );
    let quick = report(&ws, "quickstart", "quickstart.html");
    let proxy = Proxy::start();
    let driver = Driver::start().await;
    let group = driver.child.id();
    let session = driver.session(proxy.port).await;
    check_page(&session, &proxy, &halving, "halving").await;
    check_page(&session, &proxy, &quick, "quickstart").await;
    session.close().await;
    drop(driver);
    let left = group_members(group);
    assert!(left.is_empty(), "chromedriver's processes outlived it: {left:?}");
}

#[test]
fn an_output_path_that_cannot_be_a_file_is_refused_before_anything_is_written() {
    let ws = Workspace::new();
    let spec =
        ws.write("one.toml", &sweep_toml("one", "n_epochs = [1]\nlearning_rate_multiplier = [1.0]\nbatch_size = [32]"));
    let (code, _, err) = ws.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(code, 0, "run:\n{err}");
    let missing = ws.path("no/such/folder/r.html");
    let (code, stdout, err) = ws.run(&["report", "one", "-o", missing.to_str().unwrap()]);
    assert_eq!(code, 2, "a missing folder:\n{err}");
    assert!(err.contains("there is no folder") && err.contains("no/such/folder") && err.contains("hint: "), "{err}");
    assert!(stdout.is_empty() && !ws.path("no").exists(), "nothing written");
    let folder = ws.path("");
    let (code, _, err) = ws.run(&["report", "one", "-o", folder.to_str().unwrap()]);
    assert_eq!(code, 2, "a folder:\n{err}");
    assert!(err.contains("is a folder") && err.contains("report.html"), "{err}");
    let (code, stdout, err) = ws.run(&["report", "one", "-o", ws.path("r.html").to_str().unwrap()]);
    assert_eq!(code, 0, "a file:\n{err}");
    assert!(std::fs::read_to_string(stdout.trim()).unwrap().contains("<svg"), "the page has its plots");
}
