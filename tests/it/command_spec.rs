//! The sweep file of `provider = "command"`: the example sweeps plan, and a
//! bad `[command]`, `[engine]`, config template or free hyperparameter is
//! refused before anything is written, naming the file, the line and the fix.

use crate::util::{Workspace, assert_refused, example_data, root};

/// A command sweep over the example data: `[command]` at line 8, `train` on
/// lines 9 and 10, `inference_url` at 11, `[hyperparameters]` at 13 (lines
/// 14 to 16); `extra` is appended (line 17 on).
fn command_toml(extra: &str) -> String {
    format!(
        r#"name = "cmd"
provider = "command"
base_model = "Qwen/Qwen2.5-0.5B-Instruct"
training_file = "{train}"
validation_file = "{valid}"
seed = 42

[command]
train = ["python3", "trainers/trl_sft.py", "--lr", "{{learning_rate}}", "--epochs", "{{n_epochs}}",
         "--lora-r", "{{lora_r}}", "--output-dir", "{{output_dir}}"]
inference_url = "http://127.0.0.1:8000/v1"

[hyperparameters]
n_epochs = [1, 2]
learning_rate = [1e-4, 2e-4]
lora_r = [8, 16]
{extra}"#,
        train = example_data("topics-train.jsonl"),
        valid = example_data("topics-valid.jsonl"),
    )
}

/// Writes `files` (name, text) and runs `plan` and `run` on `cmd.toml`:
/// both exit with 2, print nothing on stdout, mention every `needles` and a
/// hint, and leave no database behind.
fn rejected(files: &[(&str, &str)], needles: &[&str]) {
    rejected_bytes(&files.iter().map(|(name, text)| (*name, text.as_bytes())).collect::<Vec<_>>(), needles);
}

/// [`rejected`] with files of any bytes.
fn rejected_bytes(files: &[(&str, &[u8])], needles: &[&str]) {
    let ws = Workspace::new();
    for (name, bytes) in files {
        std::fs::write(ws.path(name), bytes).expect("writing a fixture");
    }
    assert_refused(&ws, &ws.path("cmd.toml"), needles);
}

