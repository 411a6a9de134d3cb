//! The sweep-file side of `provider = "together"` and `provider = "azure"`:
//! `plan` shows what each hyperparameter becomes in each hosted provider's
//! request and counts the deployments (Azure) or dedicated endpoints
//! (Together) in the cost; bad tables are refused with exit 2 and nothing
//! written.

use serde_json::Value;

use crate::util::{Workspace, assert_refused, sweep_toml};

/// Four hyperparameter lines: the tables appended start on line 22.
const TOGETHER_HP: &str = "n_epochs = [1, 3]\nlearning_rate = [0.00001, 0.0002]\nlora_r = [8]\nn_evals = [2]";

fn together_sweep(table: &str) -> String {
    sweep_toml("tg", TOGETHER_HP)
        .replace("provider = \"local\"", "provider = \"together\"")
        .replace("local/ngram", "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference")
        + table
}

const AZURE: &str = "[azure]\nendpoint = \"https://myres.openai.azure.com/\"\n\
    subscription = \"00000000-0000-0000-0000-000000000000\"\nresource_group = \"my-rg\"\naccount = \"myres\"\n";

/// Three hyperparameter lines: the tables appended start on line 21.
fn azure_sweep(table: &str) -> String {
    sweep_toml("az", "n_epochs = [1, 3]\nlearning_rate_multiplier = [1.0]\nbatch_size = [8]")
        .replace("provider = \"local\"", "provider = \"azure\"")
        .replace("local/ngram", "gpt-4.1-mini-2025-04-14")
        + table
}

const PRICING: &str = "[pricing]\ntraining_per_million = 2.0\ninput_per_million = 0.5\noutput_per_million = 0.5\n";

fn plan(ws: &Workspace, name: &str, text: &str) -> (String, Value) {
    let file = ws.write(name, text);
    let (code, out, err) = ws.run(&["plan", file.to_str().unwrap()]);
    assert_eq!(code, 0, "plan succeeds:\n{err}");
    let json = ws.json(&["plan", file.to_str().unwrap(), "--json"]);
    assert!(!ws.db().exists(), "plan writes nothing");
    (out, json)
}

fn field<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["request_fields"].as_array().unwrap().iter().find(|f| f["name"] == name).unwrap_or_else(|| panic!("{name}"))
}

#[test]
fn plan_of_a_together_sweep_maps_its_names_and_counts_its_endpoints() {
    let ws = Workspace::new();
    let table = "[together]\ninference = \"dedicated\"\nendpoint_usd_per_hour = 6.0\nendpoint_minutes = 10\n";
    let (out, json) = plan(&ws, "tg.toml", &(together_sweep(table) + PRICING));
    // The request fields, with the other hosted providers' for comparison.
    assert!(out.contains("together (this sweep)"), "{out}");
    assert!(out.contains("training_type.lora_r"), "{out}");
    let lora = field(&json, "lora_r");
    assert_eq!((&lora["field"], &lora["together"]), (&"training_type.lora_r".into(), &"training_type.lora_r".into()));
    assert_eq!((&lora["openai"], &lora["azure"]), (&Value::Null, &Value::Null));
    let epochs = field(&json, "n_epochs");
    assert_eq!(epochs["openai"], "method.supervised.hyperparameters.n_epochs");
    assert_eq!(field(&json, "n_evals")["field"], "n_evals");
    // 4 runs, an endpoint each, 10 minutes at $6/h: $4.
    assert!(out.contains("inference: a dedicated endpoint (1x_nvidia_h100_80gb_sxm) per model"), "{out}");
    assert!(out.contains("dedicated endpoints: 4 dedicated endpoints (4 runs) × 10 min at $6/h: $4.00"), "{out}");
    let d = &json["deployments"];
    assert_eq!((d["count"].as_u64(), d["upper_bound"].as_bool()), (Some(4), Some(false)), "{d}");
    assert_eq!(d["inference"], "dedicated");
    assert!((d["estimated_cost_usd"].as_f64().unwrap() - 4.0).abs() < 1e-9, "{d}");
    // The total holds the endpoints: runs + the baseline's evaluation + $4.
    let runs: f64 = json["runs"].as_array().unwrap().iter().map(|r| r["estimated_cost_usd"].as_f64().unwrap()).sum();
    let baseline = json["estimated_baseline_eval_cost_usd"].as_f64().unwrap();
    assert!((json["estimated_cost_usd"].as_f64().unwrap() - (runs + baseline + 4.0)).abs() < 1e-9, "{json}");
    // Together bills n_evals × the validation tokens besides the epochs' training tokens.
    let per_epoch = json["billing_tokens_per_epoch"].as_u64().unwrap();
    let one_epoch = json["runs"].as_array().unwrap().iter().find(|r| r["n_epochs"] == 1).unwrap();
    let extra = one_epoch["estimated_trained_tokens"].as_u64().unwrap() - per_epoch;
    assert!(extra > 0, "2 evaluations of the validation set are billed: {one_epoch}");
    let three = json["runs"].as_array().unwrap().iter().find(|r| r["n_epochs"] == 3).unwrap();
    assert_eq!(three["estimated_trained_tokens"].as_u64().unwrap(), 3 * per_epoch + extra);
    assert_eq!(json["prices_as_of"], "the sweep file's [pricing]");
}

