//! Preference (DPO) sweeps on the real binary: over `beta` against `ftsweep serve` (OpenAI's
//! protocol, every create body captured on its way, and Together's), on the local provider with
//! its note; the refusals of data whose lines are not of the sweep's method (exit 2, nothing
//! written); and the server's 400s and failed jobs for DPO requests it cannot take.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::protocol::{Faults, KEY, Server, openai_sweep, run_sweep, start_proxy};
use crate::util::{Workspace, assert_refused, example_data, query, root, sweep_toml};

const HP: &str = "n_epochs = [2]\nlearning_rate_multiplier = [1.0]\nbatch_size = [8]\nbeta = [0.1, 1.0]";

/// A fixture of tests/data.
fn data(name: &str) -> String {
    root().join("tests/data").join(name).display().to_string()
}

/// `sweep` (a sweep file of `sweep_toml`'s shape) as a DPO sweep on the preference fixtures.
fn dpo(sweep: &str) -> String {
    sweep
        .replacen("base_model = ", "method = \"dpo\"\nbase_model = ", 1)
        .replace(&example_data("topics-train.jsonl"), &data("topics-dpo-train.jsonl"))
        .replace(&example_data("topics-valid.jsonl"), &data("topics-dpo-valid.jsonl"))
}

/// The fault proxy (no faults) in front of `server`, keeping the bodies of job creates.
async fn capturing_proxy(server: &Server) -> (String, Arc<Mutex<Vec<Value>>>) {
    let creates = Arc::new(Mutex::new(Vec::new()));
    let proxy =
        start_proxy(server.url.clone(), Faults { create_bodies: Some(creates.clone()), ..Faults::default() }).await;
    (proxy.url, creates)
}

/// A GET at `url` with the key.
async fn get(url: &str) -> Value {
    reqwest::Client::new().get(url).bearer_auth(KEY).send().await.unwrap().json().await.unwrap()
}

/// A JSON POST at `url` with the key; the answer's body.
async fn post(url: &str, body: &Value) -> Value {
    reqwest::Client::new().post(url).bearer_auth(KEY).json(body).send().await.unwrap().json().await.unwrap()
}

/// The runs' (beta, status, score) on the sweep's leaderboard, by beta.
fn leaderboard(ws: &Workspace, sweep: &str) -> Vec<(f64, String, f64)> {
    let rows = ws.json(&["leaderboard", sweep, "--json"]);
    let mut runs: Vec<(f64, String, f64)> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["is_baseline"] != true)
        .map(|r| {
            let beta = r["beta"].as_f64().or(r["hyperparameters"]["beta"].as_f64()).unwrap_or(f64::NAN);
            (beta, r["status"].as_str().unwrap_or_default().to_string(), r["score"].as_f64().unwrap_or(f64::NAN))
        })
        .collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    runs
}

