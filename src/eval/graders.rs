//! Graders: pure functions that score a model's reply against the reference answer, each in [0, 1].
//! They are local versions of OpenAI's `string_check`, `text_similarity` and JSON-field graders, a grader of
//! tool calls, plus the parsing and normalisation of an LLM judge's answer; none of them does I/O.
//!
//! Replies and references come encoded ([`Reply::encode`]): the text graders read a reply as people do
//! ([`Reply::display`], the text itself for a reply without calls); the tool-call grader decodes its calls.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::Reply;

/// How strings are normalised before an exact comparison; the steps run in the order of the fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Normalize {
    /// Replaces every run of white space with one space.
    pub collapse_whitespace: bool,
    /// Removes leading and trailing white space.
    pub trim: bool,
    /// Lowercases (Unicode-aware) so that the comparison ignores case.
    pub lowercase: bool,
}

impl Normalize {
    /// Compares strings exactly, as OpenAI's `string_check` `eq` does.
    pub const NONE: Normalize = Normalize { collapse_whitespace: false, trim: false, lowercase: false };

    /// Returns `s` normalised.
    pub fn apply(&self, s: &str) -> String {
        let mut out = if self.collapse_whitespace { collapse(s) } else { s.to_string() };
        if self.trim {
            out = out.trim().to_string();
        }
        if self.lowercase { out.to_lowercase() } else { out }
    }
}

fn collapse(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_space = false;
    for ch in s.chars() {
        if ch.is_whitespace() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(ch);
            in_space = false;
        }
    }
    out
}

/// A built grader, ready to score replies.
#[derive(Debug, Clone)]
pub enum Grader {
    /// 1 if the reply equals the reference after normalisation, else 0.
    ExactMatch { normalize: Normalize },
    /// 1 if the reply differs from the reference after normalisation, else 0 (`string_check` `ne`).
    NotEqual { normalize: Normalize },
    /// 1 if the raw reply contains the raw reference (`like`, or `ilike` when `ignore_case`), else 0.
    /// An empty reference is contained in every reply.
    Contains { ignore_case: bool },
    /// 1 if the pattern matches anywhere in the reply, else 0; the reference is ignored.
    /// Anchor the pattern with `^…$` to require a whole-reply match.
    Regex { pattern: Regex },
    /// The share of `fields` (dotted paths such as `a.b` or `items.0`) whose values in the reply's JSON equal
    /// those in the reference's JSON; with no fields, 1 iff the whole values are equal. See [`score`].
    JsonFields { fields: Vec<String> },
    /// SQuAD-style token F1. See [`token_f1`].
    TokenF1,
    /// Levenshtein similarity over characters. See [`fuzzy`].
    Fuzzy,
    /// Sentence BLEU-4 with add-one smoothing. See [`bleu`].
    Bleu,
    /// ROUGE-L F1 over lowercased tokens. See [`rouge_l`].
    RougeL,
    /// The reply's tool calls against the reference's. See [`tool_calls`].
    ToolCall { matching: CallMatch },
}

/// How the `tool_call` grader compares a reply's calls with the reference's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallMatch {
    /// 1 when the two sets of calls are equal: names and parsed arguments ([`Reply::same_calls`]).
    Exact,
    /// 1 when the calls' names are equal as multisets (`match = "name"`).
    Names,
    /// Partial credit for the arguments (`arguments = "partial"`). See [`tool_calls`].
    Partial,
}

/// Scores `reply` against `reference`; the result is always within [0, 1] and never NaN.
///
/// For [`Grader::JsonFields`] both texts are trimmed and parsed as JSON; a text that is exactly one fenced
/// block (```` ```json ```` or a bare ```` ``` ````) is parsed from its body. A reply or reference that does not
/// parse scores 0. A field counts as equal only when it is present in both; numbers compare by value (`1` equals
/// `1.0`), and keys that contain a dot cannot be addressed.
pub fn score(grader: &Grader, reply: &str, reference: &str) -> f64 {
    if let Grader::ToolCall { matching } = grader {
        return tool_calls(*matching, &Reply::decode(reply), &Reply::decode(reference)).clamp(0.0, 1.0);
    }
    let (reply, reference) = (shown(reply), shown(reference));
    let (reply, reference) = (reply.as_ref(), reference.as_ref());
    let s = match grader {
        Grader::ExactMatch { normalize } => indicator(normalize.apply(reply) == normalize.apply(reference)),
        Grader::NotEqual { normalize } => indicator(normalize.apply(reply) != normalize.apply(reference)),
        Grader::Contains { ignore_case: false } => indicator(reply.contains(reference)),
        Grader::Contains { ignore_case: true } => indicator(reply.to_lowercase().contains(&reference.to_lowercase())),
        Grader::Regex { pattern } => indicator(pattern.is_match(reply)),
        Grader::JsonFields { fields } => json_fields(fields, reply, reference),
        Grader::TokenF1 => token_f1(reply, reference),
        Grader::Fuzzy => fuzzy(reply, reference),
        Grader::Bleu => bleu(reply, reference),
        Grader::RougeL => rouge_l(reply, reference),
        Grader::ToolCall { .. } => unreachable!("scored above"),
    };
    if s.is_nan() { 0.0 } else { s.clamp(0.0, 1.0) }
}

/// An encoded reply as people read it; a text reply is itself.
fn shown(encoded: &str) -> Cow<'_, str> {
    if encoded.starts_with('\u{1e}') { Cow::Owned(Reply::decode(encoded).display()) } else { Cow::Borrowed(encoded) }
}

