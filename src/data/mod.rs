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

/// One tool call of an assistant message: the function's name and its arguments as written (a
/// JSON text; compared parsed, see [`Reply::same_calls`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ToolCall {
    /// The call's id as the data wrote it (`call_…`); not part of a reply's identity.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub name: String,
    pub arguments: String,
}

impl ToolCall {
    /// The arguments parsed as JSON; text that is not JSON stands for itself as a string.
    pub fn parsed_arguments(&self) -> Value {
        if self.arguments.trim().is_empty() {
            return Value::Object(Default::default());
        }
        serde_json::from_str(&self.arguments).unwrap_or_else(|_| Value::String(self.arguments.clone()))
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub role: String,
    pub content: String,
    /// An assistant message's tool calls (empty otherwise).
    pub tool_calls: Vec<ToolCall>,
    /// A `tool` message's answer to the call of this id.
    pub tool_call_id: Option<String>,
}

impl Message {
    /// A message of text only.
    pub fn text(role: &str, content: impl Into<String>) -> Message {
        Message { role: role.to_string(), content: content.into(), ..Message::default() }
    }
}

/// A reply: text, tool calls, or both. Stored and cached as one text ([`Reply::encode`]): a reply
/// of text only is its text, unchanged, so stores written before tool calls still read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
}

/// Starts an encoded reply that carries tool calls (ASCII record separator: not in the text of a
/// reply that anyone writes; a text reply that starts with it is encoded as JSON too).
const ENCODED: char = '\u{1e}';

#[derive(serde::Serialize, serde::Deserialize)]
struct EncodedReply {
    content: String,
    tool_calls: Vec<ToolCall>,
}

impl Reply {
    pub fn text(content: impl Into<String>) -> Reply {
        Reply { content: content.into(), tool_calls: Vec::new() }
    }

    /// Whether the reply calls a tool.
    pub fn has_tool_calls(&self) -> bool {
        !self.tool_calls.is_empty()
    }

    /// The reply as one text for the store and the caches: the text itself without tool calls,
    /// else the record separator and a JSON object `{content, tool_calls}`.
    pub fn encode(&self) -> String {
        if self.tool_calls.is_empty() && !self.content.starts_with(ENCODED) {
            return self.content.clone();
        }
        let calls = self.tool_calls.iter().map(|c| ToolCall { id: String::new(), ..c.clone() }).collect();
        let body = EncodedReply { content: self.content.clone(), tool_calls: calls };
        format!("{ENCODED}{}", serde_json::to_string(&body).expect("a reply serializes"))
    }

    /// The inverse of [`Reply::encode`]; any other text is a text reply.
    pub fn decode(text: &str) -> Reply {
        if let Some(json) = text.strip_prefix(ENCODED)
            && let Ok(r) = serde_json::from_str::<EncodedReply>(json)
        {
            return Reply { content: r.content, tool_calls: r.tool_calls };
        }
        Reply::text(text)
    }

    /// The reply as people read it: its text, then each call as `name({sorted arguments})`; the
    /// same form `data stats` counts distinct replies by.
    pub fn display(&self) -> String {
        let calls: Vec<(String, String)> =
            self.tool_calls.iter().map(|c| (c.name.clone(), c.arguments.clone())).collect();
        check::reply_text(&self.content, &calls)
    }

    /// Whether two replies make the same set of calls: names and parsed arguments equal (key
    /// order and spacing ignored), in any order.
    pub fn same_calls(&self, other: &Reply) -> bool {
        let key = |r: &Reply| {
            let mut k: Vec<(String, Value)> =
                r.tool_calls.iter().map(|c| (c.name.clone(), c.parsed_arguments())).collect();
            k.sort_by(|a, b| (&a.0, a.1.to_string()).cmp(&(&b.0, b.1.to_string())));
            k
        };
        key(self) == key(other)
    }
}

/// What a model is asked: the messages before the reply, and the line's tool settings, sent
/// with them as the data wrote them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Prompt {
    pub messages: Vec<Message>,
    /// The line's `tools` (a JSON list), if any.
    pub tools: Option<Value>,
    /// The line's `tool_choice`, if any.
    pub tool_choice: Option<Value>,
    /// The line's `parallel_tool_calls`, if any.
    pub parallel_tool_calls: Option<bool>,
}

impl Prompt {
    /// A prompt of messages only (a judge's, a probe's).
    pub fn messages(messages: Vec<Message>) -> Prompt {
        Prompt { messages, ..Prompt::default() }
    }
}

