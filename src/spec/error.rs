//! Errors in a sweep file, each located to a line: [`SpecError`], the
//! validation context [`Cx`] that builds them from values' spans, and the
//! reading of `toml`'s own errors into messages with a key and a hint.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::DeTable;

use super::locate::{self, Step};
use super::raw::{CHOICES, Choice};

/// A problem in a sweep file, located to a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub path: PathBuf,
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// The dotted key, when the problem belongs to one.
    pub key: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

/// An error about a key's value found after parsing (the data file it names
/// is a directory, say), located at the key's line. `key` is dotted:
/// `training_file`, `command.config_template`.
pub fn key_error(path: &Path, text: &str, key: &str, message: String, hint: &str) -> SpecError {
    let doc = DeTable::parse(text).ok();
    let steps: Vec<Step<'_>> = key.split('.').map(Step::Key).collect();
    let span = doc.as_ref().and_then(|d| locate::key_span(d.get_ref(), &steps));
    SpecError {
        path: path.to_path_buf(),
        line: span.map(|s| line_of(text, s.start)),
        key: Some(key.to_string()),
        message,
        hint: Some(hint.to_string()),
    }
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// What validation needs to locate its errors: the file's path and text,
/// and the parsed document with the spans of its keys.
pub(super) struct Cx<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    pub doc: Option<Spanned<DeTable<'a>>>,
}

impl Cx<'_> {
    pub fn line_of(&self, offset: usize) -> usize {
        line_of(self.text, offset)
    }

    pub fn error(&self, span: &Range<usize>, key: &str, message: String, hint: &str) -> SpecError {
        SpecError {
            path: self.path.to_path_buf(),
            line: Some(self.line_of(span.start)),
            key: Some(key.to_string()),
            message,
            hint: Some(hint.to_string()),
        }
    }

    pub fn at<T>(&self, v: &Spanned<T>, key: &str, message: String, hint: &str) -> SpecError {
        self.error(&v.span(), key, message, hint)
    }

    /// The span of the key at `path` in the document, if it is there.
    pub fn key_span(&self, path: &[Step<'_>]) -> Option<Range<usize>> {
        locate::key_span(self.doc.as_ref()?.get_ref(), path)
    }

    /// The dotted key whose name or value holds `offset`.
    fn key_at(&self, offset: usize) -> Option<String> {
        locate::key_at(self.doc.as_ref()?.get_ref(), offset)
    }

    /// `toml`'s error (syntax, an unknown key, a value of the wrong type or
    /// not among the choices) with its line, its key and a hint.
    pub fn toml_error(&self, e: &toml::de::Error) -> SpecError {
        let mut message = e.message().trim().to_string();
        let mut line = e.span().map(|s| self.line_of(s.start));
        // Syntax errors and missing keys have no key of their own.
        let keyed = !message.starts_with("missing field");
        let key = e.span().filter(|_| keyed).and_then(|s| self.key_at(s.start));
        let hint = if message.starts_with("unknown field") {
            "remove or rename the key (the keys that table accepts are listed)".to_string()
        } else if message.starts_with("missing field") {
            "add the key; see the sweep file format in README.md".to_string()
        } else if let Some(rest) = message.strip_prefix("unknown variant `") {
            let (m, hint) = unknown_choice(rest, key.as_deref());
            message = m;
            hint
        } else if let Some(number) =
            message.strip_prefix("invalid type: integer `").and_then(|m| m.split_once("` as i128"))
        {
            message = format!("the number `{}` is too large (whole numbers here are at most {})", number.0, i64::MAX);
            "give the key a value in the range README.md gives for it".to_string()
        } else if message == "wanted string or table"
            && let Some(c) = key.as_deref().and_then(choice)
        {
            // What toml says of an enum given another type.
            message = format!("expected a {} name, in quotes", c.noun);
            choices_hint(c)
        } else if message.starts_with("invalid type") {
            "give the key a value of the expected type".to_string()
        } else if message == "recursion limit" || message.starts_with("cannot recurse further") {
            if line.is_none()
                && let Some((at, start, parts)) = locate::deepest_key(self.text)
            {
                line = Some(at);
                message = format!("the key `{start}...` has {parts} dotted parts, more than the TOML parser allows");
            } else {
                message = "values nest deeper than the TOML parser allows".into();
            }
            "a sweep file nests a few levels at most (e.g. `[evaluation.combined]`): remove or flatten this".to_string()
        } else {
            "fix the TOML syntax at that line".to_string()
        };
        SpecError { path: self.path.to_path_buf(), line, key, message, hint: Some(hint) }
    }
}