/// Scores a reply's tool calls against the reference's; a reference without calls scores 1 exactly when
/// the reply makes none either (its text is not compared).
///
/// - [`CallMatch::Exact`]: 1 when the sets of calls are equal (names, and arguments parsed as JSON with key
///   order ignored; the calls in any order), else 0.
/// - [`CallMatch::Names`]: 1 when the calls' names are equal as multisets, else 0.
/// - [`CallMatch::Partial`]: the reference's calls are taken in order, each paired with the not yet paired
///   reply call of the same name that matches the most of its argument fields (the first on a tie). A pair
///   scores the share of the reference call's top-level argument fields whose values the reply's call has
///   equal (numbers by value, `1` equals `1.0`; fields the reply adds are not counted); a reference call
///   whose arguments are not an object with fields scores 1 when the arguments are equal, else 0; an
///   unpaired call scores 0. The grade is the sum over pairs divided by the larger of the two numbers of
///   calls, so a missing or an extra call costs as much as a wrong one.
pub fn tool_calls(matching: CallMatch, reply: &Reply, reference: &Reply) -> f64 {
    let (got, want) = (&reply.tool_calls, &reference.tool_calls);
    match matching {
        CallMatch::Exact => indicator(reply.same_calls(reference)),
        CallMatch::Names => {
            let (mut a, mut b): (Vec<&str>, Vec<&str>) =
                (got.iter().map(|c| c.name.as_str()).collect(), want.iter().map(|c| c.name.as_str()).collect());
            a.sort_unstable();
            b.sort_unstable();
            indicator(a == b)
        }
        CallMatch::Partial => {
            if want.is_empty() || got.is_empty() {
                return indicator(want.is_empty() && got.is_empty());
            }
            let parsed: Vec<Value> = got.iter().map(|c| c.parsed_arguments()).collect();
            let mut paired = vec![false; got.len()];
            let mut total = 0.0;
            for w in want {
                let arguments = w.parsed_arguments();
                let mut best: Option<(usize, f64)> = None;
                for (i, g) in got.iter().enumerate() {
                    if paired[i] || g.name != w.name {
                        continue;
                    }
                    let s = argument_share(&parsed[i], &arguments);
                    if best.is_none_or(|(_, b)| s > b) {
                        best = Some((i, s));
                    }
                }
                if let Some((i, s)) = best {
                    paired[i] = true;
                    total += s;
                }
            }
            total / want.len().max(got.len()) as f64
        }
    }
}

/// The share of the reference arguments' top-level fields that `got` has equal; arguments that are not
/// an object with fields score whether they are equal.
fn argument_share(got: &Value, want: &Value) -> f64 {
    match want {
        Value::Object(fields) if !fields.is_empty() => {
            let same = fields.iter().filter(|(k, v)| got.get(k.as_str()).is_some_and(|g| json_eq(g, v))).count();
            same as f64 / fields.len() as f64
        }
        _ => indicator(json_eq(got, want)),
    }
}

/// Tells whether the grader only ever scores 0 or 1.
pub fn is_pass_fail(grader: &Grader) -> bool {
    matches!(
        grader,
        Grader::ExactMatch { .. }
            | Grader::NotEqual { .. }
            | Grader::Contains { .. }
            | Grader::Regex { .. }
            | Grader::ToolCall { matching: CallMatch::Exact | CallMatch::Names }
    )
}

/// Whether the grader compares text, so that a reference with tool calls cannot be graded by it.
pub fn is_text(grader: &Grader) -> bool {
    !matches!(grader, Grader::ToolCall { .. })
}

fn indicator(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

fn json_fields(fields: &[String], reply: &str, reference: &str) -> f64 {
    let (Some(got), Some(want)) = (parse_json(reply), parse_json(reference)) else { return 0.0 };
    if fields.is_empty() {
        return indicator(json_eq(&got, &want));
    }
    let equal = fields
        .iter()
        .filter(|f| matches!((lookup(&got, f), lookup(&want, f)), (Some(a), Some(b)) if json_eq(a, b)))
        .count();
    equal as f64 / fields.len() as f64
}

fn parse_json(text: &str) -> Option<Value> {
    let t = text.trim();
    serde_json::from_str(t).ok().or_else(|| serde_json::from_str(fenced_body(t)?).ok())
}

/// Returns the body of `t` when `t` is exactly one fenced block tagged `json` or untagged.
fn fenced_body(t: &str) -> Option<&str> {
    let inner = t.strip_prefix("```")?.strip_suffix("```")?;
    let (tag, body) = inner.split_once('\n')?;
    let tag = tag.trim();
    (tag.is_empty() || tag.eq_ignore_ascii_case("json")).then_some(body)
}

fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, seg| match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => a.get(seg.parse::<usize>().ok()?),
        _ => None,
    })
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, p)| y.get(k).is_some_and(|q| json_eq(p, q)))
        }
        _ => a == b,
    }
}

