//! The evaluation tables: the predictions cache, evaluations with their
//! examples, the grade cache of judge and command graders, and aliases.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Doing, Result, Store, now};
use crate::data::Message;
use crate::run::EvalKind;

/// A cached reply.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedPrediction {
    pub content: String,
    pub probability: Option<f64>,
}

/// One evaluated example: the prompt, the reference and the model's reply.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalExample {
    /// 0-based position in the data file.
    pub example: usize,
    /// 1-based line in the data file.
    pub line: usize,
    pub conversation_sha256: String,
    pub prompt: Vec<Message>,
    pub reference: String,
    pub prediction: String,
    pub probability: Option<f64>,
}

/// An evaluation as recorded (or to record: `id` and `created_at` are then ignored).
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationRecord {
    pub id: i64,
    pub model: String,
    pub data_sha256: String,
    pub data_file: String,
    pub decoding: String,
    pub kind: EvalKind,
    pub run_id: Option<String>,
    pub epoch: Option<u32>,
    pub sweep_id: Option<i64>,
    pub n_examples: usize,
    pub calls: u64,
    pub cached: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub seconds: f64,
    pub created_at: f64,
}

/// An alias and where its model came from.
#[derive(Debug, Clone, PartialEq)]
pub struct AliasRecord {
    pub name: String,
    pub model: String,
    pub run_id: Option<String>,
    pub sweep: Option<String>,
    /// JSON: sweep, run, model, data hashes, graders, scores, time.
    pub provenance: serde_json::Value,
    pub promoted_at: f64,
}

pub(super) const EVALUATION_COLUMNS: &str = "id, model, data_sha256, data_file, decoding, kind, run_id, epoch, sweep_id, \
     n_examples, calls, cached, input_tokens, output_tokens, seconds, created_at";

pub(super) fn evaluation_row(r: &Row<'_>) -> rusqlite::Result<EvaluationRecord> {
    Ok(EvaluationRecord {
        id: r.get(0)?,
        model: r.get(1)?,
        data_sha256: r.get(2)?,
        data_file: r.get(3)?,
        decoding: r.get(4)?,
        kind: r.get(5)?,
        run_id: r.get(6)?,
        epoch: r.get(7)?,
        sweep_id: r.get(8)?,
        n_examples: r.get::<_, i64>(9)? as usize,
        calls: r.get::<_, i64>(10)? as u64,
        cached: r.get::<_, i64>(11)? as u64,
        input_tokens: r.get::<_, i64>(12)? as u64,
        output_tokens: r.get::<_, i64>(13)? as u64,
        seconds: r.get(14)?,
        created_at: r.get(15)?,
    })
}

fn alias_row(r: &Row<'_>) -> rusqlite::Result<AliasRecord> {
    let provenance: String = r.get(4)?;
    Ok(AliasRecord {
        name: r.get(0)?,
        model: r.get(1)?,
        run_id: r.get(2)?,
        sweep: r.get(3)?,
        provenance: serde_json::from_str(&provenance).unwrap_or(serde_json::Value::Null),
        promoted_at: r.get(5)?,
    })
}

/// A prompt's messages as stored: `{role, content}`, with `tool_calls` (`[{id?, name,
/// arguments}]`) and `tool_call_id` on the messages that have them, so a prompt without them is
/// stored as before tool calls existed.
fn messages_json(messages: &[Message]) -> String {
    let v: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| {
            let mut v = serde_json::json!({"role": m.role, "content": m.content});
            if !m.tool_calls.is_empty() {
                v["tool_calls"] = serde_json::to_value(&m.tool_calls).unwrap_or_default();
            }
            if let Some(id) = &m.tool_call_id {
                v["tool_call_id"] = serde_json::Value::String(id.clone());
            }
            v
        })
        .collect();
    serde_json::Value::Array(v).to_string()
}

fn parse_messages(text: &str) -> Vec<Message> {
    let v: Vec<serde_json::Value> = serde_json::from_str(text).unwrap_or_default();
    v.iter()
        .map(|m| Message {
            tool_calls: serde_json::from_value(m["tool_calls"].clone()).unwrap_or_default(),
            tool_call_id: m["tool_call_id"].as_str().map(str::to_string),
            ..Message::text(m["role"].as_str().unwrap_or_default(), m["content"].as_str().unwrap_or_default())
        })
        .collect()
}