/// The message and the hint for a value outside a closed set, from serde's
/// "unknown variant `x`, expected `a` or `b`" (`rest` follows the first
/// backtick) and the key it was written for.
fn unknown_choice(rest: &str, key: Option<&str>) -> (String, String) {
    let value = rest.split_once('`').map_or(rest, |(value, _)| value);
    match key.and_then(choice) {
        Some(c) => (format!("unknown {} `{value}`", c.noun), choices_hint(c)),
        None => (format!("unknown value `{value}`"), "use one of the values README.md lists for the key".into()),
    }
}

fn choice(key: &str) -> Option<&'static Choice> {
    CHOICES.iter().find(|c| c.key == key)
}

/// `` use `key = "a"` (the default) or `key = "b"` ``.
fn choices_hint(c: &Choice) -> String {
    let name = c.key.rsplit('.').next().unwrap_or(c.key);
    let shown: Vec<String> = c
        .names
        .iter()
        .enumerate()
        .map(|(i, a)| format!("`{name} = \"{a}\"`{}", if i == 0 { " (the default)" } else { "" }))
        .collect();
    format!("use {}", or_list(&shown))
}

/// `a, b or c`.
fn or_list(shown: &[String]) -> String {
    match shown.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::tests::*;
    use crate::spec::*;

    #[test]
    fn toml_errors_name_the_key_and_a_deep_key_its_line() {
        let e = err(&GOOD.replace("max_concurrent = 2", "max_concurrent = 99999999999999999999"));
        assert_eq!((e.line, e.key.as_deref()), (Some(17), Some("limits.max_concurrent")), "{e}");
        assert!(e.message.contains("too large"), "{e}");
        let e = err(&GOOD.replace("seed = 42", "seed = 99999999999999999999"));
        assert_eq!((e.line, e.key.as_deref()), (Some(7), Some("seed")), "{e}");
        let e = err(&GOOD.replace("batch_size = [4, 32]", "batch_size = [\n  4,\n  99999999999999999999,\n]"));
        assert_eq!((e.line, e.key.as_deref()), (Some(15), Some("hyperparameters.batch_size")), "{e}");
        let e = err(&GOOD.replace("max_concurrent = 2", "max_concurrent = \"two\""));
        assert_eq!(e.key.as_deref(), Some("limits.max_concurrent"), "{e}");
        let deep = vec!["a"; 20_000].join(".");
        let e = err(&format!("{GOOD}\n[{deep}]\nx = 1\n"));
        assert_eq!(e.line, Some(19), "{e}");
        assert!(e.message.contains("20000 dotted parts") && e.message.contains("`a.a.a"), "{e}");
        assert!(e.to_string().len() < 400, "the key is not printed whole: {e}");
        let e = err(&format!("{GOOD}x = {}{}\n", "[".repeat(20_000), "]".repeat(20_000)));
        assert_eq!(e.line, Some(18), "{e}");
        assert!(e.message.contains("nest deeper"), "{e}");
        // An unknown key is named with its table.
        let e = err(&GOOD.replace("batch_size = [4, 32]", "batch_size = [4, 32]\nbatch_sise = 3"));
        assert_eq!(e.key.as_deref(), Some("hyperparameters.batch_sise"), "{e}");
    }

    #[test]
    fn a_key_error_is_at_the_top_level_key() {
        let e = key_error(Path::new("s.toml"), GOOD, "validation_file", "gone".into(), "fix it");
        assert_eq!(e.to_string(), "s.toml:6: `validation_file`: gone\n  hint: fix it");
        let e = key_error(Path::new("s.toml"), GOOD, "metric", "x".into(), "y");
        assert_eq!(e.line, None, "`metric` is in [evaluation]: not a top-level key");
        let e = key_error(Path::new("s.toml"), GOOD, "evaluation.metric", "x".into(), "y");
        assert_eq!(e.line, Some(15), "a dotted key is found in its table");
    }
}