/// One line of a chat JSONL file, or of a preference (DPO) file: a DPO line's `input` messages
/// followed by its preferred output are its messages, so its reference is the preferred reply.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Conversation {
    /// 1-based line in the file it came from.
    pub line: usize,
    pub messages: Vec<Message>,
    /// The tokens of the line's tool definitions and of its assistant tool calls (name and
    /// arguments), o200k_base; 0 without tools.
    pub tool_tokens: u64,
    /// The line's `tools`, `tool_choice` and `parallel_tool_calls` (a DPO line's, from `input`).
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    /// A DPO line's non-preferred output; `None` on a chat line.
    pub rejected: Option<Reply>,
}

impl Conversation {
    /// The messages before the last assistant message: what a model sees.
    pub fn prompt(&self) -> &[Message] {
        let last = self.messages.iter().rposition(|m| m.role == "assistant");
        &self.messages[..last.unwrap_or(self.messages.len())]
    }

    /// What a model is asked, with the line's tool settings.
    pub fn prompt_request(&self) -> Prompt {
        Prompt {
            messages: self.prompt().to_vec(),
            tools: self.tools.clone(),
            tool_choice: self.tool_choice.clone(),
            parallel_tool_calls: self.parallel_tool_calls,
        }
    }

    /// The last assistant message (text and tool calls): the reference reply.
    pub fn reference_reply(&self) -> Option<Reply> {
        let m = self.messages.iter().rev().find(|m| m.role == "assistant")?;
        Some(Reply { content: m.content.clone(), tool_calls: m.tool_calls.clone() })
    }

    /// The reference reply, encoded as the store keeps it ([`Reply::encode`]).
    pub fn reference(&self) -> Option<String> {
        self.reference_reply().map(|r| r.encode())
    }

    /// Whether the line is a preference pair.
    pub fn is_preference(&self) -> bool {
        self.rejected.is_some()
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
        let conversation = if object.contains_key("input") || object.contains_key("preferred_output") {
            parse_preference(object, &|m: String, h: &str| err(line_no, m, h))?
        } else {
            parse_chat(object, &|m: String, h: &str| err(line_no, m, h))?
        };
        out.push(Conversation { line: line_no, ..conversation });
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

type LineError<'a> = dyn Fn(String, &str) -> DataError + 'a;

/// A chat line: `messages`, and `tools`, `tool_choice`, `parallel_tool_calls`.
fn parse_chat(object: &serde_json::Map<String, Value>, err: &LineError<'_>) -> Result<Conversation, DataError> {
    let messages =
        object.get("messages").and_then(Value::as_array).filter(|m| !m.is_empty()).ok_or_else(|| {
            err("`messages` is missing or empty".into(), "each line needs a non-empty `messages` list")
        })?;
    let parsed = parse_messages(messages, "message", err)?;
    if !parsed.iter().any(|m| m.role == "assistant") {
        return Err(err(
            "the conversation has no assistant message".into(),
            "end each conversation with the assistant reply to learn",
        ));
    }
    let mut c = Conversation { messages: parsed, tool_tokens: tool_tokens(object), ..Conversation::default() };
    tool_settings(object, &mut c, err)?;
    Ok(c)
}

/// A preference (DPO) line: `input` {messages, tools?, …}, `preferred_output` and
/// `non_preferred_output`, each one final assistant message.
fn parse_preference(object: &serde_json::Map<String, Value>, err: &LineError<'_>) -> Result<Conversation, DataError> {
    const SHAPE: &str = "a preference line is {\"input\": {\"messages\": [...]}, \"preferred_output\": \
                         [{\"role\": \"assistant\", ...}], \"non_preferred_output\": [{\"role\": \"assistant\", ...}]}";
    let input = object
        .get("input")
        .and_then(Value::as_object)
        .ok_or_else(|| err("`input` is missing or not an object".into(), SHAPE))?;
    let messages = input
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| err("`input.messages` is missing or empty".into(), SHAPE))?;
    let mut parsed = parse_messages(messages, "input message", err)?;
    let output = |key: &str| -> Result<Reply, DataError> {
        let list = object
            .get(key)
            .and_then(Value::as_array)
            .filter(|l| !l.is_empty())
            .ok_or_else(|| err(format!("`{key}` is missing or empty"), SHAPE))?;
        let outputs = parse_messages(list, key, err)?;
        match outputs.as_slice() {
            [m] if m.role == "assistant" => Ok(Reply { content: m.content.clone(), tool_calls: m.tool_calls.clone() }),
            _ => Err(err(format!("`{key}` must hold one assistant message"), SHAPE)),
        }
    };
    let preferred = output("preferred_output")?;
    let rejected = output("non_preferred_output")?;
    parsed.push(Message {
        role: "assistant".into(),
        content: preferred.content,
        tool_calls: preferred.tool_calls,
        tool_call_id: None,
    });
    let mut c = Conversation { messages: parsed, tool_tokens: tool_tokens(input), ..Conversation::default() };
    c.tool_tokens += rejected.tool_calls.iter().map(|t| call_tokens(&t.name, &t.arguments)).sum::<u64>();
    c.tool_tokens += object
        .get("preferred_output")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("tool_calls"))
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|c| c.get("function"))
        .map(|f| {
            let text = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            call_tokens(&text("name"), &text("arguments"))
        })
        .sum::<u64>();
    c.rejected = Some(rejected);
    tool_settings(input, &mut c, err)?;
    Ok(c)
}