/// The id of a conversation hash, recorded if new.
fn conversation_id(conn: &Connection, sha256: &str) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO conversations (sha256) VALUES (?1) ON CONFLICT DO UPDATE SET sha256 = sha256 RETURNING id",
    )
    .and_then(|mut s| s.query_row([sha256], |r| r.get(0)))
    .doing("recording a conversation")
}

/// The id of a model under decoding parameters, recorded if new.
fn replier_id(conn: &Connection, model: &str, decoding: &str) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO repliers (model, decoding) VALUES (?1, ?2) ON CONFLICT DO UPDATE SET model = model RETURNING id",
    )
    .and_then(|mut s| s.query_row([model, decoding], |r| r.get(0)))
    .doing("recording a model's decoding")
}

impl Store {
    /// The cached replies of `model` under `decoding`, by conversation hash.
    pub fn cached_predictions(&self, model: &str, decoding: &str) -> Result<HashMap<String, CachedPrediction>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT c.sha256, p.content, p.probability
                 FROM repliers r JOIN predictions p ON p.replier = r.id JOIN conversations c ON c.id = p.conversation
                 WHERE r.model = ?1 AND r.decoding = ?2",
            )
            .doing("reading cached predictions")?;
        let rows = stmt
            .query_map(params![model, decoding], |r| {
                Ok((r.get::<_, String>(0)?, CachedPrediction { content: r.get(1)?, probability: r.get(2)? }))
            })
            .doing("reading cached predictions")?;
        rows.collect::<rusqlite::Result<HashMap<_, _>>>().doing("reading cached predictions")
    }

    /// Caches replies in one transaction. A reply already cached stays: the
    /// evaluations that read it keep reading it.
    pub fn put_predictions(
        &mut self,
        model: &str,
        decoding: &str,
        replies: &[(String, CachedPrediction)],
    ) -> Result<()> {
        let tx = self.conn.transaction().doing("caching predictions")?;
        {
            let replier = replier_id(&tx, model, decoding)?;
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO predictions (replier, conversation, content, probability)
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .doing("caching predictions")?;
            for (sha, p) in replies {
                let conversation = conversation_id(&tx, sha)?;
                stmt.execute(params![replier, conversation, p.content, p.probability]).doing("caching a prediction")?;
            }
        }
        tx.commit().doing("caching predictions")
    }

    /// Records an evaluation and its examples in one transaction, replacing
    /// an earlier evaluation of the same model, data and decoding. A run's or
    /// checkpoint's evaluation keeps its kind when evaluated again as a model.
    pub fn record_evaluation(&mut self, e: &EvaluationRecord, examples: &[EvalExample]) -> Result<i64> {
        self.record_scored_evaluation(e, examples, &[])
    }

    /// [`Store::record_evaluation`], with the examples' scores by graders (by grade-cache key),
    /// stored in the same transaction in place of every score the evaluation had.
    pub fn record_scored_evaluation(
        &mut self,
        e: &EvaluationRecord,
        examples: &[EvalExample],
        scores: &[(String, Vec<f64>)],
    ) -> Result<i64> {
        let tx = self.conn.transaction().doing("recording an evaluation")?;
        tx.execute(
            "INSERT INTO evaluations (model, data_sha256, data_file, decoding, kind, run_id, epoch, sweep_id,
                                      n_examples, calls, cached, input_tokens, output_tokens, seconds, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
             ON CONFLICT (model, data_sha256, decoding) DO UPDATE SET
                 data_file = ?3,
                 kind = CASE WHEN kind IN (?16, ?17) AND ?5 IN (?18, ?19) THEN kind ELSE ?5 END,
                 run_id = COALESCE(?6, run_id), epoch = COALESCE(?7, epoch), sweep_id = COALESCE(?8, sweep_id),
                 n_examples = ?9, calls = ?10, cached = ?11, input_tokens = ?12, output_tokens = ?13,
                 seconds = ?14, created_at = ?15",
            params![
                e.model,
                e.data_sha256,
                e.data_file,
                e.decoding,
                e.kind,
                e.run_id,
                e.epoch,
                e.sweep_id,
                examples.len() as i64,
                e.calls as i64,
                e.cached as i64,
                e.input_tokens as i64,
                e.output_tokens as i64,
                e.seconds,
                now(),
                EvalKind::Run,
                EvalKind::Checkpoint,
                EvalKind::Model,
                EvalKind::Baseline,
            ],
        )
        .doing("recording an evaluation")?;
        let id: i64 = tx
            .query_row(
                "SELECT id FROM evaluations WHERE model = ?1 AND data_sha256 = ?2 AND decoding = ?3",
                params![e.model, e.data_sha256, e.decoding],
                |r| r.get(0),
            )
            .doing("reading an evaluation id")?;
        tx.execute("DELETE FROM eval_examples WHERE evaluation_id = ?1", [id])
            .doing("replacing an evaluation's examples")?;
        tx.execute("DELETE FROM eval_scores WHERE evaluation_id = ?1", [id])
            .doing("replacing an evaluation's scores")?;
        super::scores::insert_scores(&tx, id, scores)?;
        {
            let replier = replier_id(&tx, &e.model, &e.decoding)?;
            let mut cached = tx
                .prepare_cached("SELECT content, probability FROM predictions WHERE replier = ?1 AND conversation = ?2")
                .doing("reading a cached prediction")?;
            let mut input = tx
                .prepare_cached(
                    "INSERT INTO eval_inputs (conversation, line, reference, prompt) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO UPDATE SET line = line RETURNING id",
                )
                .doing("recording evaluated inputs")?;
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO eval_examples (evaluation_id, example, input, prediction, probability)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .doing("recording evaluated examples")?;
            for x in examples {
                let conversation = conversation_id(&tx, &x.conversation_sha256)?;
                let input: i64 = input
                    .query_row(params![conversation, x.line as i64, x.reference, messages_json(&x.prompt)], |r| {
                        r.get(0)
                    })
                    .doing("recording an evaluated input")?;
                let reply = cached
                    .query_row(params![replier, conversation], |r| {
                        Ok(CachedPrediction { content: r.get(0)?, probability: r.get(1)? })
                    })
                    .optional()
                    .doing("reading a cached prediction")?;
                // The reply is stored here only when it is not the cached one.
                let own = reply.is_none_or(|p| p.content != x.prediction || p.probability != x.probability);
                let (prediction, probability) = if own { (Some(&x.prediction), x.probability) } else { (None, None) };
                stmt.execute(params![id, x.example as i64, input, prediction, probability])
                    .doing("recording an evaluated example")?;
            }
        }
        tx.commit().doing("recording an evaluation")?;
        Ok(id)
    }

    /// The latest evaluation of `model` on the data file with this hash.
    pub fn latest_evaluation(&self, model: &str, data_sha256: &str) -> Result<Option<EvaluationRecord>> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {EVALUATION_COLUMNS} FROM evaluations WHERE model = ?1 AND data_sha256 = ?2
                     ORDER BY created_at DESC, id DESC LIMIT 1"
                ),
                params![model, data_sha256],
                evaluation_row,
            )
            .optional()
            .doing("reading an evaluation")
    }

    /// The models evaluated with `ftsweep eval` for a sweep, on its data.
    pub fn sweep_model_evaluations(&self, sweep_id: i64, data_sha256: &str) -> Result<Vec<EvaluationRecord>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {EVALUATION_COLUMNS} FROM evaluations
                 WHERE sweep_id = ?1 AND data_sha256 = ?2 AND kind = 'model' ORDER BY created_at"
            ))
            .doing("listing a sweep's evaluated models")?;
        let rows = stmt.query_map(params![sweep_id, data_sha256], evaluation_row).doing("listing evaluations")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().doing("listing evaluations")
    }

    /// An evaluation's examples, in file order.
    pub fn evaluation_examples(&self, evaluation_id: i64) -> Result<Vec<EvalExample>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT x.example, i.line, c.sha256, i.prompt, i.reference, COALESCE(x.prediction, p.content, ''),
                        CASE WHEN x.prediction IS NULL THEN p.probability ELSE x.probability END
                 FROM eval_examples x
                 JOIN evaluations e ON e.id = x.evaluation_id
                 JOIN eval_inputs i ON i.id = x.input
                 JOIN conversations c ON c.id = i.conversation
                 LEFT JOIN repliers r ON r.model = e.model AND r.decoding = e.decoding
                 LEFT JOIN predictions p ON p.replier = r.id AND p.conversation = i.conversation
                 WHERE x.evaluation_id = ?1 ORDER BY x.example",
            )
            .doing("reading evaluated examples")?;
        let rows = stmt
            .query_map([evaluation_id], |r| {
                Ok(EvalExample {
                    example: r.get::<_, i64>(0)? as usize,
                    line: r.get::<_, i64>(1)? as usize,
                    conversation_sha256: r.get(2)?,
                    prompt: parse_messages(&r.get::<_, String>(3)?),
                    reference: r.get(4)?,
                    prediction: r.get(5)?,
                    probability: r.get(6)?,
                })
            })
            .doing("reading evaluated examples")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().doing("reading evaluated examples")
    }

    /// The cached grades of a grader (by its key), by input hash.
    pub fn cached_grades(&self, grader: &str) -> Result<HashMap<String, f64>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT input_sha256, score FROM grade_cache WHERE grader = ?1")
            .doing("reading cached grades")?;
        let rows = stmt.query_map([grader], |r| Ok((r.get(0)?, r.get(1)?))).doing("reading cached grades")?;
        rows.collect::<rusqlite::Result<HashMap<_, _>>>().doing("reading cached grades")
    }

    /// Caches a grade with the grader's raw answer.
    pub fn put_grade(&mut self, grader: &str, input_sha256: &str, score: f64, raw: &str) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO grade_cache (grader, input_sha256, score, raw, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| s.execute(params![grader, input_sha256, score, raw, now()]))
            .doing("caching a grade")?;
        // The scores stored by this grader may have read the grade it replaces.
        self.conn
            .prepare_cached("DELETE FROM eval_scores WHERE grader = ?1")
            .and_then(|mut s| s.execute([grader]))
            .doing("dropping stored scores")?;
        Ok(())
    }

    /// The sweep file a sweep was last recorded with: (path, text).
    pub fn sweep_spec(&self, sweep_id: i64) -> Result<Option<(String, String)>> {
        self.conn
            .query_row("SELECT spec_path, spec_toml FROM sweeps WHERE id = ?1", [sweep_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .doing("reading a sweep file")
    }

    /// The run ids that start with `prefix`.
    pub fn run_ids_like(&self, prefix: &str) -> Result<Vec<String>> {
        let pattern = format!("{}%", prefix.replace(['%', '_'], ""));
        let mut stmt = self
            .conn
            .prepare("SELECT run_id FROM runs WHERE run_id LIKE ?1 ORDER BY run_id LIMIT 10")
            .doing("finding a run")?;
        let rows = stmt.query_map([pattern], |r| r.get(0)).doing("finding a run")?;
        rows.collect::<rusqlite::Result<Vec<String>>>().doing("finding a run")
    }

    /// The names of the sweeps whose latest version plans the run, newest first.
    pub fn sweeps_of_run(&self, run_id: &str) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT s.name FROM sweep_runs sr JOIN sweeps s ON s.id = sr.sweep_id
                 WHERE sr.run_id = ?1 AND sr.active = 1 ORDER BY s.updated_at DESC",
            )
            .doing("finding a run's sweeps")?;
        let rows = stmt.query_map([run_id], |r| r.get(0)).doing("finding a run's sweeps")?;
        rows.collect::<rusqlite::Result<Vec<String>>>().doing("finding a run's sweeps")
    }

    /// An alias.
    pub fn alias(&self, name: &str) -> Result<Option<AliasRecord>> {
        self.conn
            .query_row(
                "SELECT name, model, run_id, sweep, provenance, promoted_at FROM aliases WHERE name = ?1",
                [name],
                alias_row,
            )
            .optional()
            .doing("reading an alias")
    }

    /// Every alias, by name.
    pub fn aliases(&self) -> Result<Vec<AliasRecord>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, model, run_id, sweep, provenance, promoted_at FROM aliases ORDER BY name")
            .doing("listing aliases")?;
        let rows = stmt.query_map([], alias_row).doing("listing aliases")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().doing("listing aliases")
    }

    /// Points an alias at a model and appends the promotion to the history,
    /// in one transaction. Returns how many times the alias was set before.
    pub fn set_alias(&mut self, alias: &AliasRecord, forced: bool) -> Result<u64> {
        let tx = self.conn.transaction().doing("promoting a model")?;
        let previous: Option<String> = tx
            .query_row("SELECT model FROM aliases WHERE name = ?1", [&alias.name], |r| r.get(0))
            .optional()
            .doing("reading an alias")?;
        let provenance = alias.provenance.to_string();
        tx.execute(
            "INSERT OR REPLACE INTO aliases (name, model, run_id, sweep, provenance, promoted_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![alias.name, alias.model, alias.run_id, alias.sweep, provenance, alias.promoted_at],
        )
        .doing("setting an alias")?;
        tx.execute(
            "INSERT INTO alias_history (name, model, previous, forced, provenance, promoted_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![alias.name, alias.model, previous, forced, provenance, alias.promoted_at],
        )
        .doing("recording a promotion")?;
        let times: i64 = tx
            .query_row("SELECT count(*) - 1 FROM alias_history WHERE name = ?1", [&alias.name], |r| r.get(0))
            .doing("counting promotions")?;
        tx.commit().doing("promoting a model")?;
        Ok(times.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(model: &str, kind: EvalKind) -> EvaluationRecord {
        EvaluationRecord {
            id: 0,
            model: model.into(),
            data_sha256: "d".into(),
            data_file: "v.jsonl".into(),
            decoding: "local".into(),
            kind,
            run_id: None,
            epoch: None,
            sweep_id: None,
            n_examples: 0,
            calls: 2,
            cached: 0,
            input_tokens: 10,
            output_tokens: 2,
            seconds: 0.1,
            created_at: 0.0,
        }
    }

    fn example(i: usize, prediction: &str) -> EvalExample {
        EvalExample {
            example: i,
            line: i + 1,
            conversation_sha256: format!("c{i}"),
            prompt: vec![Message::text("user", format!("q{i}"))],
            reference: "a".into(),
            prediction: prediction.into(),
            probability: Some(0.5),
        }
    }

    #[test]
    fn predictions_are_cached_by_model_conversation_and_decoding() {
        let mut s = Store::open_in_memory().unwrap();
        let p = CachedPrediction { content: "x".into(), probability: None };
        s.put_predictions("m", "t=0", &[("c1".into(), p.clone())]).unwrap();
        let y = CachedPrediction { content: "y".into(), probability: Some(0.2) };
        s.put_predictions("m", "t=1", &[("c1".into(), y), ("c2".into(), p.clone())]).unwrap();
        assert_eq!(s.cached_predictions("m", "t=0").unwrap()["c1"], p);
        assert_eq!(s.cached_predictions("m", "t=1").unwrap()["c1"].content, "y");
        assert_eq!(s.cached_predictions("m", "t=1").unwrap().len(), 2);
        assert!(s.cached_predictions("other", "t=0").unwrap().is_empty());
    }

    #[test]
    fn an_evaluation_is_replaced_and_keeps_its_kind() {
        let mut s = Store::open_in_memory().unwrap();
        let mut run = record("m", EvalKind::Run);
        run.run_id = Some("r-1".into());
        let id = s.record_evaluation(&run, &[example(0, "a"), example(1, "b")]).unwrap();
        let again = s.record_evaluation(&record("m", EvalKind::Model), &[example(0, "z")]).unwrap();
        assert_eq!(id, again);
        let e = s.latest_evaluation("m", "d").unwrap().unwrap();
        assert_eq!((e.kind, e.run_id.as_deref(), e.n_examples), (EvalKind::Run, Some("r-1"), 1));
        let xs = s.evaluation_examples(id).unwrap();
        assert_eq!(xs, [example(0, "z")]);
        assert!(s.latest_evaluation("m", "other").unwrap().is_none());
    }

    #[test]
    fn an_example_stores_its_input_once_and_its_reply_only_when_not_cached() {
        let mut s = Store::open_in_memory().unwrap();
        let cached = |x: &EvalExample| {
            (
                x.conversation_sha256.clone(),
                CachedPrediction { content: x.prediction.clone(), probability: x.probability },
            )
        };
        let (a, b) = (example(0, "a"), example(1, "b"));
        s.put_predictions("m", "local", &[cached(&a), cached(&b)]).unwrap();
        // A reply already cached stays.
        s.put_predictions(
            "m",
            "local",
            &[(a.conversation_sha256.clone(), CachedPrediction { content: "other".into(), probability: None })],
        )
        .unwrap();
        assert_eq!(s.cached_predictions("m", "local").unwrap()[&a.conversation_sha256].content, "a");
        // `b` was graded with another reply than the cached one: that reply is the evaluation's.
        let own = EvalExample { prediction: "b2".into(), ..b.clone() };
        let id = s.record_evaluation(&record("m", EvalKind::Model), &[a.clone(), own.clone()]).unwrap();
        let other = s.record_evaluation(&record("m2", EvalKind::Model), &[a.clone(), b.clone()]).unwrap();
        assert_eq!(s.evaluation_examples(id).unwrap(), [a.clone(), own]);
        assert_eq!(s.evaluation_examples(other).unwrap(), [a, b]);
        let count = |sql: &str| s.conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
        assert_eq!(count("SELECT count(*) FROM eval_inputs"), 2, "one input per example, not per model");
        assert_eq!(count("SELECT count(prediction) FROM eval_examples"), 3, "only the replies not cached");
    }

    #[test]
    fn a_prompt_keeps_its_tool_calls_and_a_text_prompt_is_stored_as_before() {
        use crate::data::{Reply, ToolCall};
        let call = ToolCall { id: "call_1".into(), name: "take_off".into(), arguments: r#"{"m":5}"#.into() };
        let prompt = vec![
            Message::text("user", "up"),
            Message { role: "assistant".into(), tool_calls: vec![call.clone()], ..Message::default() },
            Message { tool_call_id: Some("call_1".into()), ..Message::text("tool", "done") },
        ];
        assert_eq!(parse_messages(&messages_json(&prompt)), prompt);
        assert_eq!(messages_json(&[Message::text("user", "q")]), r#"[{"content":"q","role":"user"}]"#);
        let mut s = Store::open_in_memory().unwrap();
        let reply = Reply { content: String::new(), tool_calls: vec![call] }.encode();
        let x = EvalExample { prompt, prediction: reply.clone(), reference: reply, ..example(0, "") };
        let id = s.record_evaluation(&record("m", EvalKind::Model), std::slice::from_ref(&x)).unwrap();
        assert_eq!(s.evaluation_examples(id).unwrap(), [x]);
    }

    #[test]
    fn grades_and_aliases_round_trip() {
        let mut s = Store::open_in_memory().unwrap();
        s.put_grade("g", "i1", 0.75, "7.5").unwrap();
        assert_eq!(s.cached_grades("g").unwrap()["i1"], 0.75);
        let alias = AliasRecord {
            name: "champion".into(),
            model: "m1".into(),
            run_id: Some("r-1".into()),
            sweep: Some("s".into()),
            provenance: serde_json::json!({"score": 0.5}),
            promoted_at: 1.0,
        };
        assert_eq!(s.set_alias(&alias, false).unwrap(), 0);
        assert_eq!(s.set_alias(&AliasRecord { model: "m2".into(), ..alias.clone() }, true).unwrap(), 1);
        let got = s.alias("champion").unwrap().unwrap();
        assert_eq!((got.model.as_str(), got.provenance["score"].as_f64()), ("m2", Some(0.5)));
        assert_eq!(s.aliases().unwrap().len(), 1);
    }
}
