//! Per-example scores: every grader of a sweep applied to stored replies,
//! with the judge and command grades read from their cache. Pure: grading
//! again from stored replies never calls a provider.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};

use super::config::{COMBINED, Kind, hex};
use super::graders;
use crate::data::{Message, Prompt};
pub use crate::rank::Grades;
use crate::spec::Evaluation;
use crate::store::EvalExample;

/// The cached grades of the graders that cost a call or a process: by
/// grader name, then by [`input_sha256`].
pub type GradeCache = HashMap<String, HashMap<String, f64>>;

/// A hash of messages: their roles and contents, and the tool calls and the call id of the
/// messages that have them (so messages without them hash as before tool calls existed).
pub fn conversation_sha256(prompt: &[Message]) -> String {
    let mut h = Sha256::new();
    hash_messages(&mut h, prompt);
    hex(&h.finalize())
}

/// The key of a prompt's reply in the predictions cache: its messages as
/// [`conversation_sha256`] hashes them, then the line's `tools`, `tool_choice` and
/// `parallel_tool_calls` when it has them: the same messages with other tools are another prompt.
pub fn prompt_sha256(prompt: &Prompt) -> String {
    let mut h = Sha256::new();
    hash_messages(&mut h, &prompt.messages);
    let settings = [
        ("\u{1e}tools", prompt.tools.as_ref().map(|t| t.to_string())),
        ("\u{1e}tool_choice", prompt.tool_choice.as_ref().map(|t| t.to_string())),
        ("\u{1e}parallel_tool_calls", prompt.parallel_tool_calls.map(|p| p.to_string())),
    ];
    for (tag, value) in settings {
        if let Some(value) = value {
            part(&mut h, tag);
            part(&mut h, &value);
        }
    }
    hex(&h.finalize())
}

fn part(h: &mut Sha256, text: &str) {
    h.update((text.len() as u64).to_le_bytes());
    h.update(text.as_bytes());
}

fn hash_messages(h: &mut Sha256, messages: &[Message]) {
    for m in messages {
        part(h, &m.role);
        part(h, &m.content);
        // A tag no role can be, so these parts cannot pass for another message.
        if !m.tool_calls.is_empty() {
            part(h, "\u{1e}tool_calls");
            let calls: Vec<[&str; 3]> =
                m.tool_calls.iter().map(|c| [c.id.as_str(), c.name.as_str(), c.arguments.as_str()]).collect();
            part(h, &serde_json::to_string(&calls).unwrap_or_default());
        }
        if let Some(id) = &m.tool_call_id {
            part(h, "\u{1e}tool_call_id");
            part(h, id);
        }
    }
}

/// The key of a grade in the grade cache: a hash of the prompt, the
/// reference and the reply.
pub fn input_sha256(prompt: &[Message], reference: &str, reply: &str) -> String {
    let mut h = Sha256::new();
    h.update(conversation_sha256(prompt).as_bytes());
    for text in [reference, reply] {
        part(&mut h, text);
    }
    hex(&h.finalize())
}

/// Grades every example with every grader of `evaluation`; cached graders
/// read `cache`, and a grader missing any example's grade is `None`.
pub fn grade(evaluation: &Evaluation, examples: &[EvalExample], cache: &GradeCache) -> Grades {
    let empty = HashMap::new();
    let by_grader = (evaluation.graders.iter())
        .map(|g| match &g.kind {
            Kind::Pure(grader) => {
                Some(examples.iter().map(|x| graders::score(grader, &x.prediction, &x.reference)).collect())
            }
            Kind::Judge(_) | Kind::Command(_) => {
                let known = cache.get(&g.name).unwrap_or(&empty);
                examples
                    .iter()
                    .map(|x| known.get(&input_sha256(&x.prompt, &x.reference, &x.prediction)).copied())
                    .collect()
            }
        })
        .collect();
    assemble(evaluation, by_grader, examples.len())
}

