//! `ftsweep train` (the local model family trained by Hugging Face Trainer conventions) and
//! `ftsweep serve`'s LoRA adapter endpoints (vLLM's `load_lora_adapter` / `unload_lora_adapter`),
//! through the real binary and real HTTP on 127.0.0.1.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

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
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("ftsweep"))
        .args(train_args(&out, 3, &["--step-delay-ms", "100"]))
        .current_dir(ws.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting ftsweep train");
    // Waits for training to be under way (a few steps written).
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(out.join("metrics.jsonl")).map_or(0, |t| t.lines().count()) < 3 {
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
    // Every line written is whole.
    assert!(metrics(&out).len() >= 3);
}