#[test]
fn a_dpo_sweep_over_beta_against_serve_sends_the_method_object() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ws = Workspace::new();
    let server = Server::start(&ws, "serve.db", KEY);
    let (proxy, creates) = runtime.block_on(capturing_proxy(&server));
    ws.write("dpo.toml", &dpo(&openai_sweep("dpo-openai", &proxy, HP)));

    let (code, out, err) = crate::util::Workspace::run(&ws, &["plan", ws.path("dpo.toml").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("method: dpo"), "plan shows the method:\n{out}");
    assert!(out.contains("method.dpo.hyperparameters.beta"), "plan shows where beta goes:\n{out}");

    let (code, out, err) = run_sweep(&ws, "dpo.toml", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("exact_match"), "{out}");
    // Every create body carries the DPO method with the run's beta and hyperparameters.
    let bodies = creates.lock().unwrap().clone();
    eprintln!("create bodies: {}", serde_json::to_string_pretty(&bodies).unwrap());
    assert_eq!(bodies.len(), 2, "one create per run: {bodies:?}");
    let mut betas: Vec<f64> = bodies
        .iter()
        .map(|b| {
            assert_eq!(b["method"]["type"], "dpo", "{b}");
            assert!(b["method"].get("supervised").is_none(), "{b}");
            let hp = &b["method"]["dpo"]["hyperparameters"];
            assert_eq!((hp["n_epochs"].as_i64(), hp["batch_size"].as_i64()), (Some(2), Some(8)), "{b}");
            assert_eq!(hp["learning_rate_multiplier"].as_f64(), Some(1.0), "{b}");
            assert!(b.get("hyperparameters").is_none(), "no deprecated top-level hyperparameters: {b}");
            hp["beta"].as_f64().unwrap()
        })
        .collect();
    betas.sort_by(f64::total_cmp);
    assert_eq!(betas, [0.1, 1.0]);
    // The server echoes the method on the job, its hyperparameters only there (as OpenAI's).
    let jobs = runtime.block_on(get(&format!("{}/fine_tuning/jobs?limit=100", server.url)));
    let jobs = jobs["data"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    for j in jobs {
        let id = j["id"].as_str().unwrap();
        let job = runtime.block_on(get(&format!("{}/fine_tuning/jobs/{id}", server.url)));
        assert_eq!((job["status"].as_str(), job["method"]["type"].as_str()), (Some("succeeded"), Some("dpo")), "{job}");
        assert!(job["method"]["dpo"]["hyperparameters"]["beta"].is_number(), "{job}");
        assert!(job["hyperparameters"].is_null(), "{job}");
    }
    // Both runs trained and were evaluated against the preferred outputs.
    let runs = leaderboard(&ws, "dpo-openai");
    assert_eq!(runs.len(), 2, "{runs:?}");
    for (beta, status, score) in &runs {
        assert_eq!(status, "done", "beta {beta}");
        assert!(*score > 0.0, "beta {beta}: the preferred outputs are learnt, score {score}");
    }
    assert_eq!(query(&ws.db(), "SELECT count(*) FROM runs WHERE state = 'done'"), ["2"]);
}

#[test]
fn a_dpo_sweep_through_the_together_protocol_sends_dpo_beta() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ws = Workspace::new();
    let server = Server::start_args(&ws, "serve.db", KEY, &["--protocol", "together", "--max-running", "4"]);
    let (proxy, creates) = runtime.block_on(capturing_proxy(&server));
    let sweep = dpo(&sweep_toml("dpo-together", "n_epochs = [2]\nbeta = [0.1, 1.0]"))
        .replace("provider = \"local\"", "provider = \"together\"")
        .replace("local/ngram", "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference")
        + &format!(
            "\n[pricing]\ntraining_per_million = 0.48\ninput_per_million = 0.2\noutput_per_million = 0.2\n\
             [together]\nbase_url = \"{proxy}\"\napi_key_env = \"FTSWEEP_TEST_KEY\"\n"
        );
    ws.write("together.toml", &sweep);
    let (code, _, err) = run_sweep(&ws, "together.toml", &[]);
    assert_eq!(code, 0, "{err}");
    let bodies = creates.lock().unwrap().clone();
    let mut methods: Vec<String> = bodies.iter().map(|b| b["training_method"].to_string()).collect();
    methods.sort();
    assert_eq!(methods, [r#"{"dpo_beta":0.1,"method":"dpo"}"#, r#"{"dpo_beta":1.0,"method":"dpo"}"#], "{bodies:?}");
    let list = runtime.block_on(get(&format!("{}/fine-tunes", server.url)));
    for j in list["data"].as_array().unwrap() {
        assert_eq!(j["training_method"]["method"], "dpo", "the job echoes its method: {j}");
    }
    let runs = leaderboard(&ws, "dpo-together");
    assert!(runs.len() == 2 && runs.iter().all(|(_, status, _)| status == "done"), "{runs:?}");
}

#[test]
fn a_local_dpo_sweep_trains_on_the_preferred_outputs_and_says_so() {
    let ws = Workspace::new();
    let path = ws.write("local.toml", &dpo(&sweep_toml("dpo-local", HP)));
    let (code, out, err) = ws.run(&["run", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let note = "note: the local provider has no preference objective: a DPO sweep trains it on the preferred outputs";
    assert_eq!(err.matches(note).count(), 1, "said once:\n{err}");
    assert!(out.contains("beta"), "the table shows beta:\n{out}");
    let runs = leaderboard(&ws, "dpo-local");
    assert_eq!(runs.iter().map(|r| r.0).collect::<Vec<_>>(), [0.1, 1.0]);
    assert!(runs.iter().all(|(_, status, score)| status == "done" && *score > 0.0), "{runs:?}");
    // A chat validation file is graded against its replies as well.
    let chat_valid = dpo(&sweep_toml("dpo-chat-valid", HP))
        .replace(&data("topics-dpo-valid.jsonl"), &example_data("topics-valid.jsonl"));
    let path = ws.write("chat-valid.toml", &chat_valid);
    let (code, _, err) = ws.run(&["run", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn data_of_the_other_method_is_refused_before_anything_is_written() {
    let ws = Workspace::new();
    // A DPO sweep on chat lines.
    let chat = dpo(&sweep_toml("dpo-on-chat", HP))
        .replace(&data("topics-dpo-train.jsonl"), &example_data("topics-train.jsonl"));
    let path = ws.write("chat.toml", &chat);
    assert_refused(
        &ws,
        &path,
        &["topics-train.jsonl:1: a chat example (`messages`) in the training file of a DPO sweep", "preferred_output"],
    );
    // An SFT sweep on preference pairs, in its training file or its validation file.
    let pairs = sweep_toml("sft-on-pairs", "n_epochs = [1]\nlearning_rate_multiplier = [1.0]\nbatch_size = [8]")
        .replace(&example_data("topics-train.jsonl"), &data("topics-dpo-train.jsonl"));
    let path = ws.write("pairs.toml", &pairs);
    assert_refused(
        &ws,
        &path,
        &["topics-dpo-train.jsonl:1: a preference pair", "training file of an SFT sweep", "method = \"dpo\""],
    );
    let pairs = sweep_toml("sft-on-pairs", "n_epochs = [1]\nlearning_rate_multiplier = [1.0]\nbatch_size = [8]")
        .replace(&example_data("topics-valid.jsonl"), &data("topics-dpo-valid.jsonl"));
    let path = ws.write("pairs-valid.toml", &pairs);
    assert_refused(&ws, &path, &["topics-dpo-valid.jsonl:1: a preference pair", "validation file of an SFT sweep"]);
    // A DPO training file with one chat line among its pairs: named by its line.
    let mut lines: Vec<String> =
        std::fs::read_to_string(data("topics-dpo-train.jsonl")).unwrap().lines().map(str::to_string).collect();
    lines[6] = std::fs::read_to_string(example_data("topics-train.jsonl")).unwrap().lines().next().unwrap().into();
    let mixed = ws.write("mixed.jsonl", &(lines.join("\n") + "\n"));
    let text = dpo(&sweep_toml("dpo-mixed", HP)).replace(&data("topics-dpo-train.jsonl"), mixed.to_str().unwrap());
    let path = ws.write("mixed.toml", &text);
    assert_refused(&ws, &path, &["mixed.jsonl:7: a chat example"]);
    // A validation file of both kinds.
    let both = ws.write("both.jsonl", &(lines[..8].join("\n") + "\n"));
    let text = dpo(&sweep_toml("dpo-both", HP)).replace(&data("topics-dpo-valid.jsonl"), both.to_str().unwrap());
    let path = ws.write("both.toml", &text);
    assert_refused(
        &ws,
        &path,
        &["both.jsonl:7: the validation file mixes preference pairs (line 1) and chat examples (line 7)"],
    );
    // A hosted DPO sweep sends its validation file with the job: chat lines there are refused.
    let hosted = dpo(&openai_sweep("dpo-hosted", "http://127.0.0.1:9/v1", HP))
        .replace(&data("topics-dpo-valid.jsonl"), &example_data("topics-valid.jsonl"));
    let path = ws.write("hosted.toml", &hosted);
    assert_refused(
        &ws,
        &path,
        &["topics-valid.jsonl:1: a chat example (`messages`) in the validation file of a DPO sweep on `openai`"],
    );
    // beta on an SFT sweep, and a method that does not exist.
    let path = ws.write("beta.toml", &sweep_toml("sft-beta", HP));
    assert_refused(
        &ws,
        &path,
        &["`hyperparameters.beta`: `beta` is a hyperparameter of dpo sweeps", "method = \"dpo\""],
    );
    let path = ws.write("rlhf.toml", &dpo(&sweep_toml("rlhf", HP)).replace("\"dpo\"", "\"rlhf\""));
    assert_refused(&ws, &path, &["`method`", "rlhf", "sft", "dpo"]);
    let path = ws.write("far.toml", &dpo(&sweep_toml("far", &HP.replace("[0.1, 1.0]", "[0.1, 2.5]"))));
    assert_refused(&ws, &path, &["`hyperparameters.beta`", "2.5"]);
}

/// A 400 from the server, in OpenAI's error shape: its `param`.
async fn refused(http: &reqwest::Client, url: &str, body: Value) -> String {
    let response = http.post(format!("{url}/fine_tuning/jobs")).bearer_auth(KEY).json(&body).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 400, "{body}");
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    assert!(error["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{error}");
    error["error"]["param"].as_str().unwrap_or_default().to_string()
}

#[test]
fn serve_refuses_dpo_requests_it_cannot_take_like_openai() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ws = Workspace::new();
    let server = Server::start(&ws, "serve.db", KEY);
    runtime.block_on(async {
        let http = reqwest::Client::new();
        let upload = |name: String| {
            let http = http.clone();
            let url = server.url.clone();
            async move {
                let bytes = std::fs::read(&name).unwrap();
                let form = reqwest::multipart::Form::new()
                    .text("purpose", "fine-tune")
                    .part("file", reqwest::multipart::Part::bytes(bytes).file_name("f.jsonl"));
                let file: Value = http
                    .post(format!("{url}/files"))
                    .bearer_auth(KEY)
                    .multipart(form)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                file["id"].as_str().unwrap().to_string()
            }
        };
        let pairs = upload(data("topics-dpo-train.jsonl")).await;
        let chat = upload(example_data("topics-train.jsonl")).await;
        let job = |file: &str, method: Value| json!({"model": "local/ngram", "training_file": file, "method": method});
        let dpo = |hp: Value| json!({"type": "dpo", "dpo": {"hyperparameters": hp}});
        for beta in [json!(0), json!(2.5), json!(-1), json!("high")] {
            let param = refused(&http, &server.url, job(&pairs, dpo(json!({"beta": beta})))).await;
            assert_eq!(param, "method.dpo.hyperparameters.beta", "beta {beta}");
        }
        let misplaced = json!({"type": "dpo", "supervised": {"hyperparameters": {"n_epochs": 1}}});
        assert_eq!(refused(&http, &server.url, job(&pairs, misplaced)).await, "method.supervised");
        let sft_beta = json!({"type": "supervised", "supervised": {"hyperparameters": {"beta": 0.5}}});
        assert_eq!(refused(&http, &server.url, job(&chat, sft_beta)).await, "method.supervised.hyperparameters.beta");
        assert_eq!(refused(&http, &server.url, job(&pairs, json!({"type": "rlhf"}))).await, "method.type");
        let zero_epochs = dpo(json!({"n_epochs": 0}));
        assert_eq!(refused(&http, &server.url, job(&pairs, zero_epochs)).await, "method.dpo.hyperparameters.n_epochs");

        // A job whose training file is not of its method fails like OpenAI's invalid_training_file.
        let wait = |id: String| {
            let url = server.url.clone();
            async move {
                for _ in 0..2000 {
                    let j = get(&format!("{url}/fine_tuning/jobs/{id}")).await;
                    if ["succeeded", "failed", "cancelled"].contains(&j["status"].as_str().unwrap_or_default()) {
                        return j;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                }
                panic!("job {id} never ended");
            }
        };
        let create = |body: Value| {
            let url = server.url.clone();
            async move {
                let j = post(&format!("{url}/fine_tuning/jobs"), &body).await;
                assert_eq!(j["status"], "validating_files", "{j}");
                j["id"].as_str().unwrap().to_string()
            }
        };
        let on_chat = wait(create(job(&chat, dpo(json!({"beta": 0.1})))).await).await;
        assert_eq!(on_chat["status"], "failed", "{on_chat}");
        assert_eq!(
            (on_chat["error"]["code"].as_str(), on_chat["error"]["param"].as_str()),
            (Some("invalid_training_file"), Some("training_file"))
        );
        assert!(
            on_chat["error"]["message"]
                .as_str()
                .unwrap()
                .contains(":1: a DPO job's training file must hold preference pairs"),
            "{on_chat}"
        );
        let sft = json!({"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}});
        let on_pairs = wait(create(job(&pairs, sft)).await).await;
        assert_eq!(on_pairs["status"], "failed", "{on_pairs}");
        assert_eq!(on_pairs["error"]["code"], "invalid_training_file", "{on_pairs}");
        // The same request on preference pairs trains, with auto's beta resolved.
        let ok = wait(create(job(&pairs, dpo(json!({"n_epochs": 1, "beta": "auto"})))).await).await;
        assert_eq!(ok["status"], "succeeded", "{ok}");
        assert_eq!(ok["method"]["dpo"]["hyperparameters"]["beta"], 0.1, "{ok}");
    });
}
