//! Chat-format JSONL: reading conversations with `file:line` errors, content
//! hashes, and token counts (tiktoken, the cookbook's per-message rules).
//! [`check`] finds every problem of a file (streaming), [`stats`] describes
//! it, [`split`] splits it into training and validation files.

pub mod check;
pub mod split;
pub mod stats;

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// One line of a chat JSONL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// 1-based line in the file it came from.
    pub line: usize,
    pub messages: Vec<Message>,
    /// The tokens of the line's tool definitions and of its assistant tool calls (name and
    /// arguments), o200k_base; 0 without tools.
    pub tool_tokens: u64,
}

impl Conversation {
    /// The messages before the last assistant message: what a model sees.
    pub fn prompt(&self) -> &[Message] {
        let last = self.messages.iter().rposition(|m| m.role == "assistant");
        &self.messages[..last.unwrap_or(self.messages.len())]
    }

    /// The last assistant message: the reference reply.
    pub fn reference(&self) -> Option<&str> {
        self.messages.iter().rev().find(|m| m.role == "assistant").map(|m| m.content.as_str())
    }
}

/// A chat JSONL file, read and hashed.
#[derive(Debug, Clone)]
pub struct ChatFile {
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: u64,
    pub conversations: Vec<Conversation>,
}

/// A problem in a data file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
    pub hint: String,
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}\n  hint: {}", self.message, self.hint)
    }
}

impl std::error::Error for DataError {}

const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

/// Reads and checks a chat JSONL file; the first bad line is an error.
pub fn read_chat_file(path: &Path) -> Result<ChatFile, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError {
        path: path.to_path_buf(),
        line: None,
        message: format!("cannot read the file: {e}"),
        hint: "check the path in the sweep file (it is relative to the sweep file)".into(),
    })?;
    let conversations = parse_chat_jsonl(path, &bytes)?;
    Ok(ChatFile { path: path.to_path_buf(), sha256: sha256_hex(&bytes), bytes: bytes.len() as u64, conversations })
}

/// The hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses chat JSONL from bytes. Blank lines are skipped; a UTF-8 BOM and
/// CRLF endings are accepted.
pub fn parse_chat_jsonl(path: &Path, bytes: &[u8]) -> Result<Vec<Conversation>, DataError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let err = |line: usize, message: String, hint: &str| DataError {
        path: path.to_path_buf(),
        line: Some(line),
        message,
        hint: hint.to_string(),
    };
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|e| {
            err(line_no, format!("not valid UTF-8 (at byte {})", e.valid_up_to()), "save the file as UTF-8")
        })?;
        if text.trim().is_empty() {
            continue;
        }
        if let Some(problem) = check::line_size_problem(raw) {
            return Err(err(
                line_no,
                problem,
                "split the example, or leave it out: `ftsweep data check FILE` lists such lines",
            ));
        }
        let value: Value = serde_json::from_str(text).map_err(|e| {
            err(
                line_no,
                format!("not valid JSON: {e}"),
                "each line must be one complete JSON object, e.g. {\"messages\": [...]}",
            )
        })?;
        let object = value.as_object().ok_or_else(|| {
            err(line_no, "the line is not a JSON object".into(), "write {\"messages\": [...]} on each line")
        })?;
        let messages = object.get("messages").and_then(Value::as_array).filter(|m| !m.is_empty()).ok_or_else(|| {
            err(line_no, "`messages` is missing or empty".into(), "each line needs a non-empty `messages` list")
        })?;
        let mut parsed = Vec::with_capacity(messages.len());
        for (j, m) in messages.iter().enumerate() {
            let role = m.get("role").and_then(Value::as_str).ok_or_else(|| {
                err(line_no, format!("message {} has no `role`", j + 1), "give every message a `role`")
            })?;
            if !ROLES.contains(&role) {
                return Err(err(
                    line_no,
                    format!("message {} has an unknown role `{role}`", j + 1),
                    "use system, developer, user, assistant or tool",
                ));
            }
            let content = match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => {
                    parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("")
                }
                Some(Value::Null) | None if role == "assistant" && m.get("tool_calls").is_some() => String::new(),
                _ => {
                    return Err(err(
                        line_no,
                        format!("message {} (`{role}`) has no string `content`", j + 1),
                        "give every message a `content` string",
                    ));
                }
            };
            parsed.push(Message { role: role.to_string(), content });
        }
        if !parsed.iter().any(|m| m.role == "assistant") {
            return Err(err(
                line_no,
                "the conversation has no assistant message".into(),
                "end each conversation with the assistant reply to learn",
            ));
        }
        out.push(Conversation { line: line_no, messages: parsed, tool_tokens: tool_tokens(object) });
    }
    if out.is_empty() {
        return Err(DataError {
            path: path.to_path_buf(),
            line: None,
            message: "the file has no conversations".into(),
            hint: "a chat JSONL file has one {\"messages\": [...]} object per line".into(),
        });
    }
    Ok(out)
}

