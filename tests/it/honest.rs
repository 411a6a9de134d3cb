//! The local provider says what it cannot learn: `plan`, `run` and `resume` warn with the share of
//! validation references among the training replies, `plan --json` carries it, the leaderboard
//! notes the bound; and it learns tool calls, on tests/data/drone-cookbook.jsonl (100 lines in
//! the shape of OpenAI's cookbook drone_training.jsonl, written by scripts/gen-drone-data.py).

use serde_json::Value;

use crate::util::{Workspace, root, sweep_toml};

const FREE_TEXT: &str = "warning: the local provider picks among the";

/// The evaluation of the cookbook sweeps: OpenAI's exact function-call match.
const TOOL_CALL: &str = "tool_call\"\n\n[[evaluation.graders]]\ntype = \"tool_call";

/// A sweep file of the local provider over two data files, with one small run, ranked by `metric`
/// (the rest of the `[evaluation]` table may follow it).
fn local_sweep(name: &str, train: &str, valid: &str, metric: &str) -> String {
    format!(
        r#"name = "{name}"
provider = "local"
base_model = "local/ngram"
training_file = "{train}"
validation_file = "{valid}"

[hyperparameters]
n_epochs = 3
learning_rate_multiplier = 2.0
batch_size = 8

[evaluation]
metric = "{metric}"
"#
    )
}

/// A JSON-extraction line: every reply is distinct (a name and an order id).
fn extraction_line(i: usize) -> String {
    let name = ["Ada", "Ben", "Cleo", "Dan", "Eve"][i % 5];
    let reply = serde_json::json!({"name": format!("{name} {i}"), "order_id": 1000 + i}).to_string();
    serde_json::json!({"messages": [
        {"role": "system", "content": "Extract the customer's name and order id as JSON."},
        {"role": "user", "content": format!("Hi, I am {name} {i} and my order #{} has not arrived.", 1000 + i)},
        {"role": "assistant", "content": reply},
    ]})
    .to_string()
        + "\n"
}

fn cookbook(name: &str) -> String {
    root().join("tests/data").join(name).display().to_string()
}

