//! The evaluation runner: replies come from the predictions cache, or from
//! the provider with at most the session's number of completions in flight
//! (the OpenAI client also paces itself by the `x-ratelimit-*` headers); each
//! new reply is cached as it arrives, so an interrupted evaluation resumes.
//! Then the judge and command graders fill the grade cache, and every grader
//! scores the replies.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinSet;

use super::config::Kind;
use super::scores::{self, GradeCache, Grades, input_sha256, prompt_sha256};
use super::{Counts, EvalError, Session, command, graders, judge};
use crate::data::check::Encoding;
use crate::data::{ChatFile, Message, Prompt, Reply};
use crate::provider::{Completion, Provider, ProviderError};
use crate::run::EvalKind;
use crate::spec::{Decoding, Evaluation};
use crate::store::{CachedPrediction, EvalExample, EvaluationRecord, SharedStore, Store, StoreError};

/// Replies cached in one transaction, at most.
const FLUSH_EVERY: usize = 64;

/// The longest a received reply waits to be cached.
const FLUSH_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// Who answers: the provider, or a stand-in in tests.
pub trait Answerer: Send + Sync + 'static {
    /// One chat completion of a prompt (its messages and the line's tools) under the decoding
    /// settings.
    fn complete(
        &self,
        model: &str,
        prompt: &Prompt,
        decoding: &Decoding,
    ) -> impl Future<Output = Result<Completion, ProviderError>> + Send;
    /// The decoding parameters the replies depend on, as the provider sends them: part of the
    /// cache key.
    fn decoding(&self, decoding: &Decoding) -> String;
    /// Makes `model` answerable before its completions are asked for (a
    /// command sweep's adapter is loaded at the inference server).
    fn open_model(&self, _model: &str) -> impl Future<Output = Result<(), ProviderError>> + Send {
        async { Ok(()) }
    }
    /// Frees what `open_model` took, once the completions are in (or failed).
    fn close_model(&self, _model: &str) -> impl Future<Output = Result<(), ProviderError>> + Send {
        async { Ok(()) }
    }
}

impl Answerer for Provider {
    fn complete(
        &self,
        model: &str,
        prompt: &Prompt,
        decoding: &Decoding,
    ) -> impl Future<Output = Result<Completion, ProviderError>> + Send {
        Provider::complete(self, model, prompt, decoding)
    }

    fn decoding(&self, decoding: &Decoding) -> String {
        match self {
            // The local model answers its top reply whatever the settings.
            Provider::Local(_) => "local top reply".into(),
            Provider::OpenAi(p) => p.decoding(decoding),
            Provider::Command(p) => p.decoding(decoding),
            Provider::Together(p) => p.decoding(decoding),
            Provider::Azure(p) => p.decoding(decoding),
        }
    }

    fn open_model(&self, model: &str) -> impl Future<Output = Result<(), ProviderError>> + Send {
        Provider::open_model(self, model)
    }

    fn close_model(&self, model: &str) -> impl Future<Output = Result<(), ProviderError>> + Send {
        Provider::close_model(self, model)
    }
}

/// What to evaluate, and how the evaluation is recorded.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub model: &'a str,
    pub data: &'a ChatFile,
    pub kind: EvalKind,
    pub run_id: Option<&'a str>,
    pub epoch: Option<u32>,
    pub sweep_id: Option<i64>,
}

/// A finished evaluation.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub evaluation: EvaluationRecord,
    pub examples: Vec<EvalExample>,
    pub grades: Grades,
}

/// Tokens of a prompt as the model reads it (3 per message, role, content, the names and
/// arguments of its calls; the line's tool definitions by the cookbook's rule).
fn prompt_tokens(prompt: &Prompt) -> u64 {
    let enc = Encoding::O200kBase;
    let count = |s: &str| enc.count(s) as u64;
    let calls = |m: &Message| m.tool_calls.iter().map(|c| count(&c.name) + count(&c.arguments)).sum::<u64>();
    let messages = (prompt.messages.iter()).map(|m| 3 + count(&m.role) + count(&m.content) + calls(m)).sum::<u64>();
    3 + messages + prompt.tools.as_ref().map_or(0, tools_tokens)
}