#[test]
fn plan_of_a_together_sweep_without_prices_says_what_is_unknown() {
    let ws = Workspace::new();
    let (out, json) = plan(&ws, "tg.toml", &together_sweep(""));
    assert!(out.contains("no price is known for `meta-llama/Meta-Llama-3.1-8B-Instruct-Reference`"), "{out}");
    assert!(out.contains("add a [pricing] table"), "{out}");
    assert!(out.contains("inference: auto, serverless by the output name"), "{out}");
    assert!(out.contains("at most 4 dedicated endpoints (4 runs) × 20 min at an unknown hourly price: ?"), "{out}");
    assert!(out.contains("set `endpoint_usd_per_hour` under [together]"), "{out}");
    assert_eq!(json["estimated_cost_usd"], Value::Null);
    assert_eq!((json["price_per_million"].clone(), json["prices_as_of"].clone()), (Value::Null, Value::Null));
    assert_eq!(json["deployments"]["upper_bound"], true);
    // Serverless makes no endpoints.
    let (out, json) = plan(&ws, "s.toml", &(together_sweep("[together]\ninference = \"serverless\"\n") + PRICING));
    assert!(!out.contains("dedicated endpoints:"), "{out}");
    assert_eq!(json["deployments"], Value::Null);
    assert!(json["estimated_cost_usd"].as_f64().is_some(), "{json}");
}

#[test]
fn plan_of_an_azure_sweep_counts_every_deployment() {
    let ws = Workspace::new();
    // DeveloperTier (the default): no hosting fee; OpenAI's rates, labelled as such.
    let (out, json) = plan(&ws, "az.toml", &azure_sweep(AZURE));
    assert!(
        out.contains(
            "(SKU DeveloperTier, capacity 50) made for its evaluation and deleted after; the baseline through a \
             deployment of the base model (SKU GlobalStandard, deleted after)"
        ),
        "{out}"
    );
    assert!(out.contains("deployments: 3 deployments (2 runs + the baseline) × 20 min at $0/h"), "{out}");
    assert!(out.contains("OpenAI's rates for the same model") && out.contains("not checked"), "{out}");
    assert!(out.contains("method.supervised.hyperparameters.n_epochs"), "{out}");
    assert_eq!(field(&json, "n_epochs")["together"], "n_epochs");
    assert_eq!(json["deployments"]["count"], 3);
    assert_eq!(json["deployments"]["estimated_cost_usd"], 0.0);
    // A Standard deployment at $3/h, checkpoints evaluated: 2 runs + 2 earlier checkpoints of the
    // 3-epoch job, 20 minutes each ($4), the baseline's deployment bills no fee.
    let standard = azure_sweep(&format!(
        "{AZURE}deployment_sku = \"standard\"\ndeployment_usd_per_hour = 3.0\ndeployment_capacity = 10\n"
    ))
    .replace("metric = \"exact_match\"", "metric = \"exact_match\"\ncheckpoints = true");
    let (out, json) = plan(&ws, "std.toml", &standard);
    assert!(out.contains("SKU Standard, capacity 10"), "{out}");
    assert!(out.contains("at most 5 deployments (2 runs + 2 checkpoints + the baseline) × 20 min at $3/h"), "{out}");
    let d = &json["deployments"];
    assert!((d["estimated_cost_usd"].as_f64().unwrap() - 4.0).abs() < 1e-9, "{d}");
    assert_eq!((d["sku"].as_str(), d["baseline_sku"].as_str()), (Some("Standard"), Some("GlobalStandard")));
    let runs: f64 = json["runs"].as_array().unwrap().iter().map(|r| r["estimated_cost_usd"].as_f64().unwrap()).sum();
    let baseline = json["estimated_baseline_eval_cost_usd"].as_f64().unwrap();
    assert!((json["estimated_cost_usd"].as_f64().unwrap() - (runs + baseline + 4.0)).abs() < 1e-9, "{json}");
    // An existing deployment for the baseline is not counted; an unknown fee makes the total unknown.
    let (out, json) = plan(
        &ws,
        "b.toml",
        &azure_sweep(&format!("{AZURE}baseline_deployment = \"base\"\ndeployment_sku = \"Standard\"\n")),
    );
    assert!(out.contains("through the existing deployment `base` (never deleted)"), "{out}");
    assert!(out.contains("deployments: 2 deployments (2 runs) × 20 min at an unknown hourly price: ?"), "{out}");
    assert!(out.contains("set `deployment_usd_per_hour` under [azure]"), "{out}");
    assert_eq!(json["deployments"]["count"], 2);
    assert_eq!(json["estimated_cost_usd"], Value::Null);
}

