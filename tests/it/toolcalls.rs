//! Tool calls as replies, end to end on the real binary: a sweep on the OpenAI provider (and on
//! Together's) against `ftsweep serve`, through the loopback proxy that keeps every chat request's
//! body, on tests/data/drone-tools.jsonl (each line has six tool definitions; the replies are
//! calls). The requests carry each line's `tools`, the replies come back as `tool_calls` and are
//! graded by the `tool_call` graders; a text grader on such data is refused; the decoding
//! settings are sent, key the predictions cache and show in the leaderboard's footnote.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::protocol::{Faults, KEY, Server, run_sweep, start_proxy};
use crate::util::{Workspace, assert_refused, query, root};

/// The fixture's lines, parsed.
fn lines() -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("tests/data/drone-tools.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The fixture as training and validation file (every line in both: the local model learns the
/// calls it is asked for).
fn data(ws: &Workspace) -> (String, String) {
    let text = std::fs::read_to_string(root().join("tests/data/drone-tools.jsonl")).unwrap();
    (ws.write("train.jsonl", &text).display().to_string(), ws.write("valid.jsonl", &text).display().to_string())
}

/// The one run of the OpenAI-protocol sweeps.
const HP: &str = "n_epochs = 3\nlearning_rate_multiplier = 1.0\nbatch_size = 4";

/// A sweep of one run (`head`: its provider and base model; `tail`: the provider's tables) that
/// grades tool calls three ways, with `decoding` lines in `[evaluation]`.
fn sweep(ws: &Workspace, head: &str, hp: &str, metric: &str, decoding: &str, tail: &str) -> String {
    let (train, valid) = data(ws);
    format!(
        r#"name = "drone"
{head}
training_file = "{train}"
validation_file = "{valid}"
seed = 42

[hyperparameters]
{hp}

[evaluation]
metric = "{metric}"
{decoding}
[[evaluation.graders]]
type = "tool_call"

[[evaluation.graders]]
type = "tool_call"
match = "name"

[[evaluation.graders]]
type = "tool_call"
arguments = "partial"

{tail}"#
    )
}

fn openai_sweep(ws: &Workspace, url: &str, decoding: &str) -> String {
    let tail = format!("[openai]\nbase_url = \"{url}\"\napi_key_env = \"FTSWEEP_TEST_KEY\"\n");
    sweep(ws, "provider = \"openai\"\nbase_model = \"local/ngram\"", HP, "tool_call", decoding, &tail)
}

/// The line of the fixture whose user message the request asks.
fn line_of<'a>(lines: &'a [Value], body: &Value) -> &'a Value {
    let asked = |messages: &Value| messages.as_array().unwrap().iter().rfind(|m| m["role"] == "user").cloned();
    let user = asked(&body["messages"]);
    lines.iter().find(|l| asked(&l["messages"]) == user).unwrap_or_else(|| panic!("no line asks {body}"))
}

/// Checks that every request carried its line's `tools` and `parallel_tool_calls` and only
/// the messages before the reply; returns how many requests there were.
fn check_requests(bodies: &[Value], lines: &[Value]) -> usize {
    for body in bodies {
        let line = line_of(lines, body);
        assert_eq!(body["tools"], line["tools"], "the line's tools are sent as written: {body}");
        assert_eq!(body["tools"].as_array().unwrap().len(), 6);
        // Lines 1 to 11 turn parallel calls off; line 12 leaves it out.
        assert_eq!(body.get("parallel_tool_calls"), line.get("parallel_tool_calls"), "{body}");
        assert!(body.get("tool_choice").is_none(), "no line sets tool_choice: {body}");
        let prompt = &line["messages"].as_array().unwrap()[..2];
        assert_eq!(body["messages"].as_array().unwrap().len(), prompt.len(), "{body}");
    }
    bodies.len()
}