/// The tokens of one call's name and arguments.
fn call_tokens(name: &str, arguments: &str) -> u64 {
    let enc = check::Encoding::O200kBase;
    (enc.count(name) + enc.count(arguments)) as u64
}

/// `tools`, `tool_choice` and `parallel_tool_calls` of a line (or of a DPO line's `input`).
fn tool_settings(
    object: &serde_json::Map<String, Value>,
    c: &mut Conversation,
    err: &LineError<'_>,
) -> Result<(), DataError> {
    match object.get("tools") {
        None | Some(Value::Null) => {}
        Some(v @ Value::Array(_)) => c.tools = Some(v.clone()),
        Some(_) => {
            return Err(err(
                "`tools` is not a list".into(),
                "write `tools` as a list of {\"type\": \"function\", \"function\": {...}}",
            ));
        }
    }
    c.tool_choice = object.get("tool_choice").filter(|v| !v.is_null()).cloned();
    match object.get("parallel_tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => c.parallel_tool_calls = Some(*b),
        Some(_) => {
            return Err(err(
                "`parallel_tool_calls` is not true or false".into(),
                "write `parallel_tool_calls` as true or false",
            ));
        }
    }
    Ok(())
}

/// The messages of a line, with their tool calls; `what` names them in errors.
fn parse_messages(messages: &[Value], what: &str, err: &LineError<'_>) -> Result<Vec<Message>, DataError> {
    let mut parsed = Vec::with_capacity(messages.len());
    for (j, m) in messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| err(format!("{what} {} has no `role`", j + 1), "give every message a `role`"))?;
        if !ROLES.contains(&role) {
            return Err(err(
                format!("{what} {} has an unknown role `{role}`", j + 1),
                "use system, developer, user, assistant or tool",
            ));
        }
        // The deprecated `function_call` is one call, as `data check` counts it.
        let legacy = m.get("function_call").filter(|f| f.is_object()).map(|f| vec![serde_json::json!({"function": f})]);
        let tool_calls = match (m.get("tool_calls"), &legacy) {
            (Some(Value::Array(calls)), _) if role == "assistant" => parse_tool_calls(calls, what, j + 1, err)?,
            (_, Some(calls)) if role == "assistant" => parse_tool_calls(calls, what, j + 1, err)?,
            _ => Vec::new(),
        };
        let content = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => {
                parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("")
            }
            Some(Value::Null) | None if role == "assistant" && (m.get("tool_calls").is_some() || legacy.is_some()) => {
                String::new()
            }
            _ => {
                return Err(err(
                    format!("{what} {} (`{role}`) has no string `content`", j + 1),
                    "give every message a `content` string",
                ));
            }
        };
        let tool_call_id = m.get("tool_call_id").and_then(Value::as_str).map(str::to_string);
        parsed.push(Message { role: role.to_string(), content, tool_calls, tool_call_id });
    }
    Ok(parsed)
}

