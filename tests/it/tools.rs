//! Tool-calling data (`tools`, `tool_calls`, `parallel_tool_calls`): its tokens, replies and split,
//! on the real binary, with tests/data/drone-tools.jsonl (12 lines in the shape of OpenAI's
//! function-calling fine-tuning example: six tool definitions on every line, one or two calls as
//! the reply).

use serde_json::Value;

use crate::util::{Workspace, root};

fn fixture() -> String {
    root().join("tests/data/drone-tools.jsonl").display().to_string()
}

#[test]
fn stats_count_tool_definitions_and_calls() {
    let ws = Workspace::new();
    let (code, out, err) = ws.run(&["data", "stats", &fixture(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["examples"], 12);
    // take_off({"altitude_m":50}) is written twice with other spacing: one reply. The others are
    // ten more calls and one reply of two parallel calls.
    assert_eq!(v["distinct_replies"], 11);
    assert!(v["labels"].is_null(), "11 replies of 12 examples are no label set: {}", v["labels"]);
    // A call's name and arguments are reply tokens.
    assert!(v["assistant_tokens"]["min"].as_u64().unwrap() >= 3, "{}", v["assistant_tokens"]);
    // The six tool definitions cost about 250 tokens on every line (cookbook rule, o200k_base).
    assert!(v["total_tokens"]["min"].as_u64().unwrap() > 250, "{}", v["total_tokens"]);
    assert_eq!(v["billing_tokens"], 3630);
    let (_, text, _) = ws.run(&["data", "stats", &fixture()]);
    assert!(text.contains("11 distinct replies, 3630 billed tokens per epoch"), "{text}");
}

#[test]
fn plan_prices_the_tool_definitions() {
    let ws = Workspace::new();
    let lines: Vec<String> = std::fs::read_to_string(fixture()).unwrap().lines().map(|l| format!("{l}\n")).collect();
    let train = ws.write("train.jsonl", &lines.concat());
    let valid = ws.write("valid.jsonl", &lines[9..].concat());
    let sweep = ws.write(
        "s.toml",
        &format!(
            r#"name = "drone"
provider = "openai"
base_model = "gpt-4.1-mini-2025-04-14"
training_file = "{}"
validation_file = "{}"

[hyperparameters]
n_epochs = [1, 3]
learning_rate_multiplier = 1.0
batch_size = 4

[evaluation]
metric = "tool_call"
"#,
            train.display(),
            valid.display()
        ),
    );
    let v = ws.json(&["plan", sweep.to_str().unwrap(), "--json"]);
    assert_eq!(v["billing_tokens_per_epoch"], 3630, "the same figure as `data stats`");
    assert_eq!(v["runs"][1]["estimated_trained_tokens"], 3 * 3630);
    let training = v["runs"][1]["estimated_training_cost_usd"].as_f64().unwrap();
    assert!((training - 3.0 * 3630.0 * 5.0 / 1e6).abs() < 1e-9, "{training}");
}

#[test]
fn split_stratifies_by_tool_call() {
    let ws = Workspace::new();
    let line = |i: usize, call: &str, args: &str| {
        format!(
            r#"{{"messages":[{{"role":"system","content":"drone"}},{{"role":"user","content":"request {i}"}},{{"role":"assistant","tool_calls":[{{"id":"c{i}","type":"function","function":{{"name":"{call}","arguments":{}}}}}]}}],"tools":[{{"type":"function","function":{{"name":"{call}","parameters":{{"type":"object","properties":{{}}}}}}}}]}}"#,
            Value::String(args.into())
        ) + "\n"
    };
    let mut text = String::new();
    for i in 0..30 {
        text += &line(i, "go_home", "{}");
    }
    for i in 30..40 {
        // Key order varies; the call is the same.
        let args = if i % 2 == 0 { r#"{"where": "pad", "id": 1}"# } else { r#"{"id":1,"where":"pad"}"# };
        text += &line(i, "land", args);
    }
    let src = ws.write("calls.jsonl", &text);
    let v = ws.json(&["data", "split", src.to_str().unwrap(), "--valid", "0.2", "--json"]);
    assert_eq!(v["stratified"], true, "{v}");
    let labels: Vec<(String, u64, u64)> = v["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["label"].as_str().unwrap().to_owned(), l["train"].as_u64().unwrap(), l["valid"].as_u64().unwrap()))
        .collect();
    assert_eq!(labels, [("go_home({})".to_owned(), 24, 6), (r#"land({"id":1,"where":"pad"})"#.to_owned(), 8, 2)]);
}