#[test]
fn the_example_command_sweeps_plan_twelve_runs_with_their_engine_and_no_price() {
    for (file, engine, says) in [
        ("sweeps/command.toml", serde_json::json!({ "type": "local", "gpus": [] }), "engine: local"),
        (
            "sweeps/command-ray.toml",
            serde_json::json!({
                "type": "ray", "address": "http://127.0.0.1:8265", "num_gpus": 0.0, "num_cpus": 1.0, "runtime_env": null
            }),
            "num_gpus 0: the jobs get no GPU",
        ),
    ] {
        let ws = Workspace::new();
        let sweep = root().join(file);
        let sweep = sweep.to_str().unwrap();
        let (code, out, err) = ws.run(&["plan", sweep]);
        assert_eq!(code, 0, "{file}:\n{err}");
        // The free names are columns, by their short forms.
        let header = out.lines().find(|l| l.contains("n_epochs")).unwrap_or_default();
        for column in ["n_epochs", "lr_mult", "batch", "seed"] {
            assert!(header.contains(column), "{file}: column {column}: {header}");
        }
        assert!(out.contains("12 runs (12 to train)"), "{file}:\n{out}");
        assert!(out.contains(says), "{file}:\n{out}");
        assert!(out.contains("inference: http://127.0.0.1:8000/v1"), "{file}:\n{out}");
        assert!(out.contains("no price: a trainer command trains on your own hardware"), "{file}:\n{out}");
        assert!(!out.contains("add a [pricing] table"), "{file}:\n{out}");
        let plan = ws.json(&["plan", "--json", sweep]);
        assert_eq!(plan["provider"], "command", "{file}");
        assert_eq!(plan["engine"], engine, "{file}");
        assert_eq!(plan["price_per_million"], serde_json::Value::Null, "{file}");
        assert!(plan["command"]["output_root"].as_str().unwrap().ends_with("/runs"), "{file}: {plan}");
        let runs = plan["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 12, "{file}");
        let values: std::collections::BTreeSet<String> = runs
            .iter()
            .map(|r| format!("{} {} {}", r["n_epochs"], r["learning_rate_multiplier"], r["batch_size"]))
            .collect();
        assert_eq!(values.len(), 12, "{file}: every point of the grid once: {values:?}");
        assert!(!ws.db().exists(), "plan writes nothing");
    }
}

#[test]
fn a_sweeps_own_names_are_plan_columns_and_nest_the_grid_in_the_order_written() {
    let ws = Workspace::new();
    let path = ws.write(
        "cmd.toml",
        &command_toml("[engine]\ntype = \"ray\"\naddress = \"http://10.1.2.3:8265\"\nnum_gpus = 1\n"),
    );
    let (code, out, err) = ws.run(&["plan", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let header = out.lines().find(|l| l.contains("n_epochs")).unwrap_or_default();
    assert!(header.contains("learning_rate") && header.contains("lora_r"), "{header}");
    assert!(out.contains("8 runs (8 to train)"), "{out}");
    assert!(out.contains("engine: Ray jobs at http://10.1.2.3:8265, 1 GPU(s) per job"), "{out}");
    let plan = ws.json(&["plan", "--json", path.to_str().unwrap()]);
    let runs = plan["runs"].as_array().unwrap();
    // n_epochs outermost, then learning_rate, then lora_r (fastest).
    let order: Vec<String> =
        runs.iter().map(|r| format!("{} {} {}", r["n_epochs"], r["learning_rate"], r["lora_r"])).collect();
    assert_eq!(order[..3], ["1 0.0001 8", "1 0.0001 16", "1 0.0002 8"], "{order:?}");
}

#[test]
fn an_unknown_placeholder_is_refused_at_its_line_with_the_known_ones() {
    let text = command_toml("").replace("lora_r = [8, 16]\n", "");
    rejected(
        &[("cmd.toml", &text)],
        &[
            "cmd.toml:10: `command.train`: unknown placeholder `{lora_r}`",
            "hint: add `lora_r` under [hyperparameters], or use one of the known placeholders: {n_epochs}, \
             {learning_rate}, {seed}, {base_model}",
        ],
    );
}

#[test]
fn successive_halving_without_init_from_is_refused() {
    let halving = command_toml("[search]\nstrategy = \"successive_halving\"\nmax_epochs = 2\n")
        .replace("n_epochs = [1, 2]\n", "");
    rejected(
        &[("cmd.toml", &halving)],
        &[
            "cmd.toml:9: `command.train`",
            "`train` never uses it: each continuation would train again from the base model",
        ],
    );
    // `{init_from}` in the config template is enough; a template without it is not.
    let template = halving.replace("inference_url = ", "config_template = \"axolotl.yml\"\ninference_url = ");
    rejected(
        &[("cmd.toml", &template), ("axolotl.yml", "base_model: {base_model}\nlora_r: {lora_r}\n")],
        &["cmd.toml:9: `command.train`", "neither `train` nor the config template uses it"],
    );
    let ws = Workspace::new();
    ws.write("axolotl.yml", "base_model: {base_model}\nlora_model_dir: {init_from}\n");
    let path = ws.write("cmd.toml", &template);
    let (code, out, err) = ws.run(&["plan", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rung 1: the best 2 configurations continue from their own models to 2 epochs"), "{out}");
    assert!(!out.contains('$'), "no amount in USD: {out}");
}

#[test]
fn a_config_template_is_checked_at_its_own_lines() {
    let text = command_toml("").replace("inference_url = ", "config_template = \"axolotl.yml\"\ninference_url = ");
    rejected(
        &[
            ("cmd.toml", &text),
            ("axolotl.yml", "base_model: {base_model}\nlora_r: {lora_r}\nlora_alpha: {lora_alpha}\n"),
        ],
        &[
            "axolotl.yml:3: unknown placeholder `{lora_alpha}`",
            "hint: add `lora_alpha` under [hyperparameters]",
            "{config}",
        ],
    );
    rejected(
        &[("cmd.toml", &text), ("axolotl.yml", "# {{literal}}\nbad: {lora_r\n")],
        &["axolotl.yml:2: unmatched `{`"],
    );
    rejected(&[("cmd.toml", &text)], &["cmd.toml:11: `command.config_template`", "does not exist"]);
    rejected_bytes(
        &[("cmd.toml", text.as_bytes()), ("axolotl.yml", b"lora_r: {lora_r}\n\xff\xfe\n")],
        &["cmd.toml:11: `command.config_template`", "UTF-8"],
    );
}

#[test]
fn a_command_table_with_another_provider_is_refused() {
    let text = command_toml("")
        .replace("provider = \"command\"", "provider = \"local\"")
        .replace("Qwen/Qwen2.5-0.5B-Instruct", "local/ngram");
    rejected(
        &[("cmd.toml", &text)],
        &[
            "cmd.toml:8: `command`: a [command] table only applies to `provider = \"command\"`",
            "hint: remove the table",
        ],
    );
}

#[test]
fn a_ray_setting_under_a_local_engine_is_refused_at_its_line() {
    let text = command_toml("[engine]\ntype = \"local\"\naddress = \"http://127.0.0.1:8265\"\n");
    rejected(
        &[("cmd.toml", &text)],
        &["cmd.toml:19: `engine.address`: `address` is a setting of the ray engine", "set `type = \"ray\"`"],
    );
}

#[test]
fn plain_http_to_another_hosts_inference_server_is_refused() {
    let text = command_toml("").replace("127.0.0.1:8000", "192.168.1.20:8000");
    rejected(
        &[("cmd.toml", &text)],
        &["cmd.toml:11: `command.inference_url`: plain http is refused for `192.168.1.20`", "https://"],
    );
}

#[test]
fn auto_is_refused_for_a_free_name() {
    let text = command_toml("").replace("lora_r = [8, 16]", "lora_r = [8, \"auto\"]");
    rejected(
        &[("cmd.toml", &text)],
        &["cmd.toml:16: `hyperparameters.lora_r`: a lora_r cannot be \"auto\"", "no default for `{lora_r}`"],
    );
}

#[test]
fn a_hyperparameter_the_command_never_uses_is_warned_of() {
    let ws = Workspace::new();
    let path = ws.write("cmd.toml", &command_toml("").replace("\"--lora-r\", \"{lora_r}\", ", ""));
    let (code, _, err) = ws.run(&["plan", path.to_str().unwrap()]);
    assert_eq!(code, 0, "a warning, not an error:\n{err}");
    assert!(
        err.contains(
            "cmd.toml:16: `hyperparameters.lora_r`: `train` never uses `{lora_r}`: runs that differ in \
             `lora_r` would train the same model"
        ),
        "{err}"
    );
    assert!(err.starts_with("warning: "), "{err}");
    assert!(!err.contains("learning_rate`"), "the others are used:\n{err}");
}

#[test]
fn an_output_root_that_is_a_file_is_refused() {
    let text = command_toml("").replace("inference_url = ", "output_root = \"out\"\ninference_url = ");
    rejected(
        &[("cmd.toml", &text), ("out", "a file")],
        &["cmd.toml:11: `command.output_root`", "out` is not a directory"],
    );
}