/// An assistant message's `tool_calls`: each `{id?, type: "function", function: {name, arguments}}`.
fn parse_tool_calls(calls: &[Value], what: &str, k: usize, err: &LineError<'_>) -> Result<Vec<ToolCall>, DataError> {
    let mut out = Vec::with_capacity(calls.len());
    for (i, call) in calls.iter().enumerate() {
        let function = call.get("function");
        let name = function.and_then(|f| f.get("name")).and_then(Value::as_str).ok_or_else(|| {
            err(
                format!("{what} {k} tool call {} has no string `function.name`", i + 1),
                "write each call as {\"type\": \"function\", \"function\": {\"name\": ..., \"arguments\": \"{...}\"}}",
            )
        })?;
        let arguments = match function.and_then(|f| f.get("arguments")) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(a)) => a.clone(),
            Some(_) => {
                return Err(err(
                    format!("{what} {k} tool call {} has `arguments` that are not a string", i + 1),
                    "write `arguments` as a JSON text in a string, e.g. \"{\\\"city\\\": \\\"Paris\\\"}\"",
                ));
            }
        };
        let id = call.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        out.push(ToolCall { id, name: name.to_string(), arguments });
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
    let calls = messages.clone().filter_map(|m| m.get("tool_calls")).filter_map(Value::as_array).flatten();
    let legacy = messages.filter_map(|m| m.get("function_call")).filter(|f| f.is_object());
    for function in calls.filter_map(|c| c.get("function")).chain(legacy) {
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
    // A preference pair trains on both outputs: the non-preferred one is one more message.
    if let Some(rejected) = &conversation.rejected {
        n += 3 + enc.count("assistant") as u64 + enc.count(&rejected.content) as u64;
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
        assert_eq!(c[0].reference().as_deref(), Some("greetings"));
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

    #[test]
    fn replies_encode_text_unchanged_and_tool_calls_reversibly() {
        assert_eq!(Reply::text("plain").encode(), "plain");
        let call = ToolCall { id: "call_1".into(), name: "f".into(), arguments: r#"{"b": 1, "a": [2]}"#.into() };
        let reply = Reply { content: String::new(), tool_calls: vec![call.clone()] };
        let back = Reply::decode(&reply.encode());
        assert!(back.same_calls(&reply));
        assert_eq!(back.tool_calls[0].id, "", "the id is not part of a reply");
        assert_eq!(back.display(), r#"f({"a":[2],"b":1})"#);
        // A text that starts with the separator is encoded too, so decoding gives it back.
        let odd = Reply::text("\u{1e}{}");
        assert_eq!(Reply::decode(&odd.encode()), odd);
        let reordered = ToolCall { arguments: r#"{"a":[2],"b":1}"#.into(), ..call.clone() };
        let other = ToolCall { arguments: r#"{"a":[2],"b":2}"#.into(), ..call };
        assert!(Reply { tool_calls: vec![reordered], ..Reply::default() }.same_calls(&reply));
        assert!(!Reply { tool_calls: vec![other], ..Reply::default() }.same_calls(&reply));
    }

    #[test]
    fn tool_calls_and_settings_are_read() {
        let line = r#"{"messages":[{"role":"user","content":"up"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"take_off","arguments":"{\"m\":5}"}}]}],"tools":[{"type":"function","function":{"name":"take_off"}}],"parallel_tool_calls":false,"tool_choice":"auto"}"#;
        let c = &parse(line).unwrap()[0];
        let reference = c.reference_reply().unwrap();
        assert_eq!((reference.tool_calls[0].name.as_str(), reference.content.as_str()), ("take_off", ""));
        let prompt = c.prompt_request();
        assert_eq!(prompt.messages.len(), 1);
        assert_eq!(
            (prompt.parallel_tool_calls, prompt.tool_choice.as_ref()),
            (Some(false), Some(&Value::from("auto")))
        );
        assert!(prompt.tools.unwrap().is_array());
        let bad = line.replace(r#""arguments":"{\"m\":5}""#, r#""arguments":{"m":5}"#);
        assert!(parse(&bad).unwrap_err().message.contains("not a string"), "{bad}");
    }

    #[test]
    fn preference_lines_are_conversations_with_the_preferred_reply() {
        let line = r#"{"input":{"messages":[{"role":"user","content":"hi"}]},"preferred_output":[{"role":"assistant","content":"hello"}],"non_preferred_output":[{"role":"assistant","content":"go away"}]}"#;
        let c = &parse(line).unwrap()[0];
        assert!(c.is_preference());
        assert_eq!(c.reference().as_deref(), Some("hello"));
        assert_eq!(c.rejected.as_ref().unwrap().content, "go away");
        assert_eq!(c.prompt().len(), 1);
        // Both outputs are trained tokens: 19 for the chat, 3 + 1 + 2 more for "go away".
        assert!(conversation_tokens(c) > conversation_tokens(&Conversation { rejected: None, ..c.clone() }));
        let two = line.replace(r#"[{"role":"assistant","content":"hello"}]"#, r#"[{"role":"user","content":"x"}]"#);
        assert!(parse(&two).unwrap_err().message.contains("one assistant message"));
        assert!(parse(r#"{"input":{}}"#).unwrap_err().message.contains("input.messages"));
    }
}