/// The grades of `n` examples from each grader's scores (in the order of `evaluation.graders`,
/// `None` where incomplete), with their combination when the sweep has one.
pub fn assemble(evaluation: &Evaluation, by_grader: Vec<Option<Vec<f64>>>, n: usize) -> Grades {
    let mut out = BTreeMap::new();
    for (g, scores) in evaluation.graders.iter().zip(by_grader) {
        out.insert(g.name.clone(), scores);
    }
    if let Some(w) = &evaluation.combined {
        // Each part's scores looked up once, not once per example.
        let parts: Vec<(&str, Option<&Vec<f64>>)> = (w.parts.iter())
            .map(|(name, _)| (name.as_str(), out.get(name).and_then(|s: &Option<Vec<f64>>| s.as_ref())))
            .collect();
        let of = |name: &str| parts.iter().find(|(n, _)| *n == name).and_then(|(_, s)| *s);
        let combined: Option<Vec<f64>> = (0..n).map(|i| w.score(|name| of(name).map(|s| s[i])).ok()).collect();
        out.insert(COMBINED.to_string(), combined);
    }
    Grades(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse;

    fn evaluation(text: &str) -> Evaluation {
        let sweep = format!(
            "name = \"s\"\nbase_model = \"local/ngram\"\ntraining_file = \"t\"\nvalidation_file = \"v\"\n\
             [hyperparameters]\nn_epochs = 1\nlearning_rate_multiplier = 1.0\nbatch_size = 1\n[evaluation]\n{text}"
        );
        parse(std::path::Path::new("s.toml"), &sweep).unwrap().evaluation
    }

    fn example(reference: &str, prediction: &str) -> EvalExample {
        EvalExample {
            example: 0,
            line: 1,
            conversation_sha256: String::new(),
            prompt: vec![Message::text("user", "q")],
            reference: reference.into(),
            prediction: prediction.into(),
            probability: None,
        }
    }

    #[test]
    fn pure_graders_and_the_combination_score_every_example() {
        let e = evaluation(
            "metric = \"combined\"\ncombined = { exact_match = 1, token_f1 = 1 }\n[[evaluation.graders]]\ntype = \"token_f1\"",
        );
        let xs = [example("the cat sat", "the cat sat"), example("a cat sat down", "the cat sat")];
        let g = grade(&e, &xs, &GradeCache::new());
        assert_eq!(g.get("exact_match"), Some(&[1.0, 0.0][..]));
        assert_eq!(g.get("token_f1"), Some(&[1.0, 0.8][..]));
        let c = g.get("combined").unwrap();
        assert!((c[0] - 1.0).abs() < 1e-12 && (c[1] - 0.4).abs() < 1e-12, "{c:?}");
        assert!((g.mean("combined").unwrap() - 0.7).abs() < 1e-12);
    }

    #[test]
    fn cached_graders_read_the_cache_and_are_incomplete_without_it() {
        let e = evaluation("[[evaluation.graders]]\ntype = \"judge\"\nmodel = \"m\"\nrubric = \"r\"");
        let xs = [example("a", "a"), example("b", "c")];
        assert_eq!(grade(&e, &xs, &GradeCache::new()).0["judge"], None);
        let mut cache = GradeCache::new();
        let known: HashMap<String, f64> =
            xs.iter().map(|x| (input_sha256(&x.prompt, &x.reference, &x.prediction), 0.5)).collect();
        cache.insert("judge".into(), known);
        assert_eq!(grade(&e, &xs, &cache).get("judge"), Some(&[0.5, 0.5][..]));
    }

    #[test]
    fn a_prompt_key_covers_its_tools_and_calls_and_a_text_prompt_keeps_its_key() {
        use crate::data::ToolCall;
        let messages = vec![Message::text("system", "s"), Message::text("user", "q")];
        let plain = Prompt::messages(messages.clone());
        assert_eq!(prompt_sha256(&plain), conversation_sha256(&messages));
        // The key of a text prompt is the hash it had before tool calls: length-prefixed roles and contents.
        let mut h = Sha256::new();
        for text in ["system", "s", "user", "q"] {
            h.update((text.len() as u64).to_le_bytes());
            h.update(text.as_bytes());
        }
        assert_eq!(prompt_sha256(&plain), hex(&h.finalize()));
        let tools = |name: &str| Some(serde_json::json!([{"type": "function", "function": {"name": name}}]));
        let with = |p: Prompt| prompt_sha256(&p);
        let a = with(Prompt { tools: tools("a"), ..plain.clone() });
        assert_ne!(a, prompt_sha256(&plain));
        assert_ne!(a, with(Prompt { tools: tools("b"), ..plain.clone() }));
        assert_eq!(a, with(Prompt { tools: tools("a"), ..plain.clone() }));
        assert_ne!(a, with(Prompt { tools: tools("a"), tool_choice: Some("required".into()), ..plain.clone() }));
        assert_ne!(a, with(Prompt { tools: tools("a"), parallel_tool_calls: Some(false), ..plain.clone() }));
        let call = |arguments: &str| Message {
            role: "assistant".into(),
            tool_calls: vec![ToolCall { id: "c".into(), name: "f".into(), arguments: arguments.into() }],
            ..Message::default()
        };
        let calls = |arguments: &str| conversation_sha256(&[Message::text("user", "q"), call(arguments)]);
        assert_ne!(calls("{}"), calls(r#"{"x":1}"#));
        assert_ne!(calls("{}"), conversation_sha256(&[Message::text("user", "q"), Message::text("assistant", "")]));
        let answer = |id: &str| Message { tool_call_id: Some(id.into()), ..Message::text("tool", "ok") };
        assert_ne!(conversation_sha256(&[answer("a")]), conversation_sha256(&[answer("b")]));
    }

    #[test]
    fn hashes_separate_their_fields() {
        let m = |c: &str| vec![Message::text("user", c)];
        assert_ne!(conversation_sha256(&m("ab")), conversation_sha256(&m("a b")));
        assert_ne!(input_sha256(&m("q"), "ab", "c"), input_sha256(&m("q"), "a", "bc"));
        assert_eq!(input_sha256(&m("q"), "a", "b"), input_sha256(&m("q"), "a", "b"));
    }
}