#[test]
fn a_tool_calling_sweep_on_the_openai_provider_sends_the_tools_and_grades_the_calls() {
    let ws = Workspace::new();
    let server = Server::start(&ws, "serve.db", KEY);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let proxy = runtime
        .block_on(start_proxy(server.url.clone(), Faults { chat_bodies: Some(bodies.clone()), ..Faults::default() }));
    let lines = lines();
    ws.write("s.toml", &openai_sweep(&ws, &proxy.url, ""));
    let (code, out, err) = run_sweep(&ws, "s.toml", &[]);
    assert_eq!(code, 0, "{err}");
    // The run and the baseline each ask the 12 prompts once, with the line's tools.
    let sent = bodies.lock().unwrap().clone();
    assert_eq!(check_requests(&sent, &lines), 24);
    for body in &sent {
        assert_eq!((body["temperature"].as_f64(), body["max_completion_tokens"].as_u64()), (Some(0.0), Some(256)));
        assert!(body.get("top_p").is_none() && body.get("seed").is_none(), "unset settings are not sent: {body}");
    }

    // The fine-tuned model's replies are tool calls (stored encoded), graded by the calls.
    let replies = query(
        &ws.db(),
        "SELECT p.content FROM predictions p JOIN repliers r ON r.id = p.replier WHERE r.model LIKE 'ft:%'",
    );
    assert_eq!(replies.len(), 12);
    assert!(replies.iter().all(|r| r.starts_with('\u{1e}') && r.contains("\"tool_calls\":[{")), "{replies:?}");
    let rows = ws.json(&["leaderboard", "drone", "--json"]);
    let row = |baseline: bool| rows.as_array().unwrap().iter().find(|r| r["is_baseline"] == baseline).unwrap().clone();
    let (run, base) = (row(false), row(true));
    let score = |r: &Value, name: &str| r["scores"][name].as_f64().unwrap();
    eprintln!("run: {}; baseline: {}", run["scores"], base["scores"]);
    assert_eq!(run["metric"], "tool_call");
    assert!(score(&run, "tool_call") >= 0.5, "the model learnt most calls: {}", run["scores"]);
    // Names only and partial arguments give at least the exact score.
    assert!(score(&run, "tool_call_name") >= score(&run, "tool_call"));
    assert!(score(&run, "tool_call_partial") >= score(&run, "tool_call"));
    // The untrained base model answers an empty text: no call, every reference missed.
    assert_eq!(
        (score(&base, "tool_call"), score(&base, "tool_call_name"), score(&base, "tool_call_partial")),
        (0.0, 0.0, 0.0)
    );
    assert!(out.contains("tool_call"), "{out}");

    // `compare` shows the calls as people read them, not their encoding.
    let (_, shown, _) = ws.run(&["compare", run["run_id"].as_str().unwrap(), "baseline", "--sweep", "drone"]);
    assert!(shown.contains("reference: take_off({\"altitude_m\":50})"), "{shown}");
    assert!(!shown.contains('\u{1e}'), "{shown}");

    // The decoding settings key the cache: another temperature and a seed ask the baseline again
    // (the run is not evaluated again), the same settings do not.
    let table = |ws: &Workspace| ws.run(&["leaderboard", "drone"]).1;
    assert!(table(&ws).contains("decoding: openai http://127.0.0.1:"), "{}", table(&ws));
    assert!(table(&ws).contains("temperature=0 max_completion_tokens=256"), "{}", table(&ws));
    ws.write("s.toml", &openai_sweep(&ws, &proxy.url, "temperature = 0.7\nseed = 7\nmax_tokens = 64\n"));
    let (code, _, err) = run_sweep(&ws, "s.toml", &[]);
    assert_eq!(code, 0, "{err}");
    let sent = bodies.lock().unwrap().clone();
    assert_eq!(check_requests(&sent, &lines), 36, "the baseline's 12 prompts asked again");
    for body in &sent[24..] {
        assert_eq!(
            (body["temperature"].as_f64(), body["seed"].as_i64(), body["max_completion_tokens"].as_u64()),
            (Some(0.7), Some(7), Some(64)),
            "{body}"
        );
    }
    let (code, _, err) = run_sweep(&ws, "s.toml", &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(bodies.lock().unwrap().len(), 36, "the same settings: every reply is cached");
    let footnote = table(&ws);
    assert!(footnote.contains("the rows were asked under different settings"), "{footnote}");
    assert!(footnote.contains("temperature=0.7 max_completion_tokens=64 seed=7 (1 row)"), "{footnote}");

    // `eval` with the recorded settings asks the model again once, then hits the cache.
    let model = run["model"].as_str().unwrap().to_string();
    for expected in [48, 48] {
        let (code, _, err) = eval(&ws, &model);
        assert_eq!(code, 0, "{err}");
        assert_eq!(bodies.lock().unwrap().len(), expected, "{err}");
    }
}

/// `ftsweep eval MODEL --sweep drone` with the test key.
fn eval(ws: &Workspace, model: &str) -> (i32, String, String) {
    let out = ws
        .cmd()
        .args(["eval", "--model", model, "--sweep", "drone"])
        .env("FTSWEEP_TEST_KEY", KEY)
        .output()
        .expect("running ftsweep");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_text_grader_on_tool_call_references_is_refused() {
    let ws = Workspace::new();
    let text = sweep(&ws, "provider = \"local\"\nbase_model = \"local/ngram\"", HP, "exact_match", "", "");
    let path = ws.write("s.toml", &text);
    assert_refused(&ws, &path, &["valid.jsonl:1:", "the grader `exact_match` compares text", "type = \"tool_call\""]);
    // Without an [evaluation] table the default exact match is refused the same way.
    let bare = text.split("[evaluation]").next().unwrap().to_string();
    let path = ws.write("bare.toml", &bare);
    assert_refused(&ws, &path, &["valid.jsonl:1:", "`exact_match`", "(12 of 12 references do)"]);
}

#[test]
fn decoding_settings_are_checked() {
    let ws = Workspace::new();
    for (line, key) in [
        ("temperature = 2.5", "evaluation.temperature"),
        ("top_p = 0", "evaluation.top_p"),
        ("max_tokens = 0", "evaluation.max_tokens"),
        ("top_k = 5", "top_k"),
    ] {
        let text = sweep(&ws, "provider = \"local\"\nbase_model = \"local/ngram\"", HP, "tool_call", line, "");
        let path = ws.write("s.toml", &text);
        assert_refused(&ws, &path, &[key]);
    }
}

#[test]
fn serve_answers_tool_calls_and_refuses_a_malformed_tools_list() {
    let ws = Workspace::new();
    let server = Server::start(&ws, "serve.db", KEY);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (code, _, err) = {
        ws.write("s.toml", &openai_sweep(&ws, &server.url, ""));
        run_sweep(&ws, "s.toml", &[])
    };
    assert_eq!(code, 0, "{err}");
    let model = ws.run(&["best", "drone"]).1.trim().to_string();
    let line = &lines()[0];
    let client = reqwest::Client::new();
    let post = |body: Value| {
        let request = client.post(format!("{}/chat/completions", server.url)).bearer_auth(KEY).json(&body);
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let prompt = json!(line["messages"].as_array().unwrap()[..2]);
    let asked = json!({"model": model, "messages": prompt, "tools": line["tools"], "parallel_tool_calls": false});
    let (status, answer) = runtime.block_on(post(asked.clone()));
    assert_eq!(status, 200, "{answer}");
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{answer}");
    assert!(choice["message"]["content"].is_null(), "{answer}");
    let call = &choice["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"), "{answer}");
    assert_eq!((call["type"].as_str(), call["function"]["name"].as_str()), (Some("function"), Some("take_off")));
    let arguments: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"altitude_m": 50}));

    // A prompt that carries an earlier call and its answer is accepted.
    let mut history = prompt.as_array().unwrap().clone();
    history.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
    history.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "airborne"}));
    history.push(json!({"role": "user", "content": "Land right here."}));
    let (status, answer) = runtime.block_on(post(json!({"model": model, "messages": history, "tools": line["tools"]})));
    assert_eq!(status, 200, "{answer}");

    // Malformed tool settings are a 400 in OpenAI's error shape, naming the parameter.
    let with = |key: &str, value: Value| {
        let mut body = asked.clone();
        body[key] = value;
        body
    };
    for (body, param) in [
        (with("tools", json!("take_off")), "tools"),
        (with("tools", json!([{"type": "function"}])), "tools[0].function"),
        (with("tools", json!([{"type": "function", "function": {"name": "take off"}}])), "tools[0].function.name"),
        (with("tools", json!([{"type": "web", "function": {"name": "f"}}])), "tools[0].type"),
        (with("tool_choice", json!("sometimes")), "tool_choice"),
        (with("tool_choice", json!({"type": "function", "function": {"name": "nope"}})), "tool_choice"),
        (json!({"model": model, "messages": prompt, "tool_choice": "auto"}), "tool_choice"),
        (with("messages", json!([{"role": "tool", "content": "x"}])), "messages[0].tool_call_id"),
    ] {
        let (status, error) = runtime.block_on(post(body.clone()));
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
        assert_eq!(error["error"]["param"], param, "{body}: {error}");
        assert!(error["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{error}");
    }
}