/// Tokens of a stored reply: its text, and its calls' names and arguments.
fn reply_tokens(encoded: &str) -> u64 {
    let reply = Reply::decode(encoded);
    let count = |s: &str| Encoding::O200kBase.count(s) as u64;
    count(&reply.content) + reply.tool_calls.iter().map(|c| count(&c.name) + count(&c.arguments)).sum::<u64>()
}

/// The tokens of a line's tool definitions, as `data check` counts them.
fn tools_tokens(tools: &serde_json::Value) -> u64 {
    let mut line = serde_json::Map::new();
    line.insert("tools".into(), tools.clone());
    let enc = Encoding::O200kBase;
    crate::data::check::tools_definition_tokens(&crate::data::check::tool_functions(&line), enc, &mut |s: &str| {
        enc.count(s) as u64
    })
}

/// Evaluates `target.model` on every conversation of `target.data`: replies
/// (cached or asked for), recorded with the evaluation, then graded.
pub async fn evaluate<A: Answerer>(
    store: &SharedStore,
    answerer: &Arc<A>,
    session: &Arc<Session>,
    target: &Target<'_>,
) -> Result<Outcome, EvalError> {
    let started = Instant::now();
    let model = target.model.to_string();
    let decoding = answerer.decoding(&session.evaluation.decoding);
    let prompts: Vec<(String, Prompt)> = (target.data.conversations.iter())
        .map(|c| {
            let prompt = c.prompt_request();
            (prompt_sha256(&prompt), prompt)
        })
        .collect();
    let mut known = store.lock().cached_predictions(&model, &decoding)?;
    let cached = prompts.iter().filter(|(sha, _)| known.contains_key(sha)).count() as u64;
    Counts::add(&session.counts.cached, cached);

    let to_ask = prompts.iter().any(|(sha, _)| !known.contains_key(sha));
    if to_ask {
        answerer.open_model(&model).await.map_err(|source| EvalError::Provider { model: model.clone(), source })?;
    }
    let asked = ask(store, answerer, session, &model, &decoding, &prompts, &mut known).await;
    if to_ask {
        // Freed also after a failure; a failure to free does not undo the replies.
        if let Err(e) = answerer.close_model(&model).await {
            tracing::warn!(model, "{e}");
        }
    }
    let calls = asked?;

    let mut examples = Vec::with_capacity(prompts.len());
    let (mut input_tokens, mut output_tokens) = (0u64, 0u64);
    for (i, (c, (sha, prompt))) in target.data.conversations.iter().zip(prompts).enumerate() {
        let p = known.get(&sha).cloned().unwrap_or(CachedPrediction { content: String::new(), probability: None });
        input_tokens += prompt_tokens(&prompt);
        output_tokens += reply_tokens(&p.content);
        examples.push(EvalExample {
            example: i,
            line: c.line,
            conversation_sha256: sha,
            prompt: prompt.messages,
            reference: c.reference().unwrap_or_default(),
            prediction: p.content,
            probability: p.probability,
        });
    }
    let mut evaluation = EvaluationRecord {
        id: 0,
        model: model.clone(),
        data_sha256: target.data.sha256.clone(),
        data_file: target.data.path.display().to_string(),
        decoding,
        kind: target.kind,
        run_id: target.run_id.map(str::to_string),
        epoch: target.epoch,
        sweep_id: target.sweep_id,
        n_examples: examples.len(),
        calls,
        cached,
        input_tokens,
        output_tokens,
        seconds: started.elapsed().as_secs_f64(),
        created_at: 0.0,
    };
    let pure = pure_scores(&session.evaluation, &examples, &session.dir);
    evaluation.id = store.lock().record_scored_evaluation(&evaluation, &examples, &pure)?;
    let grades = grade(store, answerer, session, &examples).await?;
    Ok(Outcome { evaluation, examples, grades })
}