#[test]
fn a_free_text_sweep_is_warned_of_and_its_leaderboard_notes_the_bound() {
    let ws = Workspace::new();
    let train = ws.write("train.jsonl", &(0..60).map(extraction_line).collect::<String>());
    let valid = ws.write("valid.jsonl", &(60..80).map(extraction_line).collect::<String>());
    let sweep = ws.write(
        "s.toml",
        &local_sweep("extract", &train.display().to_string(), &valid.display().to_string(), "exact_match"),
    );
    let s = sweep.to_str().unwrap();
    let warning = "warning: the local provider picks among the 60 replies seen in training; 0 of 20 validation \
                   references (0 %) are among them, so at most 0 % of its replies can be exactly right. Free-text \
                   replies need a hosted provider or your own trainer (provider = \"command\")\n";
    let (code, out, err) = ws.run(&["plan", s]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(warning), "{err}");
    assert!(!out.contains("warning"), "the warning is on stderr only: {out}");
    let v = ws.json(&["plan", s, "--json"]);
    assert_eq!(v["local_coverage"], serde_json::json!({"training_replies": 60, "covered": 0, "total": 20}));

    let note = "local provider: only 0 of 20 validation references (0 %) are replies it can give (it picks among the \
                60 training replies): at most 0 % of its replies can be exactly right.";
    let (code, out, err) = ws.run(&["run", s]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(warning), "{err}");
    assert!(out.contains(note), "{out}");
    let (_, board, _) = ws.run(&["leaderboard", "extract"]);
    assert!(board.contains(note), "{board}");
    let (_, markdown, _) = ws.run(&["leaderboard", "extract", "--markdown"]);
    assert!(markdown.contains(note), "{markdown}");
    let (code, _, err) = ws.run(&["resume", "extract"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(warning), "resume warns too: {err}");
    // Every run scores 0: no local model can give a reply it never saw.
    let rows = ws.json(&["leaderboard", "extract", "--json"]);
    assert!(rows.as_array().unwrap().iter().all(|r| r["score"] == 0.0), "{rows}");
}

#[test]
fn a_label_set_is_not_warned_of_unless_a_label_is_missing_from_training() {
    let ws = Workspace::new();
    let quickstart =
        ws.write("q.toml", &sweep_toml("q", "n_epochs = [1]\nlearning_rate_multiplier = [1.0]\nbatch_size = [32]"));
    let q = quickstart.to_str().unwrap();
    let (code, _, err) = ws.run(&["plan", q]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains(FREE_TEXT), "every quickstart reference is a training reply: {err}");
    let v = ws.json(&["plan", q, "--json"]);
    assert_eq!(v["local_coverage"], serde_json::json!({"training_replies": 21, "covered": 184, "total": 184}));
    let (code, out, err) = ws.run(&["run", q]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains(FREE_TEXT) && !out.contains("local provider:"), "{err}\n{out}");

    // One validation example whose label no training example has: the bound is stated, and what
    // to do about it, with no advice on free text.
    let line = |user: &str, label: &str| {
        serde_json::json!({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": label}]})
            .to_string()
            + "\n"
    };
    let train: String = (0..20).map(|i| line(&format!("question {i}"), ["yes", "no"][i % 2])).collect();
    let valid: String =
        (0..19).map(|i| line(&format!("ask {i}"), [" yes", "no\n"][i % 2])).chain([line("?", "maybe")]).collect();
    let (train, valid) = (ws.write("t.jsonl", &train), ws.write("v.jsonl", &valid));
    let sweep = ws.write(
        "l.toml",
        &local_sweep("labels", &train.display().to_string(), &valid.display().to_string(), "exact_match"),
    );
    let (code, _, err) = ws.run(&["plan", sweep.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(
            "picks among the 2 replies seen in training; 19 of 20 validation references (95 %) are among them, so at \
             most 95 % of its replies can be exactly right; the other 1 validation reference(s) appear in no training \
             example"
        ),
        "replies are compared trimmed: {err}"
    );
    assert!(!err.contains("Free-text"), "{err}");
    // Other providers have no such bound.
    let openai = std::fs::read_to_string(&sweep).unwrap().replace(
        "provider = \"local\"\nbase_model = \"local/ngram\"",
        "provider = \"openai\"\nbase_model = \"gpt-4.1-mini-2025-04-14\"",
    );
    let openai = ws.write("o.toml", &openai);
    let (code, out, err) = ws.run(&["plan", openai.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains(FREE_TEXT), "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["local_coverage"], Value::Null);
}

#[test]
fn cookbook_stats_and_split_treat_tool_calls_as_labels() {
    let ws = Workspace::new();
    let file = cookbook("drone-cookbook.jsonl");
    let v = ws.json(&["data", "stats", &file, "--json"]);
    assert_eq!(v["examples"], 100);
    // 28 calls, and the twice-encoded arguments of line 3 (as in the cookbook file) are another.
    assert_eq!(v["distinct_replies"], 29);
    let labels = v["labels"].as_array().unwrap_or_else(|| panic!("tool calls are labels: {v}"));
    assert_eq!(labels.len(), 29);
    assert_eq!(labels[0]["label"], "reject_request({})");
    assert_eq!(labels[0]["count"], 10);
    assert!(labels.iter().any(|l| l["label"] == r#"control_drone_movement({"direction":"forward","distance":100})"#));
    // The 16 tool definitions are in every line's tokens (cookbook rule, o200k_base).
    assert!(v["total_tokens"]["min"].as_u64().unwrap() > 800, "{}", v["total_tokens"]);
    assert_eq!(v["billing_tokens"], 83039);

    // The committed split is `data split`'s, stratified by call.
    let (train, valid) = (ws.path("train.jsonl"), ws.path("valid.jsonl"));
    let split = ws.json(&[
        "data",
        "split",
        &file,
        "--valid",
        "0.2",
        "--seed",
        "42",
        "--out-train",
        train.to_str().unwrap(),
        "--out-valid",
        valid.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(split["stratified"], true, "{split}");
    for (ours, committed) in [(&train, "drone-cookbook-train.jsonl"), (&valid, "drone-cookbook-valid.jsonl")] {
        assert_eq!(std::fs::read(ours).unwrap(), std::fs::read(cookbook(committed)).unwrap(), "{committed}");
    }
}

#[test]
fn a_local_sweep_learns_the_cookbook_tool_calls() {
    let ws = Workspace::new();
    let (train, valid) = (cookbook("drone-cookbook-train.jsonl"), cookbook("drone-cookbook-valid.jsonl"));
    let sweep = ws.write("s.toml", &local_sweep("drone", &train, &valid, TOOL_CALL));
    let s = sweep.to_str().unwrap();
    let v = ws.json(&["plan", s, "--json"]);
    assert_eq!(v["local_coverage"], serde_json::json!({"training_replies": 29, "covered": 29, "total": 29}));

    // The same calls written with other key order and spacing are the same replies.
    let respaced: String = std::fs::read_to_string(&valid)
        .unwrap()
        .lines()
        .map(|l| {
            let mut line: Value = serde_json::from_str(l).unwrap();
            let args = &mut line["messages"][2]["tool_calls"][0]["function"]["arguments"];
            if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(args.as_str().unwrap()) {
                let reversed: Vec<String> =
                    map.iter().rev().map(|(k, v)| format!("{}  :{v}", Value::String(k.clone()))).collect();
                *args = Value::String(format!("{{ {} }}", reversed.join(" ,")));
            }
            line.to_string() + "\n"
        })
        .collect();
    let respaced = ws.write("respaced.jsonl", &respaced);
    let other = ws.write("r.toml", &local_sweep("drone-respaced", &train, &respaced.display().to_string(), TOOL_CALL));
    let v = ws.json(&["plan", other.to_str().unwrap(), "--json"]);
    assert_eq!(v["local_coverage"]["covered"], 29, "{}", v["local_coverage"]);

    let (code, out, err) = ws.run(&["run", s, "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains(FREE_TEXT), "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    let run = rows.as_array().unwrap().iter().find(|r| r["kind"] == "run").unwrap();
    assert_eq!(
        (&run["status"], &run["metric"], &run["n_eval"]),
        (&"done".into(), &"tool_call".into(), &29.into()),
        "{run}"
    );
    // It learnt calls: better than the untrained baseline, which calls nothing (the score is
    // printed, not asserted beyond that).
    let score = run["score"].as_f64().unwrap();
    eprintln!("tool_call score of the local run on the cookbook split: {score:.3}");
    assert!(score > 0.0, "{run}");
    // The model's replies are the calls it learnt.
    let run_id = run["run_id"].as_str().unwrap();
    let c = ws.json(&["compare", "baseline", run_id, "--json"]);
    let replies: Vec<&str> =
        c["disagreements"].as_array().unwrap().iter().filter_map(|d| d["reply_b"].as_str()).collect();
    assert!(!replies.is_empty(), "{c}");
    // Shown as calls, `name({arguments})`, of the line's tools.
    let first: Value = serde_json::from_str(std::fs::read_to_string(&train).unwrap().lines().next().unwrap()).unwrap();
    let tools: Vec<&str> =
        first["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
    assert_eq!(tools.len(), 16);
    for reply in &replies {
        let name = reply.split_once('(').map(|(name, _)| name).unwrap_or_default();
        assert!(tools.contains(&name) && reply.ends_with(')'), "{reply}");
    }
}

#[test]
fn a_legacy_function_call_is_a_reply_as_data_check_counts_it() {
    let ws = Workspace::new();
    let line = |i: usize| {
        let call = serde_json::json!({"name": "climb", "arguments": format!("{{\"meters\": {}}}", 10 * (i % 2 + 1))});
        serde_json::json!({
            "messages": [
                {"role": "system", "content": "You fly a drone."},
                {"role": "user", "content": format!("climb {} meters now ({i})", 10 * (i % 2 + 1))},
                {"role": "assistant", "content": null, "function_call": call},
            ],
            "functions": [{"name": "climb", "parameters": {"type": "object", "properties": {"meters": {"type": "integer"}}}}],
        })
        .to_string()
            + "\n"
    };
    let train = ws.write("train.jsonl", &(0..12).map(line).collect::<String>());
    let valid = ws.write("valid.jsonl", &(12..16).map(line).collect::<String>());
    let stats = ws.json(&["data", "stats", train.to_str().unwrap(), "--json"]);
    assert_eq!(stats["distinct_replies"], 2, "{stats}");
    let sweep = ws.write("s.toml", &local_sweep("legacy", train.to_str().unwrap(), valid.to_str().unwrap(), TOOL_CALL));
    let s = sweep.to_str().unwrap();
    let v = ws.json(&["plan", s, "--json"]);
    assert_eq!(v["local_coverage"], serde_json::json!({"training_replies": 2, "covered": 4, "total": 4}));
    let (code, out, err) = ws.run(&["run", s, "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    let run = rows.as_array().unwrap().iter().find(|r| r["kind"] == "run").unwrap();
    // The calls' tokens are trained tokens, as `data check` bills them.
    assert_eq!(run["trained_tokens"], 3 * stats["billing_tokens"].as_u64().unwrap(), "{run}");
    eprintln!("tool_call score on the legacy function_call lines: {}", run["score"]);
}