/// SQuAD's token F1: both texts are lowercased, ASCII punctuation is deleted, the tokens are split on white space,
/// the articles `a`, `an` and `the` are dropped, and F1 is taken over the multiset of shared tokens.
/// Both empty scores 1 and one empty scores 0.
pub fn token_f1(reply: &str, reference: &str) -> f64 {
    fn tokens(s: &str) -> Vec<String> {
        let cleaned: String = s.to_lowercase().chars().filter(|c| !c.is_ascii_punctuation()).collect();
        cleaned.split_whitespace().filter(|t| !matches!(*t, "a" | "an" | "the")).map(String::from).collect()
    }
    let (got, want) = (tokens(reply), tokens(reference));
    if got.is_empty() || want.is_empty() {
        return indicator(got.is_empty() && want.is_empty());
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in &want {
        *counts.entry(t).or_default() += 1;
    }
    let mut same = 0usize;
    for t in &got {
        if let Some(n) = counts.get_mut(t.as_str()).filter(|n| **n > 0) {
            *n -= 1;
            same += 1;
        }
    }
    if same == 0 {
        return 0.0;
    }
    let (p, r) = (same as f64 / got.len() as f64, same as f64 / want.len() as f64);
    2.0 * p * r / (p + r)
}

/// Levenshtein similarity over Unicode scalar values: `1 - distance / max(len_a, len_b)`; both empty scores 1.
///
/// This differs from rapidfuzz's `fuzz.ratio` (used by OpenAI's `fuzzy_match`), which is Indel-based
/// (`1 - indel / (len_a + len_b)`): "kitten" vs "sitting" scores 0.571 here and 0.615 there. Levenshtein counts a
/// substitution as one edit, so a one-character typo in a short answer costs exactly `1 / len`, which is easier to
/// reason about when setting a pass threshold. It costs O(len_a · len_b) time and O(len_b) memory.
pub fn fuzzy(a: &str, b: &str) -> f64 {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let longest = a.len().max(b.len());
    if longest == 0 {
        return 1.0;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    1.0 - prev[b.len()] as f64 / longest as f64
}

/// Sentence BLEU against one reference, over case-sensitive white-space tokens.
///
/// The score is `BP · exp(mean_n ln p_n)` with `BP = min(1, exp(1 - r / c))` for reply length `c` and reference
/// length `r`. The unigram precision `p_1 = m_1 / l_1` is not smoothed (no shared unigram scores 0); each higher
/// order uses add-one smoothing, `p_n = (m_n + 1) / (l_n + 1)`: Lin & Och's (2004) BLEU+1, which is Chen & Cherry's
/// (2014) smoothing 2 and NLTK's `SmoothingFunction().method2` (their "method 1" adds an epsilon instead).
/// The orders run from 1 to `min(4, c)` (sacrebleu's "effective order"), so a reply shorter than four tokens is
/// not punished for lacking long n-grams: identical one-to-three-token texts score 1, and "the cat" against
/// "the cat sat" scores `exp(-0.5)` from the brevity penalty alone. Both empty scores 1; one empty scores 0.
pub fn bleu(reply: &str, reference: &str) -> f64 {
    let (hyp, refr): (Vec<&str>, Vec<&str>) =
        (reply.split_whitespace().collect(), reference.split_whitespace().collect());
    if hyp.is_empty() || refr.is_empty() {
        return indicator(hyp.is_empty() && refr.is_empty());
    }
    let order = hyp.len().min(4);
    let mut log_sum = 0.0;
    for n in 1..=order {
        let mut ref_counts: HashMap<&[&str], usize> = HashMap::new();
        for g in refr.windows(n) {
            *ref_counts.entry(g).or_default() += 1;
        }
        let mut matched = 0usize;
        for g in hyp.windows(n) {
            if let Some(k) = ref_counts.get_mut(g).filter(|k| **k > 0) {
                *k -= 1;
                matched += 1;
            }
        }
        let total = hyp.len() + 1 - n;
        if n == 1 && matched == 0 {
            return 0.0;
        }
        let p = if n == 1 { matched as f64 / total as f64 } else { (matched + 1) as f64 / (total + 1) as f64 };
        log_sum += p.ln();
    }
    let (c, r) = (hyp.len() as f64, refr.len() as f64);
    let bp = if c >= r { 1.0 } else { (1.0 - r / c).exp() };
    bp * (log_sum / order as f64).exp()
}

/// ROUGE-L F1 (beta = 1) from the longest common subsequence of lowercased white-space tokens; punctuation stays
/// part of its token. Both empty scores 1 and one empty scores 0.
pub fn rouge_l(reply: &str, reference: &str) -> f64 {
    let (got, want) = (reply.to_lowercase(), reference.to_lowercase());
    let (got, want): (Vec<&str>, Vec<&str>) = (got.split_whitespace().collect(), want.split_whitespace().collect());
    if got.is_empty() || want.is_empty() {
        return indicator(got.is_empty() && want.is_empty());
    }
    let mut prev = vec![0usize; want.len() + 1];
    let mut cur = prev.clone();
    for g in &got {
        for (j, w) in want.iter().enumerate() {
            cur[j + 1] = if g == w { prev[j] + 1 } else { prev[j + 1].max(cur[j]) };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    let lcs = prev[want.len()] as f64;
    if lcs == 0.0 {
        return 0.0;
    }
    let (p, r) = (lcs / got.len() as f64, lcs / want.len() as f64);
    2.0 * p * r / (p + r)
}

/// Returns `Σ w·s / Σ w` over `(weight, score)` pairs.
///
/// Pairs whose weight is not a finite non-negative number are ignored, a NaN score counts as 0, and the result is
/// 0 when no weight is positive.
pub fn combine(weights: &[(f64, f64)]) -> f64 {
    let valid = weights.iter().filter(|(w, _)| w.is_finite() && *w >= 0.0);
    let (num, den) = valid.fold((0.0, 0.0), |(n, d), (w, s)| (n + w * if s.is_nan() { 0.0 } else { *s }, d + w));
    if den > 0.0 { num / den } else { 0.0 }
}

/// A weighted combination of named grader scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Weighted {
    /// The grader names and their weights.
    pub parts: Vec<(String, f64)>,
}

impl Weighted {
    /// Checks that there is at least one part, that names are unique, and that the weights are finite,
    /// non-negative and not all zero.
    pub fn new(parts: Vec<(String, f64)>) -> Result<Self, GraderError> {
        let mut seen = HashSet::new();
        for (name, w) in &parts {
            if !seen.insert(name.as_str()) {
                return Err(GraderError::DuplicateName(name.clone()));
            }
            if !w.is_finite() || *w < 0.0 {
                return Err(GraderError::BadWeight { name: name.clone(), weight: *w });
            }
        }
        if parts.iter().all(|(_, w)| *w == 0.0) {
            return Err(GraderError::NoWeight);
        }
        Ok(Weighted { parts })
    }

    /// Combines the scores that `score_of` returns for each part's name; a name without a score is an error.
    pub fn score(&self, score_of: impl Fn(&str) -> Option<f64>) -> Result<f64, GraderError> {
        let pairs = self
            .parts
            .iter()
            .map(|(name, w)| score_of(name).map(|s| (*w, s)).ok_or_else(|| GraderError::MissingScore(name.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(combine(&pairs))
    }
}

static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?").expect("the number pattern is valid")
});

/// Normalises an LLM judge's answer to [0, 1].
///
/// If the trimmed text (or its one fenced block) is JSON, the score is its `result` field (a number or a numeric
/// string), or the JSON number itself; any other JSON scores as non-numeric. Otherwise the score is the first
/// number in the text, so "Score: 7/10" gives 7. The value is clamped into `range`, a non-numeric answer takes
/// `range.0` (OpenAI scores it 0), and the result is `(x - lo) / (hi - lo)`. A range that is not finite with
/// `lo < hi` gives 0.
pub fn parse_judge_score(text: &str, range: (f64, f64)) -> f64 {
    let (lo, hi) = range;
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return 0.0;
    }
    let raw = match parse_json(text) {
        Some(Value::Object(m)) => m.get("result").and_then(|v| match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        }),
        Some(Value::Number(n)) => n.as_f64(),
        Some(_) => None,
        None => NUMBER.find(text).and_then(|m| m.as_str().parse::<f64>().ok()),
    };
    let x = raw.filter(|x| !x.is_nan()).unwrap_or(lo).clamp(lo, hi);
    ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
}

/// An error in a grader's configuration.
#[derive(Debug, thiserror::Error)]
pub enum GraderError {
    #[error("grader `{name}`: invalid regex: {error}")]
    Regex { name: String, error: regex::Error },
    #[error("grader `{name}`: the field path `{path}` has an empty segment")]
    BadFieldPath { name: String, path: String },
    #[error("a grader has an empty name")]
    EmptyName,
    #[error("two graders are named `{0}`")]
    DuplicateName(String),
    #[error("grader `{name}`: the weight {weight} is not a finite non-negative number")]
    BadWeight { name: String, weight: f64 },
    #[error("the weights add up to zero")]
    NoWeight,
    #[error("no score for the grader `{0}`")]
    MissingScore(String),
    #[error(
        "grader `{0}`: `arguments = \"partial\"` grades the arguments, but `match = \"name\"` compares the names only"
    )]
    ToolCallOptions(String),
}