/// The o200k_base tokens of a line's tool definitions (cookbook rule, see
/// [`check::tools_definition_tokens`]) and of the name and arguments of its tool calls.
fn tool_tokens(line: &serde_json::Map<String, Value>) -> u64 {
    let enc = check::Encoding::O200kBase;
    let count = &mut |text: &str| enc.count(text) as u64;
    let mut n = check::tools_definition_tokens(&check::tool_functions(line), enc, count);
    let messages = line.get("messages").and_then(Value::as_array).into_iter().flatten();
    let calls = messages.filter_map(|m| m.get("tool_calls")).filter_map(Value::as_array).flatten();
    for function in calls.filter_map(|c| c.get("function")) {
        for key in ["name", "arguments"] {
            n += function.get(key).and_then(Value::as_str).map_or(0, &mut *count);
        }
    }
    n
}

/// Tokens of one conversation as the OpenAI cookbook counts them for
/// fine-tuning: 3 per message, plus the role and content, plus 3, plus its
/// tool definitions and calls.
pub fn conversation_tokens(conversation: &Conversation) -> u64 {
    // `Encoding::count` encodes long texts in safe chunks: tiktoken-rs
    // overflows its stack on about 1 MB of white space.
    let enc = check::Encoding::O200kBase;
    let mut n = 3 + conversation.tool_tokens;
    for m in &conversation.messages {
        n += 3;
        n += enc.count(&m.role) as u64;
        n += enc.count(&m.content) as u64;
    }
    n
}

/// Tokens of a whole file: what one epoch of training on it bills.
pub fn file_tokens(file: &ChatFile) -> u64 {
    file.conversations.iter().map(conversation_tokens).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Conversation>, DataError> {
        parse_chat_jsonl(Path::new("d.jsonl"), text.as_bytes())
    }

    const LINE: &str = r#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"},{"role":"assistant","content":"greetings"}]}"#;

    #[test]
    fn reads_lines_with_bom_crlf_and_blanks() {
        let text = format!("\u{feff}{LINE}\r\n\r\n{LINE}\n");
        let c = parse(&text).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].line, 3);
        assert_eq!(c[0].reference(), Some("greetings"));
        assert_eq!(c[0].prompt().len(), 2);
    }

    #[test]
    fn truncated_line_names_its_line() {
        let text = format!("{LINE}\n{}\n", &LINE[..40]);
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.to_string().starts_with("d.jsonl:2: not valid JSON"), "{e}");
    }

    #[test]
    fn structural_problems_are_named() {
        assert!(parse("[1]").unwrap_err().message.contains("not a JSON object"));
        assert!(parse(r#"{"messages":[]}"#).unwrap_err().message.contains("missing or empty"));
        assert!(parse(r#"{"messages":[{"content":"x"}]}"#).unwrap_err().message.contains("no `role`"));
        assert!(parse(r#"{"messages":[{"role":"bot","content":"x"}]}"#).unwrap_err().message.contains("unknown role"));
        assert!(parse(r#"{"messages":[{"role":"user","content":"x"}]}"#).unwrap_err().message.contains("no assistant"));
        assert!(parse("").unwrap_err().message.contains("no conversations"));
        let bad_utf8 = parse_chat_jsonl(Path::new("d.jsonl"), b"{\"a\":\"\xff\"}").unwrap_err();
        assert!(bad_utf8.message.contains("UTF-8"));
    }

    #[test]
    fn the_tokenizer_matches_the_cookbook_example() {
        // OpenAI's "How to count tokens with tiktoken" cookbook encodes this
        // string with cl100k_base to exactly these ids.
        let ids = tiktoken_rs::cl100k_base_singleton().encode_ordinary("tiktoken is great!");
        assert_eq!(ids, [83, 1609, 5963, 374, 2294, 0]);
    }

    #[test]
    fn tool_definitions_and_calls_are_trained_tokens() {
        // The same figure as `data check`, which the plan's estimate uses.
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/drone-tools.jsonl")).unwrap();
        let file =
            ChatFile { path: "d.jsonl".into(), sha256: String::new(), bytes: 0, conversations: parse(&text).unwrap() };
        let report = check::check_reader(Path::new("d.jsonl"), text.as_bytes(), &check::CheckOptions::default());
        assert_eq!(file_tokens(&file), report.billing_tokens);
        assert!(file.conversations.iter().all(|c| c.tool_tokens > 250));
    }

    #[test]
    fn token_counts_follow_the_cookbook() {
        // o200k_base: "system", "s", "user", "hi" and "assistant" are one token
        // each, "greetings" is two ("g" + "reetings"): 3 + 3 * (3 + 1 + 1) + 1 = 19.
        let c = &parse(LINE).unwrap()[0];
        assert_eq!(conversation_tokens(c), 19);
    }
}