/// Asks for the replies not known yet, caching them in batches as they come
/// (and what came before a failure); returns the calls made.
async fn ask<A: Answerer>(
    store: &SharedStore,
    answerer: &Arc<A>,
    session: &Arc<Session>,
    model: &str,
    decoding: &str,
    prompts: &[(String, Prompt)],
    known: &mut HashMap<String, CachedPrediction>,
) -> Result<u64, EvalError> {
    let settings = session.evaluation.decoding;
    let mut asked = HashSet::new();
    let mut tasks = JoinSet::new();
    for (sha, prompt) in prompts {
        if known.contains_key(sha) || !asked.insert(sha.clone()) {
            continue;
        }
        let (answerer, permits, model, sha, prompt) =
            (answerer.clone(), session.permits.clone(), model.to_string(), sha.clone(), prompt.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("the semaphore is never closed");
            (sha, answerer.complete(&model, &prompt, &settings).await)
        });
    }
    let mut calls = 0u64;
    // Replies are cached in batches, and what was received is cached before
    // any error returns, so a retry asks only for the rest.
    let mut pending: Vec<(String, CachedPrediction)> = Vec::new();
    let mut last_flush = Instant::now();
    while let Some(joined) = tasks.join_next().await {
        calls += 1;
        Counts::add(&session.counts.completions, 1);
        let failure = match joined {
            Ok((sha, Ok(c))) => {
                let p = CachedPrediction { content: c.reply().encode(), probability: c.probability };
                known.insert(sha.clone(), p.clone());
                pending.push((sha, p));
                None
            }
            Ok((_, Err(source))) => Some(source),
            Err(e) => Some(ProviderError::Crashed(format!("a completion task stopped: {e}"))),
        };
        if failure.is_some() || pending.len() >= FLUSH_EVERY || last_flush.elapsed() >= FLUSH_AFTER {
            store.lock().put_predictions(model, decoding, &pending)?;
            pending.clear();
            last_flush = Instant::now();
        }
        if let Some(source) = failure {
            tasks.abort_all();
            return Err(EvalError::Provider { model: model.to_string(), source });
        }
    }
    store.lock().put_predictions(model, decoding, &pending)?;
    Ok(calls)
}

/// Grades stored replies: the judge and command graders grade the examples
/// missing from their cache (a failure leaves the example ungraded, counted,
/// and graded again next time), then every grader scores.
pub async fn grade<A: Answerer>(
    store: &SharedStore,
    answerer: &Arc<A>,
    session: &Arc<Session>,
    examples: &[EvalExample],
) -> Result<Grades, StoreError> {
    for g in session.evaluation.graders.iter().filter(|g| g.is_cached()) {
        let key = cache_key(&g.kind, g, &session.dir);
        let known = store.lock().cached_grades(&key)?;
        let mut asked = HashSet::new();
        let mut tasks = JoinSet::new();
        let mut hits = 0u64;
        for x in examples {
            let input = input_sha256(&x.prompt, &x.reference, &x.prediction);
            if known.contains_key(&input) {
                hits += 1;
                continue;
            }
            if !asked.insert(input.clone()) {
                continue;
            }
            let (answerer, session, kind, x) = (answerer.clone(), session.clone(), g.kind.clone(), x.clone());
            tasks.spawn(async move {
                let _permit = session.permits.clone().acquire_owned().await.expect("the semaphore is never closed");
                let graded = match &kind {
                    Kind::Judge(j) => {
                        Counts::add(&session.counts.judge_calls, 1);
                        // A judge reads messages only, asked at the default decoding settings.
                        let (reference, reply) = (shown(&x.reference), shown(&x.prediction));
                        let messages = Prompt::messages(judge::messages(j, &x.prompt, &reference, &reply));
                        match answerer.complete(&j.model, &messages, &Decoding::default()).await {
                            Ok(c) => Ok((graders::parse_judge_score(&c.content, (j.range[0], j.range[1])), c.content)),
                            Err(e) => Err(format!("the judge `{}` did not answer: {e}", j.model)),
                        }
                    }
                    Kind::Command(c) => {
                        Counts::add(&session.counts.commands, 1);
                        let (c, dir) = (c.clone(), session.dir.clone());
                        let input =
                            command::input_json(&x, &Reply::decode(&x.reference), &Reply::decode(&x.prediction));
                        tokio::task::spawn_blocking(move || command::run(&c, &dir, &input))
                            .await
                            .unwrap_or_else(|e| Err(format!("the command grader stopped: {e}")))
                    }
                    Kind::Pure(_) => Err("a pure grader is not cached".into()),
                };
                (input, x.line, graded)
            });
        }
        let counter = if matches!(g.kind, Kind::Judge(_)) {
            &session.counts.judge_cached
        } else {
            &session.counts.commands_cached
        };
        Counts::add(counter, hits);
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((input, _, Ok((score, raw)))) => store.lock().put_grade(&key, &input, score, &raw)?,
                Ok((_, line, Err(reason))) => {
                    session.grader_failed(format!("grader `{}`, line {line}: {reason}", g.name))
                }
                Err(e) => session.grader_failed(format!("grader `{}`: {e}", g.name)),
            }
        }
    }
    let cache = grade_cache(&store.lock(), &session.evaluation, &session.dir)?;
    Ok(scores::grade(&session.evaluation, examples, &cache))
}

