//! Data preparation: `data check|stats|split`, and the checks and cost
//! estimates of `plan` and `run`, on the real binary.

use serde_json::Value;

use crate::util::{Workspace, example_data, root, sweep_toml};

#[test]
fn check_passes_the_examples_and_names_each_broken_line() {
    let ws = Workspace::new();
    let (code, out, err) =
        ws.run(&["data", "check", &example_data("topics-train.jsonl"), &example_data("topics-valid.jsonl")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("topics-train.jsonl") && out.contains("723"), "{out}");

    let good = std::fs::read_to_string(root().join("examples/data/topics-train.jsonl")).unwrap();
    let mut lines: Vec<&str> = good.lines().take(12).collect();
    lines[2] = r#"{"messages":[{"role":"bot","content":"x"},{"role":"assistant","content":"y"}]}"#;
    lines[4] = "{\"messages\": [";
    lines[6] = r#"{"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"y","weight":2}]}"#;
    let bad = ws.write("bad.jsonl", &(lines.join("\n") + "\n"));
    let (code, out, err) = ws.run(&["data", "check", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(out.contains("bad.jsonl:3: error:") && out.contains("unknown_role"), "{out}");
    assert!(out.contains("bad.jsonl:5: error:") && out.contains("not_json"), "{out}");
    assert!(out.contains("bad.jsonl:7: error:") && out.contains("bad_weight"), "{out}");
    assert!(out.contains("too_few_examples"), "9 valid examples are too few: {out}");
    assert!(err.contains("4 error(s)"), "{err}");

    let json = ws.run(&["data", "check", bad.to_str().unwrap(), "--json"]);
    assert_eq!(json.0, 2);
    let v: Value = serde_json::from_str(&json.1).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["files"][0]["counts"]["not_json"], 1);
}

#[test]
fn stats_reports_tokens_percentiles_and_labels() {
    let ws = Workspace::new();
    let (code, out, err) = ws.run(&["data", "stats", &example_data("topics-train.jsonl"), "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["examples"], 723);
    assert_eq!(v["distinct_replies"], 21);
    assert_eq!(v["labels"].as_array().unwrap().len(), 21);
    assert_eq!(v["labels"][0]["label"], "trivia");
    let t = &v["total_tokens"];
    assert!(t["p5"].as_u64() <= t["p50"].as_u64() && t["p50"].as_u64() <= t["p95"].as_u64());
    assert_eq!(v["billing_tokens"], 59054, "o200k_base, cookbook rule");
}

#[test]
fn split_is_deterministic_stratified_and_refuses_bad_input() {
    let ws = Workspace::new();
    let src = example_data("topics-train.jsonl");
    let run = |name: &str| {
        let (train, valid) = (ws.path(&format!("{name}-t.jsonl")), ws.path(&format!("{name}-v.jsonl")));
        let args = [
            "data",
            "split",
            &src,
            "--valid",
            "0.25",
            "--seed",
            "7",
            "--out-train",
            train.to_str().unwrap(),
            "--out-valid",
            valid.to_str().unwrap(),
            "--json",
        ];
        let (code, out, err) = ws.run(&args);
        assert_eq!(code, 0, "{err}");
        (serde_json::from_str::<Value>(&out).unwrap(), std::fs::read(train).unwrap(), std::fs::read(valid).unwrap())
    };
    let (a, at, av) = run("a");
    let (_, bt, bv) = run("b");
    assert_eq!((at, av), (bt, bv), "same seed, same files");
    assert_eq!(a["stratified"], true);
    assert_eq!(a["train"].as_u64().unwrap() + a["valid"].as_u64().unwrap(), 723);
    let (code, _, err) = ws.run(&["data", "split", &src, "--valid", "1.5"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn plan_estimates_tokens_and_dollars_for_an_openai_sweep() {
    let ws = Workspace::new();
    let sweep = root().join("sweeps/openai-3x3x3.toml");
    let (code, out, err) = ws.run(&["plan", sweep.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 27);
    let per_epoch = v["billing_tokens_per_epoch"].as_u64().unwrap();
    for r in runs {
        let epochs = r["n_epochs"].as_u64().unwrap();
        assert_eq!(r["estimated_trained_tokens"].as_u64().unwrap(), per_epoch * epochs);
        let training = r["estimated_training_cost_usd"].as_f64().unwrap();
        assert!((training - (per_epoch * epochs) as f64 * 5.0 / 1e6).abs() < 1e-9, "gpt-4.1-mini trains at $5/M");
        assert!(r["estimated_cost_usd"].as_f64().unwrap() > training, "evaluation costs too");
    }
    let total = v["estimated_cost_usd"].as_f64().unwrap();
    let sum: f64 = runs.iter().map(|r| r["estimated_cost_usd"].as_f64().unwrap()).sum();
    assert!(total > sum && total < sum + 0.1, "the total adds the baseline's evaluation: {total} vs {sum}");
    assert_eq!(v["estimated_trained_tokens"].as_u64().unwrap(), per_epoch * 9 * (1 + 3 + 8));
    assert!(!ws.db().exists(), "plan writes nothing");

    let (code, out, _) = ws.run(&["plan", sweep.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("estimated $") && out.contains("gpt-4.1-mini"), "{out}");
}

#[test]
fn auto_epochs_are_estimated_and_marked() {
    let ws = Workspace::new();
    let sweep =
        ws.write("s.toml", &sweep_toml("s", "n_epochs = \"auto\"\nlearning_rate_multiplier = 1.0\nbatch_size = 8"));
    let v = ws.json(&["plan", sweep.to_str().unwrap(), "--json"]);
    let r = &v["runs"][0];
    assert_eq!(r["n_epochs"], "auto");
    assert_eq!(r["epochs_estimated"], true);
    assert_eq!(r["estimated_trained_tokens"].as_u64().unwrap(), 3 * v["billing_tokens_per_epoch"].as_u64().unwrap());
}

#[test]
fn run_refuses_to_spend_without_confirmation_when_it_cannot_ask() {
    let ws = Workspace::new();
    let sweep = root().join("sweeps/openai-3x3x3.toml");
    // A key is set: without one, `run` stops at the key, before asking.
    let out = ws.cmd().args(["run", sweep.to_str().unwrap()]).env("OPENAI_API_KEY", "sk-unused").output().unwrap();
    let (code, out, err) =
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("refusing to spend without confirmation") && err.contains("--yes"), "{err}");
    assert!(!ws.db().exists(), "nothing was written");
}

#[test]
fn plan_and_run_stop_on_data_errors() {
    let ws = Workspace::new();
    let few = std::fs::read_to_string(root().join("examples/data/topics-train.jsonl")).unwrap();
    let few: String = few.lines().take(5).map(|l| format!("{l}\n")).collect();
    let small = ws.write("few.jsonl", &few);
    let text = sweep_toml("s", "n_epochs = 1\nlearning_rate_multiplier = 1.0\nbatch_size = 8")
        .replace(&example_data("topics-train.jsonl"), small.to_str().unwrap());
    let sweep = ws.write("s.toml", &text);
    for command in ["plan", "run"] {
        let (code, _, err) = ws.run(&[command, sweep.to_str().unwrap()]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("too_few_examples"), "{err}");
        assert!(!ws.db().exists());
    }
}

#[test]
fn split_explains_bad_fractions_and_refuses_to_overwrite() {
    let ws = Workspace::new();
    let src = ws.write("in.jsonl", &std::fs::read_to_string(example_data("topics-train.jsonl")).unwrap());
    let src = src.to_str().unwrap();
    let (code, _, err) = ws.run(&["data", "split", src, "--valid", "1.5"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("between 0 and 1") && err.contains("hint: pass --valid as the share"), "{err}");
    let (_, help, _) = ws.run(&["data", "split", "--help"]);
    assert!(help.contains("The seed of the shuffle"), "{help}");
    assert!(help.contains("--force"), "{help}");

    let (code, _, err) = ws.run(&["data", "split", src]);
    assert_eq!(code, 0, "{err}");
    let train = ws.path("in-train.jsonl");
    let first = std::fs::read(&train).unwrap();
    // A re-run with another seed refuses, names both files and writes nothing.
    let (code, out, err) = ws.run(&["data", "split", src, "--seed", "9"]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("in-train.jsonl` and `") && err.contains("already exist; nothing was written"), "{err}");
    assert!(err.contains("hint: pass --force"), "{err}");
    assert_eq!(std::fs::read(&train).unwrap(), first);
    let (code, out, err) = ws.run(&["data", "split", src, "--seed", "9", "--force"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replaced the existing") && out.contains("in-valid.jsonl"), "{out}");
    assert_ne!(std::fs::read(&train).unwrap(), first);
    // The input is never an output.
    let (code, _, err) = ws.run(&["data", "split", src, "--out-train", src, "--force"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is the input file"), "{err}");
}

#[test]
fn check_counts_the_overlap_and_lists_problems_in_line_order() {
    let ws = Workspace::new();
    let good = std::fs::read_to_string(example_data("topics-train.jsonl")).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    let valid = ws.write("valid.jsonl", &format!("{}\n{}\n", lines[100], lines[0]));
    let v = ws.json(&["data", "check", &example_data("topics-train.jsonl"), valid.to_str().unwrap(), "--json"]);
    assert_eq!(v["files"][1]["counts"]["overlap"], 1, "{}", v["files"][1]);
    let (code, out, _) = ws.run(&["data", "check", &example_data("topics-train.jsonl"), valid.to_str().unwrap()]);
    assert_eq!(code, 0);
    let row = out.lines().find(|l| l.contains("valid.jsonl ")).unwrap();
    let cells: Vec<&str> = row.split('┆').map(str::trim).collect();
    assert_eq!(cells[4], "1", "the warnings column counts the overlap: {row}");
    assert_eq!(out.matches("[overlap]").count(), 1, "{out}");

    // Problems of different kinds come out in line order.
    let mut bad: Vec<&str> = lines[..12].to_vec();
    bad[2] = r#"{"messages":[{"role":"bot","content":"x"},{"role":"assistant","content":"y"}]}"#;
    bad[4] = "{\"messages\": [";
    bad[6] = r#"{"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"y","weight":2}]}"#;
    let bad = ws.write("bad.jsonl", &(bad.join("\n") + "\n"));
    let (code, out, _) = ws.run(&["data", "check", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    let at = |s: &str| out.find(s).unwrap_or_else(|| panic!("{s} in {out}"));
    assert!(at("bad.jsonl:3: error") < at("bad.jsonl:5: error"), "{out}");
    assert!(at("bad.jsonl:5: error") < at("bad.jsonl:7:"), "{out}");
}

#[test]
fn stats_names_the_tokenizer_of_an_unknown_model() {
    let ws = Workspace::new();
    let (code, out, err) = ws.run(&["data", "stats", &example_data("topics-train.jsonl"), "--model", "foo-bar"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: unknown model `foo-bar`: tokens are counted with o200k_base and a limit of 65536"),
        "{err}"
    );
    assert!(err.contains("hint: pass --model"), "{err}");
    assert!(out.contains("o200k_base, limit 65536 per example"), "{out}");
    let (_, _, err) =
        ws.run(&["data", "stats", &example_data("topics-train.jsonl"), "--model", "gpt-4o-mini-2024-07-18"]);
    assert!(!err.contains("unknown model"), "{err}");
}

#[test]
fn check_refuses_a_line_too_big_to_parse_and_names_it() {
    let ws = Workspace::new();
    let good = std::fs::read_to_string(example_data("topics-train.jsonl")).unwrap();
    // 50,000 tiny messages on one line: 1.5 MB, but more JSON values than any trainable example.
    let tiny = r#"{"role":"user","content":"x"},"#.repeat(50_000);
    let big = format!(r#"{{"messages":[{tiny}{{"role":"assistant","content":"y"}}]}}"#);
    let lines: Vec<&str> = good.lines().take(11).collect();
    let file = ws.write("big.jsonl", &format!("{}\n{big}\n{}\n", lines[..5].join("\n"), lines[5..].join("\n")));
    let (code, out, err) = ws.run(&["data", "check", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(out.contains("big.jsonl:6: error: the line holds over 200000 JSON values"), "{out}");
    assert!(out.contains("[line_too_long]"), "{out}");
    assert!(err.contains("1 error(s)"), "{err}");
}
