//! The graders of a sweep's `[evaluation]` table: their configuration as
//! written, checked and built, and the fingerprints that key the grade cache.
//! Pure: nothing here does I/O.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::graders::{self, Grader, GraderSpec};
use crate::data::{ChatFile, DataError};

/// The name of the weighted combination of graders, when the sweep has one.
pub const COMBINED: &str = "combined";

/// A model-graded judge: a rubric sent to a judge model through the
/// provider's chat completion; the first number of its answer (or the
/// `result` of a JSON answer) is clamped to `range` and scaled to [0, 1].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeSpec {
    #[serde(default)]
    pub name: Option<String>,
    /// The judge model, e.g. `gpt-4.1-mini-2025-04-14`.
    pub model: String,
    /// What to judge and how to score it. `{{prompt}}`, `{{reference}}` and
    /// `{{reply}}` (or OpenAI's `{{item.input}}`, `{{item.reference}}` and
    /// `{{sample.output_text}}`) are replaced by the example's texts.
    pub rubric: String,
    /// The scores the rubric asks for, lowest first.
    #[serde(default = "unit_range")]
    pub range: [f64; 2],
}

/// An external grader: a program that reads the example as JSON on stdin
/// and prints a score.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    #[serde(default)]
    pub name: Option<String>,
    /// The program and its arguments, run in the sweep file's folder without a shell.
    pub command: Vec<String>,
    /// Seconds before the program is killed and the example left ungraded.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
    /// The scores the program prints, lowest first.
    #[serde(default = "unit_range")]
    pub range: [f64; 2],
}

fn unit_range() -> [f64; 2] {
    [0.0, 1.0]
}

fn default_timeout() -> f64 {
    10.0
}

/// A grader as written in the sweep file.
#[derive(Debug, Clone, PartialEq)]
pub enum GraderConfig {
    Builtin(GraderSpec),
    Judge(JudgeSpec),
    Command(CommandSpec),
}

/// How a grader scores a reply.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A pure function of the reply and the reference.
    Pure(Grader),
    /// A judge model, through the provider; its grades are cached.
    Judge(JudgeSpec),
    /// A user's program; its grades are cached.
    Command(CommandSpec),
}

/// One configured grader, checked and built.
#[derive(Debug, Clone)]
pub struct NamedGrader {
    pub name: String,
    pub config: GraderConfig,
    pub kind: Kind,
}

impl PartialEq for NamedGrader {
    fn eq(&self, other: &NamedGrader) -> bool {
        self.name == other.name && self.config == other.config
    }
}

impl NamedGrader {
    /// Builds a grader from its configuration.
    pub fn new(config: GraderConfig) -> Result<NamedGrader, String> {
        let (name, kind) = match &config {
            GraderConfig::Builtin(spec) => (spec.name(), Kind::Pure(spec.build().map_err(|e| e.to_string())?)),
            GraderConfig::Judge(j) => {
                if j.model.trim().is_empty() {
                    return Err("the judge's `model` is empty".into());
                }
                if j.rubric.trim().is_empty() {
                    return Err("the judge's `rubric` is empty".into());
                }
                check_range(j.range)?;
                (j.name.clone().unwrap_or_else(|| "judge".into()), Kind::Judge(j.clone()))
            }
            GraderConfig::Command(c) => {
                if c.command.first().is_none_or(|p| p.trim().is_empty()) {
                    return Err("`command` must name a program, e.g. `command = [\"python3\", \"grade.py\"]`".into());
                }
                if !(c.timeout_seconds > 0.0 && c.timeout_seconds <= 3600.0) {
                    return Err(format!("`timeout_seconds` = {} is not between 0 and 3600", c.timeout_seconds));
                }
                check_range(c.range)?;
                (c.name.clone().unwrap_or_else(|| "command".into()), Kind::Command(c.clone()))
            }
        };
        check_name(&name)?;
        Ok(NamedGrader { name, config, kind })
    }