/// `match` of a `tool_call` grader: `"call"` (name and arguments, the default) or `"name"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchWord {
    #[default]
    Call,
    Name,
}

/// `arguments` of a `tool_call` grader: `"exact"` (the default) or `"partial"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgumentsWord {
    #[default]
    Exact,
    Partial,
}

fn yes() -> bool {
    true
}

/// One grader of the sweep file's `[evaluation]` table, e.g. `{ type = "contains", ignore_case = true }`.
///
/// Every variant takes an optional `name`; the exact-match variants trim by default and compare case-sensitively.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum GraderSpec {
    ExactMatch {
        #[serde(default)]
        name: Option<String>,
        #[serde(default = "yes")]
        trim: bool,
        #[serde(default = "yes")]
        case_sensitive: bool,
        #[serde(default)]
        collapse_whitespace: bool,
    },
    NotEqual {
        #[serde(default)]
        name: Option<String>,
        #[serde(default = "yes")]
        trim: bool,
        #[serde(default = "yes")]
        case_sensitive: bool,
        #[serde(default)]
        collapse_whitespace: bool,
    },
    Contains {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        ignore_case: bool,
    },
    Regex {
        #[serde(default)]
        name: Option<String>,
        pattern: String,
    },
    Json {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        fields: Vec<String>,
    },
    TokenF1 {
        #[serde(default)]
        name: Option<String>,
    },
    Fuzzy {
        #[serde(default)]
        name: Option<String>,
    },
    Bleu {
        #[serde(default)]
        name: Option<String>,
    },
    RougeL {
        #[serde(default)]
        name: Option<String>,
    },
    ToolCall {
        #[serde(default)]
        name: Option<String>,
        #[serde(rename = "match", default)]
        matching: MatchWord,
        #[serde(default)]
        arguments: ArgumentsWord,
    },
}

impl GraderSpec {
    /// Returns the configured name, or by default the type (`contains_i` for a case-insensitive `contains`).
    pub fn name(&self) -> String {
        let (name, default) = match self {
            GraderSpec::ExactMatch { name, .. } => (name, "exact_match"),
            GraderSpec::NotEqual { name, .. } => (name, "not_equal"),
            GraderSpec::Contains { name, ignore_case: false } => (name, "contains"),
            GraderSpec::Contains { name, ignore_case: true } => (name, "contains_i"),
            GraderSpec::Regex { name, .. } => (name, "regex"),
            GraderSpec::Json { name, .. } => (name, "json"),
            GraderSpec::TokenF1 { name } => (name, "token_f1"),
            GraderSpec::Fuzzy { name } => (name, "fuzzy"),
            GraderSpec::Bleu { name } => (name, "bleu"),
            GraderSpec::RougeL { name } => (name, "rouge_l"),
            GraderSpec::ToolCall { name, matching: MatchWord::Name, .. } => (name, "tool_call_name"),
            GraderSpec::ToolCall { name, arguments: ArgumentsWord::Partial, .. } => (name, "tool_call_partial"),
            GraderSpec::ToolCall { name, .. } => (name, "tool_call"),
        };
        name.clone().unwrap_or_else(|| default.to_string())
    }