/// A stored reply as people (and judges) read it.
fn shown(encoded: &str) -> String {
    Reply::decode(encoded).display()
}

/// The scores stored with an evaluation as it is recorded: its pure graders', by key (a judge's
/// and a command's are graded after it is recorded, and stored when a leaderboard reads them).
fn pure_scores(evaluation: &Evaluation, examples: &[EvalExample], dir: &Path) -> Vec<(String, Vec<f64>)> {
    (evaluation.graders.iter())
        .filter_map(|g| match &g.kind {
            Kind::Pure(grader) => Some((
                cache_key(&g.kind, g, dir),
                examples.iter().map(|x| graders::score(grader, &x.prediction, &x.reference)).collect(),
            )),
            _ => None,
        })
        .collect()
}

/// A grader's key in the grade cache, and of the scores stored with evaluations.
pub(crate) fn cache_key(kind: &Kind, g: &super::config::NamedGrader, dir: &Path) -> String {
    match kind {
        Kind::Command(c) => command::key(g, c, dir),
        _ => format!("{}:{}", g.type_name(), g.fingerprint()),
    }
}

/// The cached grades of every judge and command grader, by grader name.
pub fn grade_cache(store: &Store, evaluation: &Evaluation, dir: &Path) -> Result<GradeCache, StoreError> {
    let mut cache = HashMap::new();
    for g in evaluation.graders.iter().filter(|g| g.is_cached()) {
        cache.insert(g.name.clone(), store.cached_grades(&cache_key(&g.kind, g, dir))?);
    }
    Ok(cache)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::data::Conversation;

    /// Answers with the last user message upper-cased (the judge: "7"),
    /// counts calls and the most completions in flight at once.
    #[derive(Default)]
    struct Echo {
        calls: AtomicUsize,
        in_flight: AtomicUsize,
        most: AtomicUsize,
        fail_on: Mutex<Option<String>>,
    }

    impl Answerer for Echo {
        fn complete(
            &self,
            model: &str,
            prompt: &Prompt,
            _: &Decoding,
        ) -> impl Future<Output = Result<Completion, ProviderError>> + Send {
            let last = prompt.messages.last().map(|m| m.content.clone()).unwrap_or_default();
            let model = model.to_string();
            let fail = self.fail_on.lock().unwrap().clone();
            async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                self.most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                if fail.as_deref() == Some(last.as_str()) {
                    return Err(ProviderError::ModelNotFound(model));
                }
                let content = if model == "judge" { "Score: 7".into() } else { last.to_uppercase() };
                Ok(Completion { content, ..Completion::default() })
            }
        }

        fn decoding(&self, _: &Decoding) -> String {
            "echo".into()
        }
    }

    fn data(n: usize) -> ChatFile {
        let m = |role: &str, content: String| Message::text(role, content);
        ChatFile {
            path: "v.jsonl".into(),
            sha256: "v".into(),
            bytes: 0,
            conversations: (0..n)
                .map(|i| Conversation {
                    line: i + 1,
                    messages: vec![m("user", format!("word{}", i % 7)), m("assistant", format!("WORD{}", i % 3))],
                    ..Conversation::default()
                })
                .collect(),
        }
    }

    fn session(evaluation: &str, concurrency: u32) -> Arc<Session> {
        let text = format!(
            "name = \"s\"\nbase_model = \"local/ngram\"\ntraining_file = \"t\"\nvalidation_file = \"v\"\n\
             [hyperparameters]\nn_epochs = 1\nlearning_rate_multiplier = 1.0\nbatch_size = 1\n\
             [evaluation]\nconcurrency = {concurrency}\n{evaluation}"
        );
        let sweep = crate::spec::parse(Path::new("s.toml"), &text).unwrap();
        Arc::new(Session::new(&sweep.evaluation, Path::new("s.toml")))
    }

    fn target(data: &ChatFile) -> Target<'_> {
        Target { model: "m", data, kind: EvalKind::Model, run_id: None, epoch: None, sweep_id: None }
    }

    #[tokio::test]
    async fn replies_are_asked_once_per_prompt_within_the_limit_then_cached() {
        let store = SharedStore::new(Store::open_in_memory().unwrap());
        let echo = Arc::new(Echo::default());
        let s = session("", 3);
        let d = data(21);
        let first = evaluate(&store, &echo, &s, &target(&d)).await.unwrap();
        // 21 examples but 7 distinct prompts.
        assert_eq!(echo.calls.load(Ordering::SeqCst), 7);
        assert_eq!(echo.most.load(Ordering::SeqCst), 3, "three completions in flight at most");
        assert_eq!((first.evaluation.calls, first.evaluation.cached), (7, 0));
        // word0 → WORD0 matches the reference WORD0 when i % 7 == i % 3.
        let want = (0..21).filter(|i| i % 7 == i % 3).count() as f64 / 21.0;
        assert!((first.grades.mean("exact_match").unwrap() - want).abs() < 1e-12);

        let again = evaluate(&store, &echo, &s, &target(&d)).await.unwrap();
        assert_eq!(echo.calls.load(Ordering::SeqCst), 7, "no new call: every reply is cached");
        assert_eq!((again.evaluation.calls, again.evaluation.cached), (0, 21));
        assert_eq!(again.grades, first.grades);
        let counts = s.counts.snapshot();
        assert_eq!((counts.completions, counts.cached), (7, 21));
    }

    #[tokio::test]
    async fn a_failed_completion_fails_the_evaluation_but_keeps_what_was_received() {
        let store = SharedStore::new(Store::open_in_memory().unwrap());
        let echo = Arc::new(Echo::default());
        *echo.fail_on.lock().unwrap() = Some("word3".into());
        let d = data(7);
        let e = evaluate(&store, &echo, &session("", 1), &target(&d)).await.unwrap_err();
        assert!(matches!(e, EvalError::Provider { .. }), "{e}");
        let cached = store.lock().cached_predictions("m", "echo").unwrap();
        assert!(cached.len() >= 3 && cached.len() < 7, "{}", cached.len());
        *echo.fail_on.lock().unwrap() = None;
        let before = echo.calls.load(Ordering::SeqCst);
        evaluate(&store, &echo, &session("", 1), &target(&d)).await.unwrap();
        assert_eq!(echo.calls.load(Ordering::SeqCst) - before, 7 - cached.len(), "only the missing replies");
    }

    #[tokio::test]
    async fn the_judge_is_called_once_per_distinct_input_and_cached() {
        let store = SharedStore::new(Store::open_in_memory().unwrap());
        let echo = Arc::new(Echo::default());
        let s = session(
            "metric = \"exact_match\"\n[[evaluation.graders]]\ntype = \"judge\"\nmodel = \"judge\"\nrubric = \"Rate {{reply}}\"\nrange = [0, 10]",
            4,
        );
        let d = data(14);
        let out = evaluate(&store, &echo, &s, &target(&d)).await.unwrap();
        assert_eq!(out.grades.get("judge"), Some(&[0.7; 14][..]), "`Score: 7` out of 10");
        // 7 prompts answered, then 7 distinct (prompt, reference, reply) inputs judged... of 14 examples:
        // example i has prompt i % 7 and reference i % 3, so 14 distinct inputs.
        let snapshot = s.counts.snapshot();
        assert_eq!((snapshot.completions, snapshot.judge_calls), (7, 14));
        evaluate(&store, &echo, &s, &target(&d)).await.unwrap();
        let snapshot = s.counts.snapshot();
        assert_eq!((snapshot.completions, snapshot.judge_calls, snapshot.judge_cached), (7, 14, 14));
    }

    #[tokio::test]
    async fn a_failing_command_leaves_examples_ungraded_and_counted() {
        let store = SharedStore::new(Store::open_in_memory().unwrap());
        let echo = Arc::new(Echo::default());
        let s = session("[[evaluation.graders]]\ntype = \"command\"\ncommand = [\"sh\", \"-c\", \"exit 1\"]", 2);
        let d = data(3);
        let out = evaluate(&store, &echo, &s, &target(&d)).await.unwrap();
        assert_eq!(out.grades.0["command"], None);
        assert_eq!(s.counts.snapshot().grader_failures, 3);
        assert!(s.first_failure().unwrap().contains("grader `command`, line "), "{:?}", s.first_failure());
    }
}
