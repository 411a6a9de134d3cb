//! `ftsweep train` (the local model family trained by Hugging Face Trainer conventions) and
//! `ftsweep serve`'s LoRA adapter endpoints (vLLM's `load_lora_adapter` / `unload_lora_adapter`),
//! through the real binary and real HTTP on 127.0.0.1.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Map, Value, json};

use crate::util::{Workspace, example_data};

/// `ftsweep train`'s arguments on the example data, into `out`.
fn train_args(out: &Path, epochs: u32, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["train", "--model", "local/ngram", "--train"].map(String::from).to_vec();
    args.push(example_data("topics-train.jsonl"));
    args.push("--valid".into());
    args.push(example_data("topics-valid.jsonl"));
    for (flag, value) in [
        ("--epochs", epochs.to_string()),
        ("--learning-rate-multiplier", "1".into()),
        ("--batch-size", "64".into()),
        ("--seed", "7".into()),
        ("--output-dir", out.display().to_string()),
    ] {
        args.push(flag.into());
        args.push(value);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Runs `ftsweep train`, which must succeed.
fn train(ws: &Workspace, out: &Path, epochs: u32, extra: &[&str]) {
    let args = train_args(out, epochs, extra);
    let (code, _, err) = ws.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "ftsweep train failed:\n{err}");
}

/// The lines of `dir/metrics.jsonl`, parsed.
fn metrics(dir: &Path) -> Vec<Map<String, Value>> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).expect("metrics.jsonl");
    text.lines().map(|l| serde_json::from_str::<Map<String, Value>>(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn number(entry: &Map<String, Value>, key: &str) -> f64 {
    entry.get(key).and_then(Value::as_f64).unwrap_or_else(|| panic!("no number `{key}` in {entry:?}"))
}

fn first_eval_loss(dir: &Path) -> f64 {
    let lines = metrics(dir);
    let first = lines.iter().find(|l| l.contains_key("eval_loss")).expect("an evaluation line");
    number(first, "eval_loss")
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect()
}

#[test]
fn train_writes_metrics_checkpoints_and_the_adapter_as_the_hf_trainer_does() {
    let ws = Workspace::new();
    let out = ws.path("out");
    train(&ws, &out, 2, &[]);

    let lines = metrics(&out);
    let (evals, steps): (Vec<_>, Vec<_>) = lines.iter().partition(|l| l.contains_key("eval_loss"));
    fn keys(l: &Map<String, Value>) -> BTreeSet<&str> {
        l.keys().map(String::as_str).collect()
    }
    let max_steps = number(steps[0], "max_steps");
    for l in &steps {
        let expected = BTreeSet::from(["step", "epoch", "loss", "learning_rate", "mean_token_accuracy", "max_steps"]);
        assert_eq!(keys(l), expected, "{l:?}");
        assert!(number(l, "loss").is_finite() && number(l, "learning_rate") > 0.0);
    }
    assert_eq!(steps.len() as f64, max_steps, "a line per step");
    for l in &evals {
        assert_eq!(keys(l), BTreeSet::from(["step", "epoch", "eval_loss", "eval_mean_token_accuracy", "max_steps"]));
    }
    // Four evaluations an epoch, the last at the epoch's end.
    for epoch in [1.0, 2.0] {
        let within = evals.iter().filter(|l| (epoch - 1.0..epoch).contains(&(number(l, "epoch") - 1e-9))).count();
        assert_eq!(within, 4, "epoch {epoch}: {evals:?}");
        assert!(evals.iter().any(|l| number(l, "epoch") == epoch));
    }
    let epochs: Vec<f64> = lines.iter().map(|l| number(l, "epoch")).collect();
    assert!(epochs.windows(2).all(|w| w[0] <= w[1]) && epochs[epochs.len() - 1] == 2.0, "{epochs:?}");

    let checkpoints: Vec<String> = names(&out).into_iter().filter(|n| n.starts_with("checkpoint-")).collect();
    assert_eq!(checkpoints.len(), 2, "one checkpoint an epoch: {:?}", names(&out));
    for name in &checkpoints {
        let dir = out.join(name);
        assert_eq!(
            names(&dir),
            BTreeSet::from(["adapter_config.json", "adapter_model.ftsweep", "trainer_state.json"].map(String::from))
        );
        let state = read_json(&dir.join("trainer_state.json"));
        assert_eq!(format!("checkpoint-{}", state["global_step"]), *name);
        assert!(
            state["epoch"].is_f64() && state["log_history"].is_array() && state["best_metric"].is_null(),
            "{state}"
        );
        assert_eq!(state["max_steps"].as_f64(), Some(max_steps));
    }
    let state = read_json(&out.join("trainer_state.json"));
    assert_eq!((state["global_step"].as_f64(), state["epoch"].as_f64()), (Some(max_steps), Some(2.0)));
    let config = read_json(&out.join("adapter_config.json"));
    assert_eq!(config["peft_type"], "FTSWEEP_LOCAL");
    assert_eq!(config["base_model_name_or_path"], "local/ngram");
    assert!(out.join("adapter_model.ftsweep").is_file());
    assert!(names(&out).iter().all(|n| !n.starts_with("tmp-") && !n.starts_with('.')), "{:?}", names(&out));
}

#[test]
fn train_continues_an_adapter_from_init_from() {
    let ws = Workspace::new();
    let (first, continued) = (ws.path("first"), ws.path("continued"));
    train(&ws, &first, 1, &[]);
    let init = first.display().to_string();
    train(&ws, &continued, 1, &["--init-from", &init]);
    let (fresh, more) = (first_eval_loss(&first), first_eval_loss(&continued));
    assert!(more < fresh, "a continued run starts where the first ended: {more} vs a fresh {fresh}");
    // A checkpoint continues too.
    let checkpoint = names(&first).into_iter().find(|n| n.starts_with("checkpoint-")).unwrap();
    let from_checkpoint = ws.path("from-checkpoint");
    train(&ws, &from_checkpoint, 1, &["--init-from", &first.join(checkpoint).display().to_string()]);
    assert!(first_eval_loss(&from_checkpoint) < fresh);
}

#[test]
fn train_refuses_bad_input_with_exit_code_2_and_writes_nothing() {
    let ws = Workspace::new();
    let out = ws.path("out");
    let run = |args: Vec<String>| ws.run(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let mut bad = train_args(&out, 1, &[]);
    let at = bad.iter().position(|a| a.ends_with("topics-train.jsonl")).unwrap();
    bad[at] = example_data("bad-line.jsonl");
    let (code, _, err) = run(bad);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad-line.jsonl:7: not valid JSON") && err.contains("hint:"), "{err}");
    assert!(!out.join("adapter_config.json").exists() && !out.join("metrics.jsonl").exists());

    let mut other = train_args(&out, 1, &[]);
    other[2] = "gpt-4o-mini".into();
    let (code, _, err) = run(other);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("trains only the local model family") && err.contains("gpt-4o-mini"), "{err}");

    let missing = ws.path("no-such-adapter");
    let (code, _, err) = run(train_args(&out, 1, &["--init-from", &missing.display().to_string()]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--init-from") && err.contains("no-such-adapter") && err.contains("hint:"), "{err}");

    let not_adapter = ws.path("empty");
    std::fs::create_dir(&not_adapter).unwrap();
    let (code, _, err) = run(train_args(&out, 1, &["--init-from", &not_adapter.display().to_string()]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no adapter_config.json"), "{err}");

    for (flag, value) in [("--epochs", "0"), ("--learning-rate-multiplier", "-1"), ("--batch-size", "x")] {
        let mut args = train_args(&out, 1, &[]);
        let at = args.iter().position(|a| a == flag).unwrap();
        args[at + 1] = value.into();
        let (code, _, err) = run(args);
        assert_eq!(code, 2, "{flag} {value}: {err}");
        assert!(err.contains(flag), "{err}");
    }
    assert!(!out.exists(), "nothing was written: {:?}", names(&out));
}

#[cfg(unix)]
#[test]
fn sigterm_ends_training_without_a_final_adapter() {
    use std::os::unix::process::ExitStatusExt;
    let ws = Workspace::new();
    let out = ws.path("out");
    // What an earlier training into the same directory left: gone once this one starts.
    train(&ws, &out, 1, &[]);
    assert!(out.join("adapter_config.json").exists());
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("ftsweep"))
        .args(train_args(&out, 3, &["--step-delay-ms", "100"]))
        .current_dir(ws.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting ftsweep train");
    // Waits for training to be under way (a few steps written).
    let deadline = Instant::now() + Duration::from_secs(60);
    let under_way = || {
        let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
        // The earlier training's 12 steps do not count.
        text.lines().count() >= 3 && !text.contains("\"max_steps\":12,")
    };
    while !under_way() {
        assert!(Instant::now() < deadline, "no step written within 60 s");
        assert!(child.try_wait().unwrap().is_none(), "ftsweep train ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(sent.is_ok_and(|s| s.success()), "sending SIGTERM");
    let status = child.wait().expect("waiting for ftsweep train");
    assert_eq!(status.signal(), Some(15), "ended by SIGTERM: {status:?}");
    assert!(!out.join("adapter_config.json").exists(), "no final adapter: {:?}", names(&out));
    assert!(!out.join("trainer_state.json").exists());
    // Every line written is whole, and the earlier training's are gone.
    let lines = metrics(&out);
    assert!(lines.len() >= 3 && lines.iter().all(|l| number(l, "max_steps") == number(&lines[0], "max_steps")));
    assert!(number(&lines[0], "max_steps") > 12.0, "the 3-epoch training's lines: {:?}", lines[0]);
}

const KEY: &str = "test-key-adapters-3f9b";

/// A running `ftsweep serve` on a free port, killed when dropped.
struct Server {
    child: std::process::Child,
    url: String,
    log: std::path::PathBuf,
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Server {
    fn start(ws: &Workspace, extra: &[&str]) -> Server {
        let log = ws.path("serve.log");
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("ftsweep"))
            .args(["serve", "--port", "0", "--key", KEY, "--state"])
            .arg(ws.path("serve.db"))
            .args(extra)
            .current_dir(ws.dir.path())
            .env_remove("FTSWEEP_SERVE_KEY")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("a log file"))
            .spawn()
            .expect("starting ftsweep serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("reading the URL line");
        let url = line.trim().to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "no URL ({line:?}): {}", std::fs::read_to_string(&log).unwrap());
        Server { child, url, log, _stdout: stdout }
    }

    /// `POST {url}{path}` with the right key (or `key`): the status and the body as text.
    async fn post(&self, path: &str, body: Value, key: &str) -> (StatusCode, String, String) {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("a response");
        let status = response.status();
        let kind = response.headers().get("content-type").map_or("", |v| v.to_str().unwrap()).to_string();
        (status, kind, response.text().await.expect("a body"))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("a response");
        let status = response.status();
        (status, response.json().await.expect("a JSON body"))
    }

    async fn load(&self, name: &str, path: &Path) -> (StatusCode, String, String) {
        self.post("/load_lora_adapter", json!({"lora_name": name, "lora_path": path}), KEY).await
    }

    async fn unload(&self, name: &str) -> (StatusCode, String, String) {
        self.post("/unload_lora_adapter", json!({"lora_name": name}), KEY).await
    }

    async fn chat(&self, model: &str, text: &str) -> (StatusCode, Value) {
        let body = json!({"model": model, "messages": [{"role": "user", "content": text}]});
        let (status, _, text) = self.post("/chat/completions", body, KEY).await;
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// vLLM's error body.
fn vllm_error(status: StatusCode, kind: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": status.as_u16()}})
}

fn parsed(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Every training reply of the example data.
fn training_replies() -> BTreeSet<String> {
    let text = std::fs::read_to_string(example_data("topics-train.jsonl")).expect("example data");
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["messages"].as_array()?.last()?["content"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn serve_loads_trained_adapters_and_answers_with_them_as_vllm_does() {
    let ws = Workspace::new();
    let out = ws.path("out");
    train(&ws, &out, 2, &[]);
    let server = Server::start(&ws, &["--max-loras", "1"]);

    let (status, kind, text) = server.load("sql", &out).await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "Success: LoRA adapter 'sql' added successfully."));
    assert!(kind.starts_with("text/plain"), "{kind}");
    let (_, models) = server.get("/models").await;
    let card = models["data"].as_array().unwrap().iter().find(|m| m["id"] == "sql").expect("the adapter is listed");
    assert_eq!((card["parent"].as_str(), card["root"].as_str()), (Some("local/ngram"), out.to_str()));

    let (status, reply) = server.chat("sql", "Who won the football world cup in 2018?").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let content = reply["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    assert!(training_replies().contains(&content), "a reply of the training data: {content:?}");
    assert_eq!(reply["model"], "sql");
    // The base model answers as it always has: it knows no replies.
    let (status, base) = server.chat("local/ngram", "hello").await;
    assert_eq!((status, base["choices"][0]["message"]["content"].as_str()), (StatusCode::OK, Some("")));

    let (status, _, text) = server.load("sql", &out).await;
    let already = "The lora adapter 'sql' has already been loaded. If you want to load the adapter in place, set \
                   'load_inplace' to True.";
    let already = vllm_error(StatusCode::BAD_REQUEST, "InvalidUserInput", already);
    assert_eq!((status, parsed(&text)), (StatusCode::BAD_REQUEST, already));
    // In place, as vLLM: the name now answers from the first epoch's checkpoint.
    let checkpoint = names(&out).into_iter().find(|n| n.starts_with("checkpoint-")).unwrap();
    let in_place = json!({"lora_name": "sql", "lora_path": out.join(&checkpoint), "load_inplace": true});
    let (status, _, text) = server.post("/load_lora_adapter", in_place, KEY).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (status, card) = server.get("/models/sql").await;
    assert_eq!((status, card["root"].as_str()), (StatusCode::OK, out.join(&checkpoint).to_str()), "{card}");
    let (status, _, text) = server.load("local/ngram", &out).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("conflicts with a served base model"), "{text}");

    // --max-loras 1: a second adapter waits for the first to be unloaded.
    let (status, _, text) = server.load("epoch1", &out.join(&checkpoint)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let message = parsed(&text)["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("--max-loras 1") && message.contains("unload") && message.contains("sql"), "{message}");

    let (status, _, text) = server.unload("sql").await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "Success: LoRA adapter 'sql' removed successfully."));
    let (status, gone) = server.chat("sql", "Who won the football world cup in 2018?").await;
    assert_eq!((status, gone["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("model_not_found")), "{gone}");
    let (status, _, text) = server.unload("sql").await;
    let not_found = vllm_error(StatusCode::NOT_FOUND, "NotFoundError", "The lora adapter 'sql' cannot be found.");
    assert_eq!((status, parsed(&text)), (StatusCode::NOT_FOUND, not_found));

    let (status, _, text) = server.load("epoch1", &out.join(&checkpoint)).await;
    assert_eq!(status, StatusCode::OK, "a slot is free again: {text}");
    let (status, _, text) = server.unload("epoch1").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(!std::fs::read_to_string(&server.log).unwrap().contains(KEY), "the key is logged");
}

#[tokio::test]
async fn serve_refuses_what_is_not_an_adapter_and_hostile_bodies() {
    let ws = Workspace::new();
    let server = Server::start(&ws, &[]);
    let empty = ws.path("empty");
    std::fs::create_dir(&empty).unwrap();

    let (status, _, text) = server.load("x", &empty).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let error = parsed(&text);
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains(empty.to_str().unwrap()) && message.contains("adapter_config.json"), "{message}");
    assert_eq!(error["error"]["code"], 400);

    for (path, says) in [
        (ws.path("missing"), "cannot read the directory"),
        (Path::new("relative/dir").to_path_buf(), "not an absolute path"),
    ] {
        let (status, _, text) = server.load("x", &path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        let message = parsed(&text)["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(path.to_str().unwrap()) && message.contains(says), "{message}");
    }
    let other_family = ws.path("peft");
    std::fs::create_dir(&other_family).unwrap();
    std::fs::write(other_family.join("adapter_config.json"), r#"{"peft_type": "LORA", "r": 8}"#).unwrap();
    let (status, _, text) = server.load("x", &other_family).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("peft_type is `LORA`"), "{text}");

    for body in [
        json!({"lora_name": "x"}),
        json!({"lora_path": "/tmp"}),
        json!({"lora_name": 7, "lora_path": "/tmp"}),
        json!({"lora_name": "x", "lora_path": ["/tmp"]}),
        json!(["x"]),
    ] {
        let (status, _, text) = server.post("/load_lora_adapter", body.clone(), KEY).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
        assert!(parsed(&text)["error"]["message"].is_string(), "{text}");
    }
    let (status, _, text) = server.post("/unload_lora_adapter", json!({"lora_name": {"a": 1}}), KEY).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let huge = json!({"lora_name": "x".repeat(1 << 20), "lora_path": "/tmp"});
    let (status, _, text) = server.post("/load_lora_adapter", huge, KEY).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");

    for key in ["wrong-key-0000000000", ""] {
        let (status, _, text) =
            server.post("/load_lora_adapter", json!({"lora_name": "x", "lora_path": "/tmp"}), key).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
        let (status, _, _) = server.post("/unload_lora_adapter", json!({"lora_name": "x"}), key).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
}