    /// Builds the grader: compiles the regex and checks the name and the JSON field paths.
    pub fn build(&self) -> Result<Grader, GraderError> {
        let name = self.name();
        if name.trim().is_empty() {
            return Err(GraderError::EmptyName);
        }
        let normalize = |trim: bool, case_sensitive: bool, collapse_whitespace: bool| Normalize {
            collapse_whitespace,
            trim,
            lowercase: !case_sensitive,
        };
        Ok(match self {
            GraderSpec::ExactMatch { trim, case_sensitive, collapse_whitespace, .. } => {
                Grader::ExactMatch { normalize: normalize(*trim, *case_sensitive, *collapse_whitespace) }
            }
            GraderSpec::NotEqual { trim, case_sensitive, collapse_whitespace, .. } => {
                Grader::NotEqual { normalize: normalize(*trim, *case_sensitive, *collapse_whitespace) }
            }
            GraderSpec::Contains { ignore_case, .. } => Grader::Contains { ignore_case: *ignore_case },
            GraderSpec::Regex { pattern, .. } => {
                Grader::Regex { pattern: Regex::new(pattern).map_err(|error| GraderError::Regex { name, error })? }
            }
            GraderSpec::Json { fields, .. } => {
                if let Some(path) = fields.iter().find(|f| f.split('.').any(str::is_empty)) {
                    return Err(GraderError::BadFieldPath { name, path: path.clone() });
                }
                Grader::JsonFields { fields: fields.clone() }
            }
            GraderSpec::TokenF1 { .. } => Grader::TokenF1,
            GraderSpec::Fuzzy { .. } => Grader::Fuzzy,
            GraderSpec::Bleu { .. } => Grader::Bleu,
            GraderSpec::RougeL { .. } => Grader::RougeL,
            GraderSpec::ToolCall { matching, arguments, .. } => Grader::ToolCall {
                matching: match (matching, arguments) {
                    (MatchWord::Call, ArgumentsWord::Exact) => CallMatch::Exact,
                    (MatchWord::Call, ArgumentsWord::Partial) => CallMatch::Partial,
                    (MatchWord::Name, ArgumentsWord::Exact) => CallMatch::Names,
                    (MatchWord::Name, ArgumentsWord::Partial) => return Err(GraderError::ToolCallOptions(name)),
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64) {
        assert!((got - want).abs() < 1e-9, "got {got}, want {want}");
    }

    fn exact(trim: bool, lowercase: bool, collapse_whitespace: bool) -> Grader {
        Grader::ExactMatch { normalize: Normalize { trim, lowercase, collapse_whitespace } }
    }

    fn spec(toml_text: &str) -> GraderSpec {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn exact_match_applies_each_normalisation_only_when_asked() {
        assert_eq!(score(&exact(false, false, false), "Paris", "Paris"), 1.0);
        assert_eq!(score(&exact(false, false, false), " Paris\n", "Paris"), 0.0);
        assert_eq!(score(&exact(true, false, false), " Paris\n", "Paris"), 1.0);
        assert_eq!(score(&exact(true, false, false), "paris", "Paris"), 0.0);
        assert_eq!(score(&exact(false, true, false), "PARIS", "Paris"), 1.0);
        assert_eq!(score(&exact(false, false, true), "New \t York", "New York"), 1.0);
        assert_eq!(score(&exact(true, false, false), "New  York", "New York"), 0.0);
        assert_eq!(score(&exact(true, true, true), "  new\n\nYORK ", "New York"), 1.0);
        assert_eq!(score(&exact(true, true, true), "New Yorks", "New York"), 0.0);
    }

    #[test]
    fn not_equal_is_the_complement_of_exact_match() {
        let ne = Grader::NotEqual { normalize: Normalize { trim: true, ..Normalize::NONE } };
        assert_eq!(score(&ne, "yes ", "yes"), 0.0);
        assert_eq!(score(&ne, "no", "yes"), 1.0);
        assert_eq!(score(&Grader::NotEqual { normalize: Normalize::NONE }, "yes ", "yes"), 1.0);
    }

    #[test]
    fn contains_is_like_and_ilike() {
        let like = Grader::Contains { ignore_case: false };
        let ilike = Grader::Contains { ignore_case: true };
        assert_eq!(score(&like, "The answer is Paris.", "Paris"), 1.0);
        assert_eq!(score(&like, "The answer is paris.", "Paris"), 0.0);
        assert_eq!(score(&ilike, "The answer is PARIS.", "Paris"), 1.0);
        assert_eq!(score(&ilike, "The answer is Lyon.", "Paris"), 0.0);
        assert_eq!(score(&like, "anything", ""), 1.0);
    }

    #[test]
    fn regex_matches_the_reply_and_ignores_the_reference() {
        let g = spec("type = \"regex\"\npattern = '^\\d{3}-\\d{4}$'").build().unwrap();
        assert_eq!(score(&g, "555-1234", "unused"), 1.0);
        assert_eq!(score(&g, "call 555-1234", "555-1234"), 0.0);
        let unanchored = Grader::Regex { pattern: Regex::new("(?i)yes").unwrap() };
        assert_eq!(score(&unanchored, "Well, YES.", ""), 1.0);
        assert!(is_pass_fail(&g));
    }

    #[test]
    fn json_fields_score_the_share_of_equal_fields() {
        let g = Grader::JsonFields { fields: vec!["name".into(), "address.city".into()] };
        let reference = r#"{"name": "Ada", "address": {"city": "London"}}"#;
        assert_eq!(score(&g, r#"{"address": {"city": "London"}, "name": "Ada", "extra": 1}"#, reference), 1.0);
        assert_eq!(score(&g, r#"{"name": "Ada", "address": {"city": "Paris"}}"#, reference), 0.5);
        assert_eq!(score(&g, r#"{"name": "Ada"}"#, reference), 0.5);
        assert_eq!(score(&g, "Ada lives in London", reference), 0.0);
        assert_eq!(score(&g, r#"{"name": "Ada"}"#, "not json"), 0.0);
        assert_eq!(
            score(&g, "```json\n{\"name\": \"Ada\", \"address\": {\"city\": \"London\"}}\n```\n", reference),
            1.0
        );
        assert_eq!(score(&g, "```\n{\"name\": \"Ada\"}\n```", reference), 0.5);
        assert_eq!(score(&g, "Here it is: ```json\n{\"name\": \"Ada\"}\n```", reference), 0.0);
    }

    #[test]
    fn json_fields_compare_numbers_by_value_and_index_arrays() {
        let g = Grader::JsonFields { fields: vec!["n".into(), "xs.1".into()] };
        assert_eq!(score(&g, r#"{"n": 1.0, "xs": [0, 2]}"#, r#"{"n": 1, "xs": [9, 2]}"#), 1.0);
        assert_eq!(score(&g, r#"{"n": 1.5, "xs": [0]}"#, r#"{"n": 1, "xs": [9, 2]}"#), 0.0);
        let missing_both = Grader::JsonFields { fields: vec!["absent".into()] };
        assert_eq!(score(&missing_both, "{}", "{}"), 0.0);
    }

    #[test]
    fn json_without_fields_compares_whole_values() {
        let g = Grader::JsonFields { fields: vec![] };
        assert_eq!(score(&g, r#" {"a": [1, 2], "b": null} "#, r#"{"b": null, "a": [1, 2.0]}"#), 1.0);
        assert_eq!(score(&g, r#"{"a": [2, 1]}"#, r#"{"a": [1, 2]}"#), 0.0);
        assert_eq!(score(&g, r#"{"a": 1, "b": 2}"#, r#"{"a": 1}"#), 0.0);
    }

    #[test]
    fn token_f1_follows_squad() {
        close(token_f1("the cat sat", "a cat sat down"), 0.8);
        close(token_f1("The Cat, sat!", "cat sat"), 1.0);
        close(token_f1("cat cat cat", "cat"), 0.5);
        close(token_f1("dog", "cat"), 0.0);
        close(token_f1("the", "a"), 1.0);
        close(token_f1("", "cat"), 0.0);
        // Tokens [apple, day] against [one, apple, per, day]: P = 1, R = 1/2, F1 = 2/3.
        close(score(&Grader::TokenF1, "an apple a day", "one apple per day"), 2.0 / 3.0);
    }

    #[test]
    fn fuzzy_is_levenshtein_similarity() {
        close(fuzzy("kitten", "sitting"), 1.0 - 3.0 / 7.0);
        close(fuzzy("", ""), 1.0);
        close(fuzzy("abc", ""), 0.0);
        close(fuzzy("flaw", "lawn"), 0.5);
        close(fuzzy("café", "cafe"), 0.75);
        close(score(&Grader::Fuzzy, "same", "same"), 1.0);
    }

    #[test]
    fn bleu_matches_hand_computed_values() {
        close(bleu("the quick brown fox jumps", "the quick brown fox jumps"), 1.0);
        // Reply "the cat on the mat" (5 tokens) against "the cat is on the mat" (6 tokens): p1 = 5/5,
        // p2 = (3 + 1)/(4 + 1), p3 = (1 + 1)/(3 + 1), p4 = (0 + 1)/(2 + 1), and BP = exp(1 - 6/5).
        let want = (1.0 * 0.8 * 0.5 / 3.0_f64).powf(0.25) * (-0.2_f64).exp();
        close(want, 0.494_738_590_881_838_6);
        close(bleu("the cat on the mat", "the cat is on the mat"), want);
        close(bleu("dog", "the cat"), 0.0);
        close(bleu("", ""), 1.0);
        close(bleu("cat", ""), 0.0);
    }

    #[test]
    fn bleu_uses_the_effective_order_for_short_replies() {
        close(bleu("hello world", "hello world"), 1.0);
        close(bleu("the cat", "the cat sat"), (-0.5_f64).exp());
        // Reply "cat the" against "the cat": p1 = 2/2 and p2 = (0 + 1)/(1 + 1), so sqrt(1/2).
        close(bleu("cat the", "the cat"), 0.5_f64.sqrt());
        // A longer reply has no brevity penalty: p1 = 2/3, p2 = (1 + 1)/(2 + 1), p3 = (0 + 1)/(1 + 1).
        close(bleu("the cat sat", "the cat"), (2.0 / 3.0 * 2.0 / 3.0 * 0.5_f64).cbrt());
    }

    #[test]
    fn rouge_l_is_the_lcs_f_measure() {
        close(rouge_l("police kill the gunman", "police killed the gunman"), 0.75);
        close(rouge_l("the cat", "The cat sat on the mat"), 0.5);
        close(rouge_l("a b", "c d"), 0.0);
        close(rouge_l("", ""), 1.0);
        close(rouge_l("x", ""), 0.0);
    }

    #[test]
    fn scores_stay_in_the_unit_interval() {
        let graders = [
            Grader::TokenF1,
            Grader::Fuzzy,
            Grader::Bleu,
            Grader::RougeL,
            Grader::JsonFields { fields: vec!["a".into()] },
            exact(true, true, true),
        ];
        let texts = ["", " ", "```", "```json\n```", "{\"a\":", "ü ß 🦀 the", "a a a a a a", "1e999"];
        for g in &graders {
            for r in texts {
                for t in texts {
                    let s = score(g, r, t);
                    assert!((0.0..=1.0).contains(&s), "{g:?} on {r:?}, {t:?} gave {s}");
                }
            }
        }
        assert!(!is_pass_fail(&Grader::Bleu) && is_pass_fail(&Grader::Contains { ignore_case: true }));
    }

    fn calls(content: &str, calls: &[(&str, &str)]) -> String {
        let tool_calls = (calls.iter())
            .map(|(name, arguments)| crate::data::ToolCall {
                id: String::new(),
                name: name.to_string(),
                arguments: arguments.to_string(),
            })
            .collect();
        Reply { content: content.into(), tool_calls }.encode()
    }

    fn tool(toml_text: &str) -> Grader {
        spec(&format!("type = \"tool_call\"\n{toml_text}")).build().unwrap()
    }

    #[test]
    fn tool_call_grades_calls_by_name_and_arguments_or_partly() {
        let (exact, names, partial) = (tool(""), tool("match = \"name\""), tool("arguments = \"partial\""));
        let reference =
            calls("", &[("take_off", r#"{"altitude_m": 50, "speed": 5}"#), ("set_camera", r#"{"mode": "video"}"#)]);
        // The same calls in another order, keys reordered, 50 written as 50: all three give 1.
        let same = calls("", &[("set_camera", r#"{"mode":"video"}"#), ("take_off", r#"{"speed":5,"altitude_m":50}"#)]);
        for g in [&exact, &names, &partial] {
            close(score(g, &same, &reference), 1.0);
        }
        // One argument of two wrong in take_off: the names agree; partial credit is (1/2 + 1) / 2.
        let slow =
            calls("", &[("take_off", r#"{"altitude_m": 50.0, "speed": 3}"#), ("set_camera", r#"{"mode": "video"}"#)]);
        close(score(&exact, &slow, &reference), 0.0);
        close(score(&names, &slow, &reference), 1.0);
        close(score(&partial, &slow, &reference), 0.75);
        // An extra call: no name match, and partial divides by the three calls: (1/2 + 1) / 3.
        let extra = calls(
            "",
            &[
                ("take_off", r#"{"altitude_m": 50, "speed": 3}"#),
                ("set_camera", r#"{"mode": "video"}"#),
                ("land", "{}"),
            ],
        );
        close(score(&names, &extra, &reference), 0.0);
        close(score(&partial, &extra, &reference), 0.5);
        // A missing call and a call of another name score 0 for their part; a reply without calls scores 0.
        close(score(&partial, &calls("", &[("set_camera", r#"{"mode": "photo"}"#)]), &reference), 0.0);
        close(score(&partial, &calls("", &[("land", "{}"), ("set_camera", r#"{"mode":"video"}"#)]), &reference), 0.5);
        close(score(&partial, "Taking off now", &reference), 0.0);
        // Arguments that are no object with fields count whole.
        close(score(&partial, &calls("", &[("land", "")]), &calls("", &[("land", "{}")])), 1.0);
        close(score(&partial, &calls("", &[("f", "[1]")]), &calls("", &[("f", "[2]")])), 0.0);
        // A text reference: 1 when the reply makes no call either, whatever its text.
        for g in [&exact, &names, &partial] {
            close(score(g, "something else", "Hello"), 1.0);
            close(score(g, &calls("Hello", &[("land", "{}")]), "Hello"), 0.0);
        }
        assert!(is_pass_fail(&exact) && is_pass_fail(&names) && !is_pass_fail(&partial));
        assert!(!is_text(&exact) && is_text(&Grader::Bleu));
    }

    #[test]
    fn text_graders_read_an_encoded_reply_as_people_do() {
        let reply = calls("", &[("land", r#"{"now": true}"#)]);
        assert_eq!(score(&Grader::Contains { ignore_case: false }, &reply, "land({\"now\":true})"), 1.0);
        assert_eq!(score(&exact(true, false, false), &reply, "land"), 0.0);
    }

    #[test]
    fn tool_call_specs_name_their_options_and_refuse_contradictions() {
        assert_eq!(spec("type = \"tool_call\"").name(), "tool_call");
        assert_eq!(spec("type = \"tool_call\"\nmatch = \"name\"").name(), "tool_call_name");
        assert_eq!(spec("type = \"tool_call\"\narguments = \"partial\"").name(), "tool_call_partial");
        assert_eq!(spec("type = \"tool_call\"\nmatch = \"call\"\narguments = \"exact\"").name(), "tool_call");
        let both = spec("type = \"tool_call\"\nmatch = \"name\"\narguments = \"partial\"").build().unwrap_err();
        assert!(matches!(both, GraderError::ToolCallOptions(_)), "{both}");
        assert!(toml::from_str::<GraderSpec>("type = \"tool_call\"\nmatch = \"names\"").is_err());
        assert!(toml::from_str::<GraderSpec>("type = \"tool_call\"\nargs = \"partial\"").is_err());
    }

    #[test]
    fn combine_weights_scores() {
        close(combine(&[(1.0, 1.0), (3.0, 0.0)]), 0.25);
        close(combine(&[(2.0, 0.5), (0.0, 1.0)]), 0.5);
        close(combine(&[(-1.0, 1.0), (1.0, 0.2), (f64::NAN, 1.0)]), 0.2);
        close(combine(&[(1.0, f64::NAN), (1.0, 1.0)]), 0.5);
        close(combine(&[]), 0.0);
        close(combine(&[(0.0, 1.0)]), 0.0);
    }

    #[test]
    fn weighted_validates_and_looks_up_scores() {
        let w = Weighted::new(vec![("exact".into(), 1.0), ("f1".into(), 3.0)]).unwrap();
        let scores = |name: &str| match name {
            "exact" => Some(1.0),
            "f1" => Some(0.5),
            _ => None,
        };
        close(w.score(scores).unwrap(), 0.625);
        assert!(matches!(w.score(|_| None), Err(GraderError::MissingScore(n)) if n == "exact"));
        assert!(matches!(
            Weighted::new(vec![("a".into(), 1.0), ("a".into(), 1.0)]),
            Err(GraderError::DuplicateName(_))
        ));
        assert!(matches!(Weighted::new(vec![("a".into(), -1.0)]), Err(GraderError::BadWeight { .. })));
        assert!(matches!(Weighted::new(vec![("a".into(), f64::INFINITY)]), Err(GraderError::BadWeight { .. })));
        assert!(matches!(Weighted::new(vec![("a".into(), 0.0)]), Err(GraderError::NoWeight)));
        assert!(matches!(Weighted::new(vec![]), Err(GraderError::NoWeight)));
    }

    #[test]
    fn judge_scores_are_parsed_clamped_and_normalised() {
        close(parse_judge_score(r#"{"result": 0.8, "steps": []}"#, (0.0, 1.0)), 0.8);
        close(parse_judge_score("```json\n{\"result\": 4}\n```", (1.0, 5.0)), 0.75);
        close(parse_judge_score(r#"{"result": "6"}"#, (0.0, 10.0)), 0.6);
        close(parse_judge_score("Score: 7/10", (0.0, 10.0)), 0.7);
        close(parse_judge_score("I'd give it 2.5", (0.0, 5.0)), 0.5);
        close(parse_judge_score("9", (0.0, 10.0)), 0.9);
        close(parse_judge_score("Score: 15", (0.0, 10.0)), 1.0);
        close(parse_judge_score("-3", (0.0, 10.0)), 0.0);
        close(parse_judge_score(r#"{"result": 1e999}"#, (0.0, 10.0)), 1.0);
        close(parse_judge_score("no idea", (0.0, 10.0)), 0.0);
        close(parse_judge_score(r#"{"score": 9}"#, (0.0, 10.0)), 0.0);
        close(parse_judge_score(r#"{"result": null}"#, (0.0, 10.0)), 0.0);
        close(parse_judge_score("garbage", (-5.0, 5.0)), 0.0);
        close(parse_judge_score("7", (5.0, 5.0)), 0.0);
    }

    #[test]
    fn specs_deserialize_with_defaults_and_names() {
        let e = spec("type = \"exact_match\"");
        assert_eq!(
            e,
            GraderSpec::ExactMatch { name: None, trim: true, case_sensitive: true, collapse_whitespace: false }
        );
        assert_eq!(e.name(), "exact_match");
        assert!(
            matches!(e.build().unwrap(), Grader::ExactMatch { normalize } if normalize.trim && !normalize.lowercase)
        );
        let ne = spec("type = \"not_equal\"\ncase_sensitive = false\ncollapse_whitespace = true\ntrim = false");
        let Grader::NotEqual { normalize } = ne.build().unwrap() else { panic!("{ne:?}") };
        assert_eq!(normalize, Normalize { collapse_whitespace: true, trim: false, lowercase: true });
        assert_eq!(spec("type = \"contains\"\nignore_case = true").name(), "contains_i");
        assert_eq!(spec("type = \"contains\"").name(), "contains");
        assert_eq!(
            spec("type = \"json\"\nfields = [\"a.b\"]").build().map(|g| format!("{g:?}")).unwrap(),
            "JsonFields { fields: [\"a.b\"] }"
        );
        for (ty, name) in [("token_f1", "token_f1"), ("fuzzy", "fuzzy"), ("bleu", "bleu"), ("rouge_l", "rouge_l")] {
            assert_eq!(spec(&format!("type = \"{ty}\"")).name(), name);
        }
        assert_eq!(spec("type = \"bleu\"\nname = \"b4\"").name(), "b4");
    }

    #[test]
    fn bad_specs_are_rejected() {
        assert!(toml::from_str::<GraderSpec>("type = \"contains\"\nignorecase = true").is_err());
        assert!(toml::from_str::<GraderSpec>("type = \"regex\"").is_err());
        assert!(toml::from_str::<GraderSpec>("type = \"meteor\"").is_err());
        assert!(matches!(spec("type = \"regex\"\npattern = \"(\"").build(), Err(GraderError::Regex { .. })));
        assert!(matches!(spec("type = \"json\"\nfields = [\"a..b\"]").build(), Err(GraderError::BadFieldPath { .. })));
        assert!(matches!(spec("type = \"fuzzy\"\nname = \" \"").build(), Err(GraderError::EmptyName)));
    }
}