    /// A built-in grader with its defaults, by its type name (`exact_match`,
    /// `token_f1`, …); `None` for a type that needs settings.
    pub fn builtin(type_name: &str) -> Option<NamedGrader> {
        let table: toml::Table = toml::from_str(&format!("type = \"{type_name}\"")).ok()?;
        match parse(&table) {
            Ok(g @ NamedGrader { kind: Kind::Pure(_), .. }) if g.name == type_name => Some(g),
            _ => None,
        }
    }

    /// Whether the grader only ever scores 0 or 1 (the interval is then Wilson's).
    pub fn is_pass_fail(&self) -> bool {
        matches!(&self.kind, Kind::Pure(g) if graders::is_pass_fail(g))
    }

    /// The grader's type as written (`exact_match`, `judge`, …).
    pub fn type_name(&self) -> String {
        match &self.config {
            GraderConfig::Builtin(spec) => {
                let v = serde_json::to_value(spec).unwrap_or_default();
                v["type"].as_str().unwrap_or("builtin").to_string()
            }
            GraderConfig::Judge(_) => "judge".into(),
            GraderConfig::Command(_) => "command".into(),
        }
    }

    /// Whether grading costs a call or a process, so grades are cached.
    pub fn is_cached(&self) -> bool {
        !matches!(self.kind, Kind::Pure(_))
    }

    /// What decides a grade, not the name: a hash of the type and settings.
    /// A command grader's key also hashes its files (see `command::key`).
    pub fn fingerprint(&self) -> String {
        let value = match &self.config {
            GraderConfig::Builtin(spec) => serde_json::to_value(spec),
            GraderConfig::Judge(j) => {
                serde_json::to_value(JudgeSpec { name: None, ..j.clone() }).map(|v| tagged("judge", v))
            }
            GraderConfig::Command(c) => {
                serde_json::to_value(CommandSpec { name: None, timeout_seconds: 0.0, ..c.clone() })
                    .map(|v| tagged("command", v))
            }
        };
        let text = value.map(|v| v.to_string()).unwrap_or_default();
        hex(&Sha256::digest(text.as_bytes()))[..16].to_string()
    }

    /// The configuration as JSON, for provenance.
    pub fn describe(&self) -> serde_json::Value {
        let v = match &self.config {
            GraderConfig::Builtin(spec) => serde_json::to_value(spec),
            GraderConfig::Judge(j) => serde_json::to_value(j).map(|v| tagged("judge", v)),
            GraderConfig::Command(c) => serde_json::to_value(c).map(|v| tagged("command", v)),
        };
        let mut v = v.unwrap_or_default();
        v["name"] = serde_json::Value::String(self.name.clone());
        v
    }
}

fn tagged(kind: &str, mut v: serde_json::Value) -> serde_json::Value {
    v["type"] = serde_json::Value::String(kind.into());
    v
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn check_range([lo, hi]: [f64; 2]) -> Result<(), String> {
    if lo.is_finite() && hi.is_finite() && lo < hi {
        Ok(())
    } else {
        Err(format!("`range` = [{lo}, {hi}] must be two finite numbers, the lower first"))
    }
}

/// Checks a grader's name: 1 to 64 letters, digits, `-`, `_` or `.`, and not
/// the reserved `combined`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(format!("`{name}` is not a usable grader name: use 1 to 64 letters, digits, `-`, `_` or `.`"));
    }
    if name == COMBINED {
        return Err(format!("`{COMBINED}` is reserved for the weighted combination"));
    }
    Ok(())
}