#[test]
fn a_tool_calling_sweep_on_the_together_provider_sends_the_tools() {
    let ws = Workspace::new();
    let server = Server::start_args(&ws, "serve.db", KEY, &["--protocol", "together", "--max-running", "4"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let proxy = runtime
        .block_on(start_proxy(server.url.clone(), Faults { chat_bodies: Some(bodies.clone()), ..Faults::default() }));
    let head = "provider = \"together\"\nbase_model = \"meta-llama/Meta-Llama-3.1-8B-Instruct-Reference\"";
    let tail = format!(
        "[pricing]\ntraining_per_million = 0.48\ninput_per_million = 0.2\noutput_per_million = 0.2\n\n\
         [together]\nbase_url = \"{}\"\napi_key_env = \"FTSWEEP_TEST_KEY\"\n",
        proxy.url
    );
    let hp = "n_epochs = 3\nlearning_rate = 0.00001\nbatch_size = 8";
    ws.write("s.toml", &sweep(&ws, head, hp, "tool_call", "top_p = 0.5\n", &tail));
    let (code, _, err) = run_sweep(&ws, "s.toml", &[]);
    assert_eq!(code, 0, "{err}");
    let sent: Vec<Value> =
        bodies.lock().unwrap().iter().filter(|b| b["messages"].as_array().unwrap().len() > 1).cloned().collect();
    assert_eq!(check_requests(&sent, &lines()), 24, "the run's and the baseline's 12 prompts");
    assert!(sent.iter().all(|b| b["max_tokens"] == 256 && b["top_p"] == 0.5 && b["temperature"] == 0.0), "{sent:?}");
    let rows = ws.json(&["leaderboard", "drone", "--json"]);
    let run = rows.as_array().unwrap().iter().find(|r| r["is_baseline"] == false).unwrap();
    eprintln!("together run: {}", run["scores"]);
    assert!(run["scores"]["tool_call"].as_f64().unwrap() > 0.0, "calls are graded: {}", run["scores"]);
}