#[test]
fn bad_together_and_azure_tables_are_refused_with_their_line_and_fix() {
    let ws = Workspace::new();
    let openai = sweep_toml("o", "n_epochs = [1]\nlearning_rate_multiplier = [1.0]\nbatch_size = [8]")
        .replace("provider = \"local\"", "provider = \"openai\"")
        .replace("local/ngram", "gpt-4.1-mini-2025-04-14");
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!("{openai}[together]\n"),
            vec!["x.toml:21:", "`together`", "only applies to `provider = \"together\"`"],
        ),
        (sweep_toml("l", "n_epochs = [1]") + AZURE, vec!["x.toml:19:", "`azure`", "only applies"]),
        (
            together_sweep("[together]\nhardware = \"h100\"\n"),
            vec!["x.toml:23:", "`together.hardware`", "unknown field"],
        ),
        (
            together_sweep("[together]\nbase_url = \"http://api.together.ai/v1\"\n"),
            vec!["x.toml:23:", "`together.base_url`", "plain http is refused"],
        ),
        (
            together_sweep("[together]\ntraining = \"full\"\ninference = \"serverless\"\n")
                .replace("lora_r = [8]", "weight_decay = [0.0]"),
            vec!["x.toml:24:", "`together.inference`", "dedicated endpoint"],
        ),
        (
            together_sweep("[together]\ntraining = \"full\"\n"),
            vec!["x.toml:14:", "`hyperparameters.lora_r`", "LoRA setting"],
        ),
        (azure_sweep(""), vec!["x.toml:2:", "`azure`", "needs an [azure] table"]),
        (
            azure_sweep(&AZURE.replace("00000000-0000-0000-0000-000000000000", "My Subscription")),
            vec!["x.toml:23:", "`azure.subscription`", "not a subscription id"],
        ),
        (
            azure_sweep(&format!("{AZURE}api_key_env = \"K\"\nentra_token_env = \"T\"\n")),
            vec!["x.toml:27:", "`azure.entra_token_env`", "give one"],
        ),
        (
            azure_sweep(AZURE).replace("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
            vec!["x.toml:3:", "`base_model`", "dated model snapshot"],
        ),
        (
            format!("{openai}[openai]\nauth = \"azure\"\napi_version = \"2025-04-01-preview\"\n"),
            vec!["x.toml:22:", "`openai.auth`", "`provider = \"azure\"`"],
        ),
    ];
    for (text, needles) in cases {
        let file = ws.write("x.toml", &text);
        assert_refused(&ws, &file, &needles);
    }
}

#[test]
fn run_asks_before_spending_an_unknown_amount_on_together_and_azure() {
    let ws = Workspace::new();
    // Loopback ports nothing listens on: a run that went ahead would fail there, after writing.
    let together = together_sweep("[together]\nbase_url = \"http://127.0.0.1:9/v1\"\n");
    let azure = AZURE.replace("https://myres.openai.azure.com/", "http://127.0.0.1:9")
        + "arm_token_env = \"AZURE_ARM_TOKEN\"\n";
    let azure = azure_sweep(&azure).replace("gpt-4.1-mini-2025-04-14", "o4-mini-2025-04-16");
    for (name, text, var) in [("tg.toml", together, "TOGETHER_API_KEY"), ("az.toml", azure, "AZURE_OPENAI_API_KEY")] {
        let file = ws.write(name, &text);
        let plan = ws.json(&["plan", file.to_str().unwrap(), "--json"]);
        assert_eq!(plan["estimated_cost_usd"], Value::Null, "{name}: the price is unknown");
        // Azure's ARM token too (without it and without `az`, `run` stops before asking).
        let out = ws
            .cmd()
            .args(["run", file.to_str().unwrap()])
            .env(var, "unused-key")
            .env("AZURE_ARM_TOKEN", "unused-token")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains("refusing to spend without confirmation") && err.contains("estimated ?"), "{name}: {err}");
        assert!(err.contains("--yes"), "{err}");
        assert!(!ws.db().exists(), "{name}: nothing was written");
    }
}