/// Parses one `[[evaluation.graders]]` table.
pub fn parse(table: &toml::Table) -> Result<NamedGrader, String> {
    let kind = match table.get("type") {
        Some(toml::Value::String(s)) => s.clone(),
        Some(other) => return Err(format!("`type` must be a string, found {}", other.type_str())),
        None => return Err("missing `type`".into()),
    };
    let mut rest = table.clone();
    let config = match kind.as_str() {
        "judge" => {
            rest.remove("type");
            GraderConfig::Judge(JudgeSpec::deserialize(toml::Value::Table(rest)).map_err(|e| clean(&e))?)
        }
        "command" => {
            rest.remove("type");
            GraderConfig::Command(CommandSpec::deserialize(toml::Value::Table(rest)).map_err(|e| clean(&e))?)
        }
        _ => GraderConfig::Builtin(GraderSpec::deserialize(toml::Value::Table(rest)).map_err(|e| {
            let m = clean(&e);
            if m.contains("unknown variant") {
                format!("unknown grader type `{kind}`; the types are {}", TYPES.join(", "))
            } else {
                m
            }
        })?),
    };
    NamedGrader::new(config)
}

/// The grader types, as written in `type = "…"`.
pub const TYPES: [&str; 12] = [
    "exact_match",
    "not_equal",
    "contains",
    "regex",
    "json",
    "token_f1",
    "fuzzy",
    "bleu",
    "rouge_l",
    "tool_call",
    "judge",
    "command",
];

/// Refuses a text grader (every built-in one but `tool_call`) on data whose references make tool
/// calls: it would grade the calls' rendering as text, and a model's calls would score 0. The
/// error names the grader, the file and the first such line.
pub fn check_references(evaluation: &crate::spec::Evaluation, data: &ChatFile) -> Result<(), DataError> {
    let Some(grader) = evaluation.graders.iter().find(|g| matches!(&g.kind, Kind::Pure(p) if graders::is_text(p)))
    else {
        return Ok(());
    };
    let calling: Vec<usize> = (data.conversations.iter())
        .filter(|c| c.reference_reply().is_some_and(|r| r.has_tool_calls()))
        .map(|c| c.line)
        .collect();
    let Some(&line) = calling.first() else { return Ok(()) };
    Err(DataError {
        path: data.path.clone(),
        line: Some(line),
        message: format!(
            "the grader `{}` compares text, but the reference reply on this line makes tool calls ({} of {} \
             references do)",
            grader.name,
            calling.len(),
            data.conversations.len()
        ),
        hint: format!(
            "grade tool calls with `[[evaluation.graders]]` `type = \"tool_call\"` (and `metric = \"tool_call\"`) in \
             place of `{}`; `match = \"name\"` or `arguments = \"partial\"` give partial credit",
            grader.name
        ),
    })
}

fn clean(e: &toml::de::Error) -> String {
    e.message().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn parses_every_kind_with_default_names() {
        assert_eq!(parse(&table("type = \"token_f1\"")).unwrap().name, "token_f1");
        let judge =
            parse(&table("type = \"judge\"\nmodel = \"m\"\nrubric = \"Rate {{reply}}\"\nrange = [1, 5]")).unwrap();
        assert_eq!(judge.name, "judge");
        assert!(matches!(&judge.kind, Kind::Judge(j) if j.range == [1.0, 5.0]));
        assert!(!judge.is_pass_fail() && judge.is_cached());
        let cmd = parse(&table("type = \"command\"\nname = \"py\"\ncommand = [\"python3\", \"g.py\"]")).unwrap();
        assert_eq!(cmd.name, "py");
        assert!(matches!(&cmd.kind, Kind::Command(c) if c.timeout_seconds == 10.0));
        assert!(parse(&table("type = \"exact_match\"")).unwrap().is_pass_fail());
        assert_eq!(cmd.type_name(), "command");
        assert_eq!(parse(&table("type = \"rouge_l\"")).unwrap().type_name(), "rouge_l");
    }

    #[test]
    fn rejects_bad_settings_with_a_reason() {
        let e = parse(&table("type = \"judge\"\nmodel = \"m\"\nrubric = \"r\"\nbogus = 1")).unwrap_err();
        assert!(e.contains("unknown field `bogus`"), "{e}");
        assert!(parse(&table("type = \"judge\"\nmodel = \" \"\nrubric = \"r\"")).unwrap_err().contains("model"));
        assert!(parse(&table("type = \"judge\"\nmodel = \"m\"\nrubric = \"r\"\nrange = [5, 1]")).is_err());
        assert!(parse(&table("type = \"command\"\ncommand = []")).unwrap_err().contains("name a program"));
        assert!(parse(&table("type = \"command\"\ncommand = [\"x\"]\ntimeout_seconds = 0")).is_err());
        assert!(parse(&table("type = \"meteor\"")).unwrap_err().contains("unknown grader type `meteor`"));
        assert!(parse(&table("name = \"x\"")).unwrap_err().contains("missing `type`"));
        assert!(parse(&table("type = \"bleu\"\nname = \"combined\"")).unwrap_err().contains("reserved"));
        assert!(parse(&table("type = \"bleu\"\nname = \"a b\"")).unwrap_err().contains("not a usable"));
        assert!(parse(&table("type = \"regex\"\npattern = \"(\"")).unwrap_err().contains("invalid regex"));
    }

    #[test]
    fn fingerprints_ignore_the_name_and_the_timeout_but_not_the_settings() {
        let a = parse(&table("type = \"judge\"\nmodel = \"m\"\nrubric = \"r\"")).unwrap();
        let b = parse(&table("type = \"judge\"\nname = \"other\"\nmodel = \"m\"\nrubric = \"r\"")).unwrap();
        let c = parse(&table("type = \"judge\"\nmodel = \"m\"\nrubric = \"r2\"")).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        let t1 = parse(&table("type = \"command\"\ncommand = [\"x\"]\ntimeout_seconds = 1")).unwrap();
        let t2 = parse(&table("type = \"command\"\ncommand = [\"x\"]\ntimeout_seconds = 2")).unwrap();
        assert_eq!(t1.fingerprint(), t2.fingerprint());
        assert_eq!(a.fingerprint().len(), 16);
        assert_eq!(b.describe()["name"], "other");
        assert_eq!(b.describe()["type"], "judge");
    }

    #[test]
    fn a_text_grader_on_tool_call_references_is_refused_with_its_line() {
        let read = |text: &str| ChatFile {
            path: "v.jsonl".into(),
            sha256: String::new(),
            bytes: 0,
            conversations: crate::data::parse_chat_jsonl(std::path::Path::new("v.jsonl"), text.as_bytes()).unwrap(),
        };
        let text = r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}"#;
        let call = r#"{"messages":[{"role":"user","content":"up"},{"role":"assistant","tool_calls":[{"type":"function","function":{"name":"take_off","arguments":"{}"}}]}]}"#;
        let data = read(&format!("{text}\n{call}\n{call}\n"));
        let evaluation = |graders: &[&str]| crate::spec::Evaluation {
            graders: graders.iter().map(|t| parse(&table(&format!("type = \"{t}\""))).unwrap()).collect(),
            ..crate::spec::Evaluation::default()
        };
        let e = check_references(&evaluation(&["tool_call", "bleu"]), &data).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.to_string().starts_with("v.jsonl:2: the grader `bleu` compares text"), "{e}");
        assert!(e.message.contains("(2 of 3 references do)"), "{e}");
        assert!(e.hint.contains("type = \"tool_call\""), "{e}");
        // The default grader is exact match: refused too.
        assert!(
            check_references(&crate::spec::Evaluation::default(), &data).unwrap_err().message.contains("exact_match")
        );
        assert!(check_references(&evaluation(&["tool_call"]), &data).is_ok());
        assert!(check_references(&evaluation(&["bleu"]), &read(text)).is_ok(), "text references");
    }

    #[test]
    fn builtins_by_type_name() {
        assert_eq!(NamedGrader::builtin("tool_call").unwrap().name, "tool_call");
        assert_eq!(NamedGrader::builtin("exact_match").unwrap().name, "exact_match");
        assert!(NamedGrader::builtin("bleu").is_some());
        assert!(NamedGrader::builtin("regex").is_none(), "a regex needs a pattern");
        assert!(NamedGrader::builtin("judge").is_none());
        assert!(NamedGrader::builtin("nope").is_none());
    }
}
