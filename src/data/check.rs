//! Streaming checks of chat JSONL fine-tuning data (SFT and DPO), following the OpenAI cookbook's
//! checks and token-counting rules. Memory stays bounded by a few times [`MAX_LINE_BYTES`] plus a
//! few small numbers per example (a line over that size, or with over [`MAX_LINE_VALUES`] JSON
//! values, is refused before it is parsed), and no input makes the checker panic.

use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tiktoken_rs::CoreBPE;

/// The fewest examples the fine-tuning API accepts in a training file.
pub const MIN_EXAMPLES: usize = 10;
/// Replies longer than this many characters cannot be class labels.
pub const LABEL_MAX_CHARS: usize = 40;
/// The checker stops collecting distinct short replies after this many.
pub const MAX_TRACKED_REPLIES: usize = 1000;
/// The longest line accepted, in bytes (32 MiB). One line is one example, and the longest example
/// OpenAI trains on is 65,536 tokens, a few hundred kilobytes of text; a longer line is refused
/// without being read into memory whole or parsed.
pub const MAX_LINE_BYTES: usize = 32 << 20;
/// The most JSON values (objects, lists, keys and scalars) a line may hold. Parsed, each small
/// value takes a few hundred bytes, so this bounds the memory a line of tiny messages needs
/// (about 40,000 messages: a 65,536-token example holds at most about 13,000).
pub const MAX_LINE_VALUES: usize = 200_000;

const SFT_KEYS: [&str; 4] = ["messages", "tools", "parallel_tool_calls", "functions"];
const DPO_KEYS: [&str; 3] = ["input", "preferred_output", "non_preferred_output"];
const DPO_INPUT_KEYS: [&str; 3] = ["messages", "tools", "parallel_tool_calls"];
const MESSAGE_KEYS: [&str; 8] =
    ["role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call", "refusal"];
const ROLES: [&str; 6] = ["system", "developer", "user", "assistant", "tool", "function"];

/// The shape of each line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Supervised fine-tuning: `{"messages": [...]}`.
    #[default]
    Sft,
    /// Direct preference optimisation: `{"input": {...}, "preferred_output": [...], ...}`. An
    /// example's tokens are those of its input messages plus both outputs counted as messages; its
    /// identity covers the input messages and both outputs; its reply is the preferred output.
    Dpo,
}

/// The tiktoken encoding used to count tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// The encoding of gpt-4o, gpt-4.1, o-series, gpt-5 and later models.
    #[default]
    O200kBase,
    /// The encoding of gpt-3.5-turbo, gpt-4 and the -002 base models.
    Cl100kBase,
}

impl Encoding {
    /// The encoding's tiktoken name.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
        }
    }

    fn bpe(self) -> &'static CoreBPE {
        match self {
            Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
            Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        }
    }

    /// The number of tokens in `text`, exactly as `encode_ordinary(text).len()` for ordinary text.
    ///
    /// Long texts are encoded in chunks of at most 4 KiB, cut at a space between two printable
    /// ASCII characters; such a space always starts a new pre-tokenizer piece, so the count is
    /// unchanged. This bounds the regex work per call: tiktoken-rs panics on about 1 MB of
    /// whitespace. A run of more than 4 KiB with no such space is cut at a character boundary,
    /// which can change the count of that pathological run by a token or so per cut.
    pub fn count(self, text: &str) -> usize {
        const CHUNK: usize = 4096;
        let bpe = self.bpe();
        let bytes = text.as_bytes();
        let (mut start, mut total) = (0, 0);
        while bytes.len() - start > CHUNK {
            let end = start + CHUNK;
            let safe = (start + 1..end)
                .rev()
                .find(|&i| bytes[i] == b' ' && bytes[i - 1].is_ascii_graphic() && bytes[i + 1].is_ascii_graphic());
            let cut =
                safe.unwrap_or_else(|| (start + 1..=end).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(end));
            total += bpe.encode_ordinary(&text[start..cut]).len();
            start = cut;
        }
        total + bpe.encode_ordinary(&text[start..]).len()
    }
}

/// The base model of a model id: a leading `ft:` is dropped, and the rest is cut at the next `:`.
fn base_model(model: &str) -> &str {
    let model = model.strip_prefix("ft:").unwrap_or(model);
    model.split(':').next().unwrap_or(model)
}

/// The tiktoken encoding of a model or fine-tuned model id.
///
/// The base model is compared whole, so `ft:gpt-4.1-mini-…` is not mistaken for `gpt-4`.
pub fn encoding_for_model(model: &str) -> Encoding {
    let base = base_model(model);
    let cl100k = base.starts_with("gpt-3.5")
        || base == "gpt-4"
        || base.starts_with("gpt-4-")
        || base.starts_with("davinci-002")
        || base.starts_with("babbage-002");
    if cl100k { Encoding::Cl100kBase } else { Encoding::O200kBase }
}

/// The per-example training token limit of a model; longer examples are truncated.
pub fn token_limit_for_model(model: &str) -> u64 {
    let base = base_model(model);
    if base == "gpt-3.5-turbo-0613" {
        4096
    } else if base.starts_with("gpt-3.5-turbo") {
        16385
    } else {
        // The gpt-4o and gpt-4o-mini limit is documented as 65,536. The gpt-4.1 figure is
        // UNCONFIRMED: it is assumed to match gpt-4o. Unknown models get the same default.
        65536
    }
}

/// Whether the tokenizer and token limit of `model` are known: the gpt-3.5, gpt-4, gpt-4o, gpt-4.1
/// and gpt-5 families, the o-series, davinci-002 and babbage-002, their fine-tunes, and the local
/// provider's `local/` models (counted as gpt-4o). Other models get the gpt-4o defaults.
pub fn model_is_known(model: &str) -> bool {
    let base = base_model(model);
    ["gpt-3.5-turbo", "gpt-4", "gpt-5", "o1", "o3", "o4", "davinci-002", "babbage-002", "local/"]
        .iter()
        .any(|family| base.starts_with(family))
}

/// What to check and how to count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckOptions {
    /// The line format.
    pub format: Format,
    /// The encoding for token counts.
    pub encoding: Encoding,
    /// Examples with more tokens than this are truncated by the API.
    pub token_limit: u64,
    /// At most this many problems of each kind are kept (all are counted).
    pub max_per_kind: usize,
    /// Fewer valid examples than this is an error (`too_few_examples`); 0 turns the check off.
    pub min_examples: usize,
    /// Whether to count tokens; without it the token figures are 0.
    pub count_tokens: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            format: Format::Sft,
            encoding: Encoding::O200kBase,
            token_limit: 65536,
            max_per_kind: 5,
            min_examples: MIN_EXAMPLES,
            count_tokens: true,
        }
    }
}

impl CheckOptions {
    /// The default options with the encoding and token limit of `model`.
    pub fn for_model(model: &str) -> Self {
        CheckOptions {
            encoding: encoding_for_model(model),
            token_limit: token_limit_for_model(model),
            ..CheckOptions::default()
        }
    }
}

/// How bad a problem is: errors make the API reject the file; warnings are worth a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
}

/// The kind of a problem; it serializes as its stable snake_case code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemCode {
    ReadError,
    EmptyFile,
    InvalidUtf8,
    NotJson,
    LineTooLong,
    NotObject,
    MissingMessages,
    MessageNotObject,
    MessageMissingRole,
    MessageMissingContent,
    UnknownKey,
    UnknownRole,
    BadContentType,
    BadWeight,
    BadTools,
    BadToolCall,
    NoAssistantMessage,
    MissingInput,
    BadPreferredOutput,
    BadNonPreferredOutput,
    TooFewExamples,
    NoSystemMessage,
    NoUserMessage,
    OverTokenLimit,
    Duplicate,
    EmptyAssistantReply,
    Overlap,
}

impl ProblemCode {
    /// The stable snake_case code, as used in `--json` output.
    pub fn code(self) -> &'static str {
        use ProblemCode::*;
        match self {
            ReadError => "read_error",
            EmptyFile => "empty_file",
            InvalidUtf8 => "invalid_utf8",
            NotJson => "not_json",
            LineTooLong => "line_too_long",
            NotObject => "not_object",
            MissingMessages => "missing_messages",
            MessageNotObject => "message_not_object",
            MessageMissingRole => "message_missing_role",
            MessageMissingContent => "message_missing_content",
            UnknownKey => "unknown_key",
            UnknownRole => "unknown_role",
            BadContentType => "bad_content_type",
            BadWeight => "bad_weight",
            BadTools => "bad_tools",
            BadToolCall => "bad_tool_call",
            NoAssistantMessage => "no_assistant_message",
            MissingInput => "missing_input",
            BadPreferredOutput => "bad_preferred_output",
            BadNonPreferredOutput => "bad_non_preferred_output",
            TooFewExamples => "too_few_examples",
            NoSystemMessage => "no_system_message",
            NoUserMessage => "no_user_message",
            OverTokenLimit => "over_token_limit",
            Duplicate => "duplicate",
            EmptyAssistantReply => "empty_assistant_reply",
            Overlap => "overlap",
        }
    }

    /// Whether the code is an error or a warning.
    pub fn severity(self) -> Severity {
        use ProblemCode::*;
        match self {
            NoSystemMessage | NoUserMessage | OverTokenLimit | Duplicate | EmptyAssistantReply | Overlap => {
                Severity::Warning
            }
            _ => Severity::Error,
        }
    }
}

impl std::fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// One problem found in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub code: ProblemCode,
    pub severity: Severity,
    /// The 1-based line, or `None` for a problem of the whole file.
    pub line: Option<usize>,
    /// Human text such as "message 2 has an unknown role `bot`".
    pub message: String,
}

/// What checking one file found, plus the per-example figures that statistics and splitting need.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FileReport {
    pub path: PathBuf,
    /// All lines, blank or not.
    pub lines: usize,
    pub blank_lines: usize,
    /// Lines without errors.
    pub examples: usize,
    /// The first `max_per_kind` problems of each kind, in line order.
    pub problems: Vec<Problem>,
    /// How many problems of each kind were found, kept or not.
    pub counts: BTreeMap<ProblemCode, usize>,
    pub encoding: Encoding,
    pub token_limit: u64,
    /// Σ min(token_limit, tokens) over the examples: the tokens one epoch bills.
    pub billing_tokens: u64,
    /// Examples over the token limit.
    pub over_limit: usize,
    /// Distinct last assistant replies (DPO: preferred outputs).
    pub distinct_replies: usize,
    /// The longest reply, in characters, its tool calls not counted: a call is one of a set of
    /// functions whatever the length of its arguments, so calls can be class labels.
    pub longest_reply_chars: usize,
    /// Set when some reply is longer than `LABEL_MAX_CHARS` or there are more than
    /// `MAX_TRACKED_REPLIES` distinct replies: then the replies are not class labels.
    pub replies_not_labels: bool,
    /// The 1-based line of each example.
    #[serde(skip)]
    pub example_lines: Vec<usize>,
    /// The tokens of each example (cookbook rule).
    #[serde(skip)]
    pub total_tokens: Vec<u32>,
    /// The assistant-content tokens of each example.
    #[serde(skip)]
    pub assistant_tokens: Vec<u32>,
    /// The messages in each example.
    #[serde(skip)]
    pub messages_per_example: Vec<u32>,
    /// The conversation identity of each example (first 16 bytes of a SHA-256).
    #[serde(skip)]
    pub hashes: Vec<[u8; 16]>,
    /// The short replies seen, with their counts, in order of first appearance.
    #[serde(skip)]
    pub reply_labels: Vec<(String, usize)>,
    /// For each example, its index in `reply_labels`, or `u32::MAX` when not tracked.
    #[serde(skip)]
    pub reply_ids: Vec<u32>,
}

impl FileReport {
    /// Whether any error was found (warnings do not count).
    pub fn has_errors(&self) -> bool {
        self.counts.iter().any(|(code, &n)| n > 0 && code.severity() == Severity::Error)
    }

    /// How many problems of a severity were found.
    pub fn total(&self, severity: Severity) -> usize {
        self.counts.iter().filter(|(code, _)| code.severity() == severity).map(|(_, n)| n).sum()
    }

    /// Adds a problem found outside the line-by-line check (such as an overlap with another file).
    pub fn add_problem(&mut self, problem: Problem) {
        *self.counts.entry(problem.code).or_insert(0) += 1;
        self.problems.push(problem);
    }

    /// A problem as `path:line: error: message [code]`.
    pub fn describe(&self, problem: &Problem) -> String {
        let line = problem.line.map(|l| format!(":{l}")).unwrap_or_default();
        let severity = match problem.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        format!("{}{line}: {severity}: {} [{}]", self.path.display(), problem.message, problem.code)
    }
}

/// Reads `path` and checks it; fails only if the file cannot be opened.
pub fn check_file(path: &Path, opts: &CheckOptions) -> io::Result<FileReport> {
    let file = File::open(path)?;
    Ok(check_reader(path, BufReader::with_capacity(1 << 16, file), opts))
}

/// One line as [`for_each_line`] hands it over.
pub(crate) enum Line<'a> {
    /// The line's bytes, without the `\n`.
    Bytes(&'a [u8]),
    /// A line of this many bytes, over [`MAX_LINE_BYTES`]: it was skipped, not kept.
    TooLong(u64),
}

/// Calls `f` with the 1-based number and bytes of each line (without the `\n`; a UTF-8 BOM is
/// dropped from line 1). The line buffer is reused and never holds more than [`MAX_LINE_BYTES`]:
/// a longer line is read past and handed over as [`Line::TooLong`].
pub(crate) fn for_each_line<R: BufRead>(
    mut reader: R,
    mut f: impl FnMut(usize, Line<'_>) -> io::Result<()>,
) -> Result<(), (usize, io::Error)> {
    let mut buf = Vec::with_capacity(1 << 12);
    let mut line = 0;
    loop {
        buf.clear();
        line += 1;
        // Reads up to the next `\n` (included), keeping at most MAX_LINE_BYTES + 1 bytes of it.
        let (mut total, mut ended) = (0u64, false);
        while !ended {
            let chunk = match reader.fill_buf() {
                Ok(chunk) => chunk,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err((line, e)),
            };
            if chunk.is_empty() {
                break;
            }
            let (take, found) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            let room = (MAX_LINE_BYTES + 1).saturating_sub(buf.len());
            buf.extend_from_slice(&chunk[..take.min(room)]);
            total += take as u64;
            ended = found;
            reader.consume(take);
        }
        if total == 0 {
            return Ok(());
        }
        let length = total - u64::from(ended);
        let item = if length > MAX_LINE_BYTES as u64 {
            Line::TooLong(length)
        } else {
            let mut bytes = buf.strip_suffix(b"\n").unwrap_or(&buf);
            if line == 1 {
                bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            }
            Line::Bytes(bytes)
        };
        f(line, item).map_err(|e| (line, e))?;
        if buf.capacity() > 1 << 20 {
            buf.shrink_to(1 << 12);
        }
    }
}

/// Why a line is too big to parse, or `None`: over [`MAX_LINE_BYTES`] bytes, or over
/// [`MAX_LINE_VALUES`] JSON values (counted by a scan of the bytes, before any parsing).
pub fn line_size_problem(bytes: &[u8]) -> Option<String> {
    if bytes.len() > MAX_LINE_BYTES {
        return Some(too_long_message(bytes.len() as u64));
    }
    // A value takes at least a byte, so a shorter line needs no scan.
    if bytes.len() < MAX_LINE_VALUES {
        return None;
    }
    // Outside strings, every value after the first follows a `,`, `:`, `[` or `{`.
    let (mut values, mut in_string, mut escaped) = (1usize, false, false);
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b',' | b':' | b'[' | b'{' => values += 1,
            _ => {}
        }
    }
    (values > MAX_LINE_VALUES).then(|| {
        format!(
            "the line holds over {MAX_LINE_VALUES} JSON values (about {values}); an example that big cannot be \
             trained on, and it is not parsed"
        )
    })
}

/// The problem text of a line of `bytes` bytes over [`MAX_LINE_BYTES`].
pub fn too_long_message(bytes: u64) -> String {
    format!("the line is {bytes} bytes, over the {} MiB limit for one example; it is not parsed", MAX_LINE_BYTES >> 20)
}

/// Checks JSONL read from `reader`; `display_path` is only used in the report.
pub fn check_reader(display_path: &Path, reader: impl BufRead, opts: &CheckOptions) -> FileReport {
    let mut c = Checker {
        opts,
        report: FileReport {
            path: display_path.to_path_buf(),
            encoding: opts.encoding,
            token_limit: opts.token_limit,
            ..FileReport::default()
        },
        line: 0,
        line_has_error: false,
        seen: HashMap::new(),
        reply_index: HashMap::new(),
        reply_hashes: HashSet::new(),
        cache: HashMap::new(),
        cache_bytes: 0,
    };
    let result = for_each_line(reader, |n, line| {
        match line {
            Line::Bytes(bytes) => c.check_line(n, bytes),
            Line::TooLong(length) => {
                (c.report.lines, c.line, c.line_has_error) = (n, n, false);
                c.err(ProblemCode::LineTooLong, || too_long_message(length));
            }
        }
        Ok(())
    });
    if let Err((line, e)) = result {
        c.line = line;
        c.problem(ProblemCode::ReadError, Some(line), || format!("cannot read the file: {e}"));
    }
    c.finish()
}

/// Checking state; everything kept per example is small and fixed-size.
struct Checker<'a> {
    opts: &'a CheckOptions,
    report: FileReport,
    line: usize,
    line_has_error: bool,
    /// The first line of each conversation, for duplicates.
    seen: HashMap<[u8; 16], usize>,
    /// The index in `report.reply_labels` of each tracked reply.
    reply_index: HashMap<String, u32>,
    /// A 64-bit hash of each distinct reply, to count them all.
    reply_hashes: HashSet<u64>,
    /// Token counts of repeated strings such as system prompts.
    cache: HashMap<String, u32>,
    cache_bytes: usize,
}

/// What one message walk found.
#[derive(Default)]
struct Walk {
    tokens: u64,
    assistant_tokens: u64,
    has_system: bool,
    has_user: bool,
    has_assistant: bool,
    last_reply: Option<String>,
    /// The characters of `last_reply` that are tool calls.
    last_reply_call_chars: usize,
    /// The first empty assistant reply, as "message 3" or "`preferred_output`".
    empty_reply: Option<String>,
}

impl Checker<'_> {
    /// Counts a problem, and keeps it if fewer than `max_per_kind` of its kind are kept.
    fn problem(&mut self, code: ProblemCode, line: Option<usize>, message: impl FnOnce() -> String) {
        let count = self.report.counts.entry(code).or_insert(0);
        *count += 1;
        if *count <= self.opts.max_per_kind {
            self.report.problems.push(Problem { code, severity: code.severity(), line, message: message() });
        }
        if code.severity() == Severity::Error {
            self.line_has_error = true;
        }
    }

    /// A problem on the current line.
    fn err(&mut self, code: ProblemCode, message: impl FnOnce() -> String) {
        self.problem(code, Some(self.line), message);
    }

    /// The tokens of `text`, or 0 when not counting. Counts of mid-sized strings are cached, since
    /// system prompts usually repeat on every line; the cache is emptied when it grows too big.
    fn tokens(&mut self, text: &str) -> u64 {
        const CACHE_MIN: usize = 32;
        const CACHE_MAX: usize = 1 << 16;
        const CACHE_BYTES: usize = 4 << 20;
        const CACHE_ENTRIES: usize = 1024;
        if !self.opts.count_tokens {
            return 0;
        }
        if !(CACHE_MIN..=CACHE_MAX).contains(&text.len()) {
            return self.opts.encoding.count(text) as u64;
        }
        if let Some(&n) = self.cache.get(text) {
            return u64::from(n);
        }
        let n = u32::try_from(self.opts.encoding.count(text)).unwrap_or(u32::MAX);
        if self.cache_bytes + text.len() > CACHE_BYTES || self.cache.len() >= CACHE_ENTRIES {
            self.cache.clear();
            self.cache_bytes = 0;
        }
        self.cache_bytes += text.len();
        self.cache.insert(text.to_owned(), n);
        u64::from(n)
    }

    /// Checks one line and records it as an example if it has no errors.
    fn check_line(&mut self, line: usize, bytes: &[u8]) {
        self.report.lines = line;
        self.line = line;
        self.line_has_error = false;
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if bytes.iter().all(u8::is_ascii_whitespace) {
            self.report.blank_lines += 1;
            return;
        }
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                return self.err(ProblemCode::InvalidUtf8, || {
                    format!("the line is not valid UTF-8 (bad byte at column {})", e.valid_up_to() + 1)
                });
            }
        };
        if let Some(problem) = line_size_problem(bytes) {
            return self.err(ProblemCode::LineTooLong, || problem);
        }
        let value: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(e) => {
                // serde_json appends " at line 1 column N"; only the column means anything here.
                let text = e.to_string();
                let what = text.split(" at line ").next().unwrap_or(&text);
                return self.err(ProblemCode::NotJson, || {
                    format!("the line is not valid JSON: {what} (column {})", e.column())
                });
            }
        };
        let Value::Object(obj) = value else {
            return self.err(ProblemCode::NotObject, || format!("the line is {}, not a JSON object", kind(&value)));
        };
        match self.opts.format {
            Format::Sft => self.check_sft(&obj),
            Format::Dpo => self.check_dpo(&obj),
        }
    }

    /// Reports each key of `obj` that is not in `allowed`.
    fn unknown_keys(&mut self, obj: &Map<String, Value>, allowed: &[&str], place: &str) {
        for key in obj.keys().filter(|k| !allowed.contains(&k.as_str())) {
            self.err(ProblemCode::UnknownKey, || format!("{place} has an unknown key `{}`", short(key)));
        }
    }

    /// Checks that `messages` (named `name` in problems) is a non-empty list.
    fn messages<'v>(&mut self, messages: Option<&'v Value>, name: &str) -> Option<&'v Vec<Value>> {
        let what = match messages {
            Some(Value::Array(list)) if !list.is_empty() => return Some(list),
            Some(Value::Array(_)) => "empty",
            Some(v) => kind(v),
            None => "missing",
        };
        self.err(ProblemCode::MissingMessages, || format!("`{name}` is {what}; it must be a non-empty list"));
        None
    }

    /// Checks an SFT line: `{"messages": [...], ...}`.
    fn check_sft(&mut self, obj: &Map<String, Value>) {
        self.unknown_keys(obj, &SFT_KEYS, "the line");
        let Some(messages) = self.messages(obj.get("messages"), "messages") else { return };
        let mut walk = self.walk(messages);
        walk.tokens += self.tools_tokens(obj);
        if !walk.has_assistant {
            self.err(ProblemCode::NoAssistantMessage, || "the conversation has no assistant message".into());
        }
        if !self.line_has_error {
            let hash = conversation_hash(&identity_parts(Some(obj), &[&obj["messages"]]));
            self.accept(walk, messages.len(), hash);
        }
    }

    /// Checks a DPO line: `{"input": {"messages": [...]}, "preferred_output": [...], ...}`.
    fn check_dpo(&mut self, obj: &Map<String, Value>) {
        self.unknown_keys(obj, &DPO_KEYS, "the line");
        let mut tools_tokens = 0;
        let messages = match obj.get("input") {
            Some(Value::Object(input)) => {
                self.unknown_keys(input, &DPO_INPUT_KEYS, "`input`");
                tools_tokens = self.tools_tokens(input);
                self.messages(input.get("messages"), "input.messages")
            }
            other => {
                let what = other.map_or("missing", kind);
                self.err(ProblemCode::MissingInput, || format!("`input` is {what}; it must be an object"));
                None
            }
        };
        let mut walk = messages.map(|m| self.walk(m)).unwrap_or_default();
        walk.tokens += tools_tokens;
        let preferred = self.output(obj.get("preferred_output"), ProblemCode::BadPreferredOutput);
        let non_preferred = self.output(obj.get("non_preferred_output"), ProblemCode::BadNonPreferredOutput);
        let (Some(messages), Some(preferred), Some(non_preferred)) = (messages, preferred, non_preferred) else {
            return;
        };
        if self.line_has_error {
            return;
        }
        for (name, content) in [("`preferred_output`", preferred), ("`non_preferred_output`", non_preferred)] {
            let n = self.tokens(content);
            walk.tokens += 3 + self.tokens("assistant") + n;
            walk.assistant_tokens += n;
            if content.trim().is_empty() && walk.empty_reply.is_none() {
                walk.empty_reply = Some(name.to_owned());
            }
        }
        walk.last_reply = Some(preferred.to_owned());
        let hash = conversation_hash(&identity_parts(
            obj["input"].as_object(),
            &[&obj["input"]["messages"], &obj["preferred_output"], &obj["non_preferred_output"]],
        ));
        self.accept(walk, messages.len() + 2, hash);
    }

    /// Checks a DPO output: a list of exactly one assistant message with string content.
    fn output<'v>(&mut self, value: Option<&'v Value>, code: ProblemCode) -> Option<&'v str> {
        let name = code.code().trim_start_matches("bad_");
        let problem = match value {
            None => "is missing".to_owned(),
            Some(Value::Array(list)) if list.len() == 1 => match &list[0] {
                Value::Object(m) => {
                    let unknown = m.keys().find(|k| !["role", "content"].contains(&k.as_str()));
                    match (m.get("role"), m.get("content"), unknown) {
                        (_, _, Some(key)) => format!("has an unknown key `{}`", short(key)),
                        (Some(Value::String(r)), Some(Value::String(c)), None) if r == "assistant" => return Some(c),
                        (Some(Value::String(r)), Some(Value::String(_)), None) => {
                            format!("has role `{}`; it must be `assistant`", short(r))
                        }
                        (_, Some(Value::String(_)), None) => "has no string `role`".to_owned(),
                        _ => "has no string `content`".to_owned(),
                    }
                }
                other => format!("holds {}, not a message object", kind(other)),
            },
            Some(Value::Array(list)) => format!("holds {} messages; it must hold exactly one", list.len()),
            Some(other) => format!("is {}, not a list", kind(other)),
        };
        self.err(code, || format!("`{name}` {problem}"));
        None
    }

    /// Checks each message, counts tokens and notes what the conversation contains.
    fn walk(&mut self, messages: &[Value]) -> Walk {
        let mut walk = Walk { tokens: 3, ..Walk::default() };
        for (i, m) in messages.iter().enumerate() {
            let k = i + 1;
            let Value::Object(m) = m else {
                self.err(ProblemCode::MessageNotObject, || format!("message {k} is {}, not an object", kind(m)));
                continue;
            };
            self.unknown_keys(m, &MESSAGE_KEYS, &format!("message {k}"));
            let role = match m.get("role") {
                Some(Value::String(role)) => Some(role.as_str()),
                Some(v) => {
                    self.err(ProblemCode::MessageMissingRole, || {
                        format!("message {k} has a `role` that is {}", kind(v))
                    });
                    None
                }
                None => {
                    self.err(ProblemCode::MessageMissingRole, || format!("message {k} has no `role`"));
                    None
                }
            };
            if let Some(role) = role.filter(|r| !ROLES.contains(r)) {
                self.err(ProblemCode::UnknownRole, || format!("message {k} has an unknown role `{}`", short(role)));
            }
            let is_assistant = role == Some("assistant");
            let calls = ["tool_calls", "function_call"].iter().any(|key| m.get(*key).is_some_and(|v| !v.is_null()));
            let call_list = if calls { self.tool_calls(k, m) } else { Vec::new() };
            let text = self.content(k, m.get("content"), is_assistant && calls);
            if let Some(w) = m.get("weight").filter(|w| w.as_f64() != Some(0.0) && w.as_f64() != Some(1.0)) {
                self.err(ProblemCode::BadWeight, || {
                    format!("message {k} has weight {}; it must be 0 or 1", short_json(w))
                });
            }
            let text = text.unwrap_or_default();
            // A call's name and arguments are what the model writes: they count as reply tokens.
            let mut content_tokens = self.tokens(&text);
            for (name, arguments) in &call_list {
                content_tokens += self.tokens(name) + self.tokens(arguments);
            }
            walk.tokens += 3 + role.map_or(0, |r| self.tokens(r)) + content_tokens;
            match m.get("name") {
                Some(Value::String(name)) => walk.tokens += 1 + self.tokens(name),
                Some(_) => walk.tokens += 1,
                None => {}
            }
            match role {
                Some("system" | "developer") => walk.has_system = true,
                Some("user") => walk.has_user = true,
                Some("assistant") => {
                    walk.has_assistant = true;
                    walk.assistant_tokens += content_tokens;
                    if !calls && text.trim().is_empty() && walk.empty_reply.is_none() {
                        walk.empty_reply = Some(format!("message {k}"));
                    }
                    let reply = reply_text(&text, &call_list);
                    walk.last_reply_call_chars = reply.chars().count() - text.chars().count();
                    walk.last_reply = Some(reply);
                }
                _ => {}
            }
        }
        walk
    }

    /// Checks the tool definitions of a line (`tools`, or the deprecated `functions`) and returns
    /// their tokens; 0 without any.
    fn tools_tokens(&mut self, obj: &Map<String, Value>) -> u64 {
        let mut functions = Vec::new();
        for key in ["tools", "functions"] {
            let Some(value) = obj.get(key) else { continue };
            let Value::Array(list) = value else {
                self.err(ProblemCode::BadTools, || format!("`{key}` is {}, not a list", kind(value)));
                continue;
            };
            for (i, item) in list.iter().enumerate() {
                // A tool is {"type": "function", "function": {...}}; a legacy function is the
                // inner object itself.
                let function = if key == "tools" { item.get("function") } else { Some(item) };
                match function {
                    Some(Value::Object(f)) if f.get("name").is_some_and(Value::is_string) => functions.push(f),
                    _ => self.err(ProblemCode::BadTools, || {
                        format!("`{key}` item {} has no function with a string `name`", i + 1)
                    }),
                }
            }
        }
        let encoding = self.opts.encoding;
        tools_definition_tokens(&functions, encoding, &mut |text| self.tokens(text))
    }

    /// Checks an assistant message's `tool_calls` (or legacy `function_call`) and returns each
    /// call's name and arguments text.
    fn tool_calls(&mut self, k: usize, m: &Map<String, Value>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut check = |this: &mut Self, call: &Value, what: String| {
            let function = if what.starts_with("tool") { call.get("function") } else { Some(call) };
            let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
            let arguments = function.and_then(|f| f.get("arguments"));
            let problem = match (name, arguments) {
                (None, _) => "has no string `name`".to_owned(),
                (Some(_), Some(Value::String(a))) if serde_json::from_str::<Value>(a).is_err() => {
                    "has `arguments` that are not valid JSON".to_owned()
                }
                (Some(name), Some(Value::String(a))) => {
                    out.push((name.to_owned(), a.clone()));
                    return;
                }
                (Some(name), None) => {
                    out.push((name.to_owned(), String::new()));
                    return;
                }
                (Some(_), Some(v)) => format!("has `arguments` that are {}; they must be a JSON string", kind(v)),
            };
            this.err(ProblemCode::BadToolCall, || format!("message {k} {what} {problem}"));
        };
        match m.get("tool_calls") {
            None | Some(Value::Null) => {}
            Some(Value::Array(calls)) => {
                for (i, call) in calls.iter().enumerate() {
                    check(self, call, format!("tool call {}", i + 1));
                }
            }
            Some(v) => {
                self.err(ProblemCode::BadToolCall, || format!("message {k} has `tool_calls` that are {}", kind(v)))
            }
        }
        if let Some(call) = m.get("function_call").filter(|v| !v.is_null()) {
            check(self, call, "`function_call`".to_owned());
        }
        out
    }

    /// Checks a message's content and returns its text (the text parts joined).
    fn content<'v>(&mut self, k: usize, content: Option<&'v Value>, may_be_null: bool) -> Option<Cow<'v, str>> {
        match content {
            Some(Value::String(s)) => Some(Cow::Borrowed(s)),
            None if may_be_null => None,
            None => {
                self.err(ProblemCode::MessageMissingContent, || format!("message {k} has no `content`"));
                None
            }
            Some(Value::Null) if may_be_null => None,
            Some(Value::Null) => {
                self.err(ProblemCode::BadContentType, || {
                    format!("message {k} has `content: null`, allowed only on an assistant message with `tool_calls`")
                });
                None
            }
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for (j, part) in parts.iter().enumerate() {
                    let problem = match part {
                        Value::Object(p) => match (p.get("type"), p.get("text")) {
                            (Some(Value::String(t)), Some(Value::String(s))) if t == "text" => {
                                text.push_str(s);
                                continue;
                            }
                            (Some(Value::String(t)), _) if t == "text" => "is a text part without a string `text`",
                            (Some(Value::String(_)), _) => continue,
                            _ => "has no string `type`",
                        },
                        _ => "is not an object",
                    };
                    self.err(ProblemCode::BadContentType, || format!("message {k} content part {} {problem}", j + 1));
                }
                Some(Cow::Owned(text))
            }
            Some(v) => {
                self.err(ProblemCode::BadContentType, || {
                    format!("message {k} has `content` that is {}; it must be a string or a list of parts", kind(v))
                });
                None
            }
        }
    }

    /// Records a valid example and its warnings.
    fn accept(&mut self, mut walk: Walk, messages: usize, hash: [u8; 16]) {
        use ProblemCode::*;
        let line = self.line;
        if !self.opts.count_tokens {
            (walk.tokens, walk.assistant_tokens) = (0, 0);
        }
        if !walk.has_system {
            self.err(NoSystemMessage, || "the conversation has no system message".into());
        }
        if !walk.has_user {
            self.err(NoUserMessage, || "the conversation has no user message".into());
        }
        if let Some(place) = walk.empty_reply.take() {
            self.err(EmptyAssistantReply, || format!("{place} is an empty assistant reply"));
        }
        let limit = self.opts.token_limit;
        if walk.tokens > limit {
            self.report.over_limit += 1;
            let tokens = walk.tokens;
            self.err(OverTokenLimit, || {
                format!("the example has {tokens} tokens, over the {limit} limit: it will be truncated")
            });
        }
        match self.seen.get(&hash) {
            Some(&first) => self.err(Duplicate, || format!("the conversation is a duplicate of line {first}")),
            None => {
                self.seen.insert(hash, line);
            }
        }
        let r = &mut self.report;
        r.examples += 1;
        r.billing_tokens += walk.tokens.min(limit);
        r.example_lines.push(line);
        r.total_tokens.push(u32::try_from(walk.tokens).unwrap_or(u32::MAX));
        r.assistant_tokens.push(u32::try_from(walk.assistant_tokens).unwrap_or(u32::MAX));
        r.messages_per_example.push(u32::try_from(messages).unwrap_or(u32::MAX));
        r.hashes.push(hash);
        let reply = walk.last_reply.unwrap_or_default();
        let mut hasher = DefaultHasher::new();
        reply.hash(&mut hasher);
        if self.reply_hashes.insert(hasher.finish()) {
            r.distinct_replies += 1;
        }
        let chars = reply.chars().count() - walk.last_reply_call_chars;
        r.longest_reply_chars = r.longest_reply_chars.max(chars);
        r.replies_not_labels |= chars > LABEL_MAX_CHARS;
        let id = match self.reply_index.get(&reply) {
            Some(&id) => id,
            None if r.replies_not_labels => u32::MAX,
            None if r.reply_labels.len() >= MAX_TRACKED_REPLIES => {
                r.replies_not_labels = true;
                u32::MAX
            }
            None => {
                let id = r.reply_labels.len() as u32;
                r.reply_labels.push((reply.clone(), 0));
                self.reply_index.insert(reply, id);
                id
            }
        };
        if let Some(entry) = r.reply_labels.get_mut(id as usize) {
            entry.1 += 1;
        }
        r.reply_ids.push(id);
    }

    /// Adds the file-level problems.
    fn finish(mut self) -> FileReport {
        let nonblank = self.report.lines - self.report.blank_lines;
        let examples = self.report.examples;
        if nonblank == 0 {
            self.problem(ProblemCode::EmptyFile, None, || "the file has no examples".into());
        } else if examples < self.opts.min_examples {
            let min = self.opts.min_examples;
            self.problem(ProblemCode::TooFewExamples, None, || {
                format!("the file has {examples} valid examples; fine-tuning needs at least {min}")
            });
        }
        self.report
    }
}

/// A conversation's identity: the first 16 bytes of the SHA-256 of the JSON of its parts.
///
/// serde_json writes object keys in sorted order (or as written, if a crate in the build enables
/// its `preserve_order` feature), so equal lines always get equal hashes.
pub fn conversation_hash(parts: &[&Value]) -> [u8; 16] {
    struct HashWriter(Sha256);
    impl io::Write for HashWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut w = HashWriter(Sha256::new());
    for part in parts {
        // Writing a Value into a hasher cannot fail.
        let _ = serde_json::to_writer(&mut w, part);
        w.0.update(b"\n");
    }
    let digest = w.0.finalize();
    let mut out = [0; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// The per-model constants of the cookbook's `num_tokens_for_tools` (see
/// [`Checker::function_tokens`]): gpt-4o and later (o200k_base) start a function at 7 tokens,
/// gpt-3.5-turbo and gpt-4 (cl100k_base) at 10.
struct ToolConstants {
    func_init: i64,
    prop_init: i64,
    prop_key: i64,
    enum_init: i64,
    enum_item: i64,
}

impl ToolConstants {
    /// Added once to a line's tool definitions, whatever their number.
    const FUNC_END: i64 = 12;

    fn of(encoding: Encoding) -> ToolConstants {
        let func_init = match encoding {
            Encoding::O200kBase => 7,
            Encoding::Cl100kBase => 10,
        };
        ToolConstants { func_init, prop_init: 3, prop_key: 3, enum_init: -3, enum_item: 3 }
    }
}

/// The tokens of a line's tool definitions (the `function` objects), after the cookbook's
/// `num_tokens_for_tools` (openai/openai-cookbook, examples/How_to_count_tokens_with_tiktoken.ipynb,
/// section 7): per function a fixed start and `name:description` (one trailing `.` dropped); when it
/// has parameter properties, a fixed start plus for each a fixed cost, `key:type:description` and its
/// enum items; and a fixed end once per line. Nested object properties are counted the same way, one
/// level down each; the cookbook leaves them out, which would underestimate such tools. `count`
/// counts the tokens of a text. 0 without functions.
pub fn tools_definition_tokens(
    functions: &[&Map<String, Value>],
    encoding: Encoding,
    count: &mut dyn FnMut(&str) -> u64,
) -> u64 {
    if functions.is_empty() {
        return 0;
    }
    let c = ToolConstants::of(encoding);
    let mut n = ToolConstants::FUNC_END;
    for f in functions {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
        let description = text(f.get("description"));
        let line = format!("{}:{}", text(f.get("name")), description.strip_suffix('.').unwrap_or(&description));
        n += c.func_init + count(&line) as i64;
        if let Some(Value::Object(properties)) = f.get("parameters").and_then(|p| p.get("properties")) {
            n += properties_tokens(properties, &c, count, 0);
        }
    }
    u64::try_from(n).unwrap_or(0)
}

/// The tokens of a schema's `properties` (see [`tools_definition_tokens`]); 0 if empty.
fn properties_tokens(
    properties: &Map<String, Value>,
    c: &ToolConstants,
    count: &mut dyn FnMut(&str) -> u64,
    depth: usize,
) -> i64 {
    const MAX_DEPTH: usize = 8;
    if properties.is_empty() {
        return 0;
    }
    let mut n = c.prop_init;
    for (key, schema) in properties {
        n += c.prop_key;
        let kind = match schema.get("type") {
            Some(Value::String(t)) => t.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let description = schema.get("description").and_then(Value::as_str).unwrap_or_default();
        let line = format!("{key}:{kind}:{}", description.strip_suffix('.').unwrap_or(description));
        n += count(&line) as i64;
        if let Some(Value::Array(items)) = schema.get("enum") {
            n += c.enum_init;
            for item in items {
                let item = match item {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                n += c.enum_item + count(&item) as i64;
            }
        }
        let nested = schema.get("properties").or_else(|| schema.get("items").and_then(|i| i.get("properties")));
        if let (Some(Value::Object(nested)), true) = (nested, depth < MAX_DEPTH) {
            n += properties_tokens(nested, c, count, depth + 1);
        }
    }
    n
}

/// The function definitions of a line's `tools` (their `function` objects) and deprecated
/// `functions`, skipping malformed ones (the checker reports those).
pub fn tool_functions(obj: &Map<String, Value>) -> Vec<&Map<String, Value>> {
    let tools = obj.get("tools").and_then(Value::as_array).into_iter().flatten().filter_map(|t| t.get("function"));
    let functions = obj.get("functions").and_then(Value::as_array).into_iter().flatten();
    tools
        .chain(functions)
        .filter_map(Value::as_object)
        .filter(|f| f.get("name").is_some_and(Value::is_string))
        .collect()
}

/// A reply as one comparable text: its content, then each tool call as `name(arguments)` with the
/// arguments parsed as JSON and written with sorted keys, the calls in sorted order, so that key
/// order, spacing and the order of the calls do not make two equal replies differ (as
/// `Reply::same_calls` compares them). Without calls it is the content unchanged.
pub fn reply_text(content: &str, calls: &[(String, String)]) -> String {
    let mut calls: Vec<String> = calls
        .iter()
        .map(|(name, arguments)| {
            let arguments = match serde_json::from_str::<Value>(arguments) {
                Ok(v) => canonical_json(&v),
                Err(_) => arguments.clone(),
            };
            format!("{name}({arguments})")
        })
        .collect();
    calls.sort();
    let mut out = content.to_owned();
    for call in calls {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&call);
    }
    out
}

/// JSON text with every object's keys sorted, whatever serde_json's map order.
pub fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> =
                keys.iter().map(|k| format!("{}:{}", Value::String((*k).clone()), canonical_json(&map[*k]))).collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical_json).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// What an example's identity covers: `parts`, plus the line's tool definitions and
/// `parallel_tool_calls` when it has them (the same messages with other tools are another example).
fn identity_parts<'v>(obj: Option<&'v Map<String, Value>>, parts: &[&'v Value]) -> Vec<&'v Value> {
    let mut out = parts.to_vec();
    for key in ["tools", "functions", "parallel_tool_calls"] {
        if let Some(v) = obj.and_then(|o| o.get(key)) {
            out.push(v);
        }
    }
    out
}

/// A warning when validation conversations also appear in the training file, or `None`.
pub fn overlap(train: &FileReport, valid: &FileReport) -> Option<Problem> {
    let train_lines: HashMap<&[u8; 16], usize> =
        train.hashes.iter().zip(&train.example_lines).rev().map(|(h, &l)| (h, l)).collect();
    let mut shared =
        valid.hashes.iter().zip(&valid.example_lines).filter_map(|(h, &l)| Some((l, *train_lines.get(h)?)));
    let (valid_line, train_line) = shared.next()?;
    let n = 1 + shared.count();
    Some(Problem {
        code: ProblemCode::Overlap,
        severity: Severity::Warning,
        line: None,
        message: format!(
            "{n} validation conversation{} also appear{} in the training file, e.g. valid line {valid_line} = train line {train_line}",
            if n == 1 { "" } else { "s" },
            if n == 1 { "s" } else { "" },
        ),
    })
}

/// "a string", "an object" and so on, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A user-supplied string cut to 40 characters and escaped, for messages.
fn short(s: &str) -> String {
    let mut out: String = s.chars().take(40).flat_map(char::escape_debug).collect();
    if s.chars().nth(40).is_some() {
        out.push('…');
    }
    out
}

/// A JSON value for messages: short strings and scalars as written, lists and objects by kind.
fn short_json(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{}\"", short(s)),
        Value::Array(_) | Value::Object(_) => kind(v).to_owned(),
        _ => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::ProblemCode::*;
    use super::*;

    const OK: &str = r#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"},{"role":"assistant","content":"greetings"}]}"#;

    /// A valid SFT line whose user message is `user` and reply is `reply`.
    fn ok(user: &str, reply: &str) -> String {
        format!(
            r#"{{"messages":[{{"role":"system","content":"s"}},{{"role":"user","content":"{user}"}},{{"role":"assistant","content":"{reply}"}}]}}"#
        )
    }

    /// A line with these messages (a JSON list body).
    fn msgs(body: &str) -> String {
        format!(r#"{{"messages":[{body}]}}"#)
    }

    const DPO_OK: &str = r#"{"input":{"messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"}]},"preferred_output":[{"role":"assistant","content":"hello"}],"non_preferred_output":[{"role":"assistant","content":"go away"}]}"#;

    fn run(input: &[u8], opts: &CheckOptions) -> FileReport {
        check_reader(Path::new("t.jsonl"), input, opts)
    }

    /// Checks `input` (no minimum example count, all problems kept) and compares the sorted
    /// (code, line) pairs of all problems with `expected`.
    fn check_opts(input: impl AsRef<[u8]>, opts: &CheckOptions, expected: &[(ProblemCode, Option<usize>)]) {
        let opts = CheckOptions { max_per_kind: usize::MAX, ..opts.clone() };
        let report = run(input.as_ref(), &opts);
        let mut got: Vec<_> = report.problems.iter().map(|p| (p.code, p.line)).collect();
        got.sort();
        let mut want = expected.to_vec();
        want.sort();
        assert_eq!(
            got,
            want,
            "input {:?}\nproblems {:#?}",
            String::from_utf8_lossy(&input.as_ref()[..80.min(input.as_ref().len())]),
            report.problems
        );
        let counted: usize = report.counts.values().sum();
        assert_eq!(counted, report.problems.len());
    }

    fn check(input: impl AsRef<[u8]>, expected: &[(ProblemCode, Option<usize>)]) {
        check_opts(input, &CheckOptions { min_examples: 0, ..CheckOptions::default() }, expected);
    }

    type Expected = Vec<(ProblemCode, Option<usize>)>;

    fn dpo() -> CheckOptions {
        CheckOptions { format: Format::Dpo, min_examples: 0, ..CheckOptions::default() }
    }

    /// A system and a user message, to put before the message under test.
    const SU: &str = r#"{"role":"system","content":"s"},{"role":"user","content":"u"}"#;

    /// A line of SU and then `rest` (more messages).
    fn su(rest: &str) -> Vec<u8> {
        msgs(&format!("{SU},{rest}")).into_bytes()
    }

    /// The codes, all on line 1.
    fn at1(codes: &[ProblemCode]) -> Expected {
        codes.iter().map(|&c| (c, Some(1))).collect()
    }

    #[test]
    fn corpus_of_sft_inputs() {
        let tool_calls = concat!(
            r#"{"role":"system","content":"s"},{"role":"user","content":"weather?"},"#,
            r#"{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"w"}}]},"#,
            r#"{"role":"tool","tool_call_id":"c1","content":"sunny"},{"role":"assistant","content":"Sunny.","weight":1}"#
        );
        let parts = concat!(
            r#"{"role":"system","content":"s"},"#,
            r#"{"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"u"}}]},"#,
            r#"{"role":"assistant","content":[{"type":"text","text":"y"}]}"#
        );
        let reordered = OK.replace(r#""role":"system","content":"s""#, r#""content":"s","role":"system""#);
        let cases: Vec<(Vec<u8>, Expected)> = vec![
            (OK.into(), vec![]),
            (msgs(tool_calls).into(), vec![]),
            (format!(r#"{{"messages":[{tool_calls}],"tools":[],"parallel_tool_calls":false}}"#).into(), vec![]),
            (msgs(parts).into(), vec![]),
            (b"\xff\xfe{}\n".to_vec(), at1(&[InvalidUtf8])),
            ([OK.as_bytes(), b"\n{\"messages\": \"\xc3\x28\"}"].concat(), vec![(InvalidUtf8, Some(2))]),
            (b"{".to_vec(), at1(&[NotJson])),
            // A truncated last line, and trailing garbage.
            (format!("{OK}\n{}", &OK[..60]).into(), vec![(NotJson, Some(2))]),
            (format!("{OK}\n{OK} x").into(), vec![(NotJson, Some(2))]),
            (b"[1, 2]".to_vec(), at1(&[NotObject])),
            (b"\"text\"\nnull".to_vec(), vec![(NotObject, Some(1)), (NotObject, Some(2))]),
            (b"{}".to_vec(), at1(&[MissingMessages])),
            (br#"{"messages":[]}"#.to_vec(), at1(&[MissingMessages])),
            (br#"{"messages":{"role":"user"}}"#.to_vec(), at1(&[MissingMessages])),
            (su(r#""hi",{"role":"assistant","content":"x"}"#), at1(&[MessageNotObject])),
            (msgs(r#"{"content":"x"},{"role":"assistant","content":"y"}"#).into(), at1(&[MessageMissingRole])),
            (msgs(r#"{"role":7,"content":"x"},{"role":"assistant","content":"y"}"#).into(), at1(&[MessageMissingRole])),
            (msgs(r#"{"role":"user"},{"role":"assistant","content":"y"}"#).into(), at1(&[MessageMissingContent])),
            (su(r#"{"role":"assistant"}"#), at1(&[MessageMissingContent])),
            (OK.replace("]}", r#"],"extra":1}"#).into(), at1(&[UnknownKey])),
            (su(r#"{"role":"assistant","content":"y","foo":1,"bar":2}"#), at1(&[UnknownKey, UnknownKey])),
            (su(r#"{"role":"bot","content":"y"},{"role":"assistant","content":"y"}"#), at1(&[UnknownRole])),
            (su(r#"{"role":"assistant","content":5}"#), at1(&[BadContentType])),
            (OK.replace(r#""content":"hi""#, r#""content":null"#).into(), at1(&[BadContentType])),
            (
                su(r#"{"role":"assistant","content":[{"text":"y"}, "y", {"type":"text","text":3}]}"#),
                at1(&[BadContentType, BadContentType, BadContentType]),
            ),
            (su(r#"{"role":"assistant","content":"y","weight":2}"#), at1(&[BadWeight])),
            (su(r#"{"role":"assistant","content":"y","weight":"1"}"#), at1(&[BadWeight])),
            (su(r#"{"role":"assistant","content":"y","weight":0}"#), vec![]),
            (msgs(SU).into(), at1(&[NoAssistantMessage])),
            (
                msgs(r#"{"role":"user","content":"u"},{"role":"assistant","content":"y"}"#).into(),
                at1(&[NoSystemMessage]),
            ),
            (OK.replace(r#""role":"system""#, r#""role":"developer""#).into(), vec![]),
            (
                msgs(r#"{"role":"system","content":"s"},{"role":"assistant","content":"y"}"#).into(),
                at1(&[NoUserMessage]),
            ),
            (su(r#"{"role":"assistant","content":" \n "}"#), at1(&[EmptyAssistantReply])),
            (format!("{OK}\n{}\n{OK}\n", ok("x", "y")).into(), vec![(Duplicate, Some(3))]),
            // The same conversation with keys in another order is still a duplicate.
            (format!("{OK}\n{reordered}").into(), vec![(Duplicate, Some(2))]),
            // A BOM on line 1 is fine; elsewhere it is not JSON.
            (format!("\u{feff}{OK}\n\u{feff}{}", ok("a", "b")).into(), vec![(NotJson, Some(2))]),
            (format!("{OK}\r\n{}\r\n\r\n", ok("a", "b")).into(), vec![]),
            (b"".to_vec(), vec![(EmptyFile, None)]),
            (b"\n  \n\r\n\t".to_vec(), vec![(EmptyFile, None)]),
        ];
        for (input, expected) in &cases {
            check(input, expected);
        }
    }

    #[test]
    fn corpus_of_dpo_inputs() {
        let (pref, non_pref) =
            (r#"{"role":"assistant","content":"hello"}"#, r#"{"role":"assistant","content":"go away"}"#);
        let cases: Vec<(String, Expected)> = vec![
            (DPO_OK.into(), vec![]),
            (format!(r#"{{"preferred_output":[{pref}],"non_preferred_output":[{non_pref}]}}"#), at1(&[MissingInput])),
            (
                r#"{"input":{"messages":[]},"preferred_output":[],"non_preferred_output":[]}"#.into(),
                at1(&[MissingMessages, BadPreferredOutput, BadNonPreferredOutput]),
            ),
            (DPO_OK.replace(r#""input":{"#, r#""input":[{"#).replace("]},", "]}],"), at1(&[MissingInput])),
            (DPO_OK.replace(&format!("[{pref}]"), pref), at1(&[BadPreferredOutput])),
            (DPO_OK.replace(pref, &format!("{pref},{pref}")), at1(&[BadPreferredOutput])),
            (DPO_OK.replace(pref, &pref.replace("\"hello\"", "[]")), at1(&[BadPreferredOutput])),
            (DPO_OK.replace(non_pref, &non_pref.replace("assistant", "user")), at1(&[BadNonPreferredOutput])),
            (DPO_OK.replace(non_pref, &non_pref.replace("}", r#","weight":1}"#)), at1(&[BadNonPreferredOutput])),
            (DPO_OK.replace(&format!(r#","non_preferred_output":[{non_pref}]"#), ""), at1(&[BadNonPreferredOutput])),
            (DPO_OK.replace(r#""role":"user""#, r#""role":"bot""#), at1(&[UnknownRole])),
            (DPO_OK.replace(r#""messages":[{"#, r#""messages":[7,{"#), at1(&[MessageNotObject])),
            (DPO_OK.replace(r#"{"input""#, r#"{"x":1,"input""#), at1(&[UnknownKey])),
            (DPO_OK.replace(r#"]},"preferred"#, r#"],"functions":[]},"preferred"#), at1(&[UnknownKey])),
            (DPO_OK.replace(r#""content":"hello""#, r#""content":"""#), at1(&[EmptyAssistantReply])),
            (format!("{DPO_OK}\n{DPO_OK}"), vec![(Duplicate, Some(2))]),
            (OK.into(), at1(&[MissingInput, UnknownKey, BadPreferredOutput, BadNonPreferredOutput])),
        ];
        for (input, expected) in &cases {
            check_opts(input, &dpo(), expected);
        }
    }

    #[test]
    fn file_level_problems_and_counts() {
        check_opts(format!("{OK}\n{}", ok("a", "b")), &CheckOptions::default(), &[(TooFewExamples, None)]);
        let ten: String = (0..10).map(|i| ok(&i.to_string(), "y") + "\n").collect();
        check_opts(&ten, &CheckOptions::default(), &[]);
        check_opts(
            OK,
            &CheckOptions { token_limit: 18, min_examples: 0, ..CheckOptions::default() },
            &[(OverTokenLimit, Some(1))],
        );
        check_opts(OK, &CheckOptions { token_limit: 19, min_examples: 0, ..CheckOptions::default() }, &[]);

        // Problems are capped per kind but all counted; lines with errors are not examples.
        let input = format!("\n{}\n{OK}\n\n", "{\n".repeat(20));
        let report = run(input.as_bytes(), &CheckOptions::default());
        assert_eq!((report.lines, report.blank_lines, report.examples), (24, 3, 1));
        assert_eq!(report.counts[&NotJson], 20);
        assert_eq!(report.problems.iter().filter(|p| p.code == NotJson).count(), 5);
        assert_eq!(report.problems[0].line, Some(2));
        assert!(report.has_errors());
        assert_eq!(report.total(Severity::Error), 21);
        assert_eq!(
            report.describe(&report.problems[5]),
            "t.jsonl: error: the file has 1 valid examples; fine-tuning needs at least 10 [too_few_examples]"
        );
    }

    #[test]
    fn messages_name_the_problem() {
        let line =
            msgs(r#"{"role":"system","content":"s"},{"role":"bot","content":"x"},{"role":"assistant","content":"y"}"#);
        let report = run(line.as_bytes(), &CheckOptions::default());
        assert_eq!(report.problems[0].message, "message 2 has an unknown role `bot`");
        let report = run(format!("{OK}\n{OK}").as_bytes(), &CheckOptions::default());
        assert_eq!(report.problems[0].message, "the conversation is a duplicate of line 1");
        let json = serde_json::to_string(&report.problems[0]).unwrap();
        assert!(json.starts_with(r#"{"code":"duplicate","severity":"warning","line":2,"#), "{json}");
        assert_eq!(ProblemCode::BadNonPreferredOutput.to_string(), "bad_non_preferred_output");
    }

    #[test]
    fn read_errors_are_reported() {
        struct Failing(usize);
        impl io::Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk on fire"));
                }
                self.0 -= 1;
                let line = format!("{OK}\n");
                buf[..line.len()].copy_from_slice(line.as_bytes());
                Ok(line.len())
            }
        }
        let report = check_reader(Path::new("t"), BufReader::new(Failing(2)), &CheckOptions::default());
        assert_eq!(report.problems[1].code, ReadError);
        assert_eq!(report.problems[1].line, Some(3));
    }

    #[test]
    fn ten_megabyte_lines() {
        let content = "hello world ".repeat(900_000);
        let line = ok(&content, "y");
        assert!(line.len() > 10_000_000);
        let start = std::time::Instant::now();
        let report =
            run(line.as_bytes(), &CheckOptions { min_examples: 0, token_limit: u64::MAX, ..CheckOptions::default() });
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let bpe = tiktoken_rs::o200k_base_singleton();
        assert_eq!(report.total_tokens, [19 - 2 + bpe.encode_ordinary(&content).len() as u32]);
        eprintln!("10 MB line checked in {:?}", start.elapsed());
        check(&line[..line.len() - 3], &[(NotJson, Some(1))]);
        // Pathological strings (tiktoken-rs alone overflows its stack on 1 MB of whitespace).
        for unit in [" ", "\t", "a", "!", "\n", "1"] {
            let line = ok(&unit.repeat(2_000_000).replace('\n', "\\n").replace('\t', "\\t"), "y");
            let report = run(line.as_bytes(), &CheckOptions { min_examples: 0, ..CheckOptions::default() });
            assert_eq!(report.examples, 1);
            assert!(report.total_tokens[0] > 1000);
        }
    }

    #[test]
    fn token_counts_match_tiktoken() {
        let (o200k, cl100k) = (tiktoken_rs::o200k_base_singleton(), tiktoken_rs::cl100k_base_singleton());
        assert_eq!(cl100k.encode_ordinary("tiktoken is great!"), [83, 1609, 5963, 374, 2294, 0]);
        assert_eq!(o200k.encode_ordinary("tiktoken is great!"), [83, 8251, 2488, 382, 2212, 0]);
        assert_eq!(Encoding::Cl100kBase.count("tiktoken is great!"), 6);
        assert_eq!(Encoding::O200kBase.count("greetings"), 2);

        let opts = CheckOptions { min_examples: 0, ..CheckOptions::default() };
        let report = run(OK.as_bytes(), &opts);
        assert_eq!((report.total_tokens[0], report.assistant_tokens[0], report.billing_tokens), (19, 2, 19));

        // A name adds 1 plus its tokens; text parts are counted joined.
        let n = |s: &str| o200k.encode_ordinary(s).len() as u32;
        let line = msgs(
            r#"{"role":"user","name":"bob_smith","content":"tiktoken is great!"},{"role":"assistant","content":[{"type":"text","text":"tik"},{"type":"text","text":"token"}]}"#,
        );
        let report = run(line.as_bytes(), &opts);
        let want =
            3 + (3 + n("user") + n("tiktoken is great!") + 1 + n("bob_smith")) + (3 + n("assistant") + n("tiktoken"));
        assert_ne!(n("tiktoken"), n("tik") + n("token"));
        assert_eq!((report.total_tokens[0], report.assistant_tokens[0]), (want, n("tiktoken")));

        // The same under cl100k_base.
        let cl = CheckOptions { encoding: Encoding::Cl100kBase, ..opts.clone() };
        let m = |s: &str| cl100k.encode_ordinary(s).len() as u32;
        let report = run(OK.as_bytes(), &cl);
        assert_eq!(
            report.total_tokens[0],
            3 + 3 * 3 + m("system") + m("s") + m("user") + m("hi") + m("assistant") + m("greetings")
        );
        // Billing tokens are capped at the limit per example.
        let report = run(format!("{OK}\n{}", ok("a", "b")).as_bytes(), &CheckOptions { token_limit: 10, ..opts });
        assert_eq!(report.billing_tokens, 20);
    }

    #[test]
    fn tool_definitions_count_as_the_cookbook_and_the_api_do() {
        // The cookbook's `num_tokens_for_tools` example: this tool and these two messages are 101
        // prompt tokens for gpt-4o and 105 for gpt-3.5-turbo and gpt-4, as counted by the API.
        let tools = r#"[{"type":"function","function":{"name":"get_current_weather","description":"Get the current weather in a given location","parameters":{"type":"object","properties":{"location":{"type":"string","description":"The city and state, e.g. San Francisco, CA"},"unit":{"type":"string","description":"The unit of temperature to return","enum":["celsius","fahrenheit"]}},"required":["location"]}}}]"#;
        let messages = concat!(
            r#"{"role":"system","content":"You are a helpful assistant that can answer to questions about the weather."},"#,
            r#"{"role":"user","content":"What's the weather like in San Francisco?"},"#,
            r#"{"role":"assistant","content":"x"}"#
        );
        let line = format!(r#"{{"messages":[{messages}],"tools":{tools}}}"#);
        for (encoding, api_prompt_tokens) in [(Encoding::O200kBase, 101), (Encoding::Cl100kBase, 105)] {
            let opts = CheckOptions { encoding, min_examples: 0, ..CheckOptions::default() };
            let report = run(line.as_bytes(), &opts);
            assert!(report.problems.is_empty(), "{:?}", report.problems);
            let reply = 3 + encoding.count("assistant") + encoding.count("x");
            assert_eq!(report.total_tokens[0] as usize, api_prompt_tokens + reply, "{encoding:?}");
            // The same tools as legacy `functions` count the same.
            let functions = serde_json::from_str::<Value>(tools).unwrap()[0]["function"].to_string();
            let legacy = format!(r#"{{"messages":[{messages}],"functions":[{functions}]}}"#);
            assert_eq!(run(legacy.as_bytes(), &opts).total_tokens, report.total_tokens);
        }
    }

    #[test]
    fn tool_calls_are_replies_and_reply_tokens() {
        let call = |name: &str, args: &str| {
            format!(
                r#"{{"messages":[{SU},{{"role":"assistant","content":null,"tool_calls":[{{"id":"c","type":"function","function":{{"name":"{name}","arguments":{}}}}}]}}]}}"#,
                Value::String(args.into())
            )
        };
        let opts = CheckOptions { min_examples: 0, ..CheckOptions::default() };
        let lines = [
            call("move", r#"{"direction": "up", "m": 3}"#),
            call("move", r#"{"m":3,"direction":"up"}"#),
            call("move", r#"{"m":4,"direction":"up"}"#),
            call("land", "{}"),
        ];
        let report = run(lines.join("\n").as_bytes(), &opts);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        // Key order and spacing do not make two calls differ; name and values do.
        assert_eq!(report.distinct_replies, 3);
        assert_eq!(report.reply_labels[0].0, r#"move({"direction":"up","m":3})"#);
        // Nor does the order of parallel calls, as `Reply::same_calls` has it.
        let two = |first: (&str, &str), second: (&str, &str)| {
            let call = |(name, args): (&str, &str)| {
                format!(
                    r#"{{"id":"c","type":"function","function":{{"name":"{name}","arguments":{}}}}}"#,
                    Value::String(args.into())
                )
            };
            format!(
                r#"{{"messages":[{SU},{{"role":"assistant","content":null,"tool_calls":[{},{}]}}]}}"#,
                call(first),
                call(second)
            )
        };
        let (a, b) = (("land", "{}"), ("move", r#"{"m": 3}"#));
        let swapped = run([two(a, b), two(b, a)].join("\n").as_bytes(), &opts);
        assert_eq!(swapped.distinct_replies, 1, "{:?}", swapped.reply_labels);
        assert_eq!(swapped.reply_labels[0].0, r#"land({}) move({"m":3})"#);
        let n = |s: &str| Encoding::O200kBase.count(s) as u32;
        assert_eq!(report.assistant_tokens[3], n("land") + n("{}"));
        let plain = 3 + 3 * 3 + n("system") + n("s") + n("user") + n("u") + n("assistant");
        assert_eq!(report.total_tokens[3], plain + n("land") + n("{}"));

        // Calls without a name, with arguments that are not JSON text, and tools that are not
        // function lists are errors.
        let bad = [
            call("move", "{oops").into_bytes(),
            su(r#"{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"arguments":"{}"}}]}"#),
            su(r#"{"role":"assistant","tool_calls":[{"id":"c","function":{"name":"f","arguments":{"a":1}}}]}"#),
            su(r#"{"role":"assistant","tool_calls":{"id":"c"}}"#),
        ];
        for line in &bad {
            check(line, &at1(&[BadToolCall]));
        }
        check(OK.replace("]}", r#"],"tools":{}}"#), &at1(&[BadTools]));
        check(OK.replace("]}", r#"],"tools":[{"type":"function"}]}"#), &at1(&[BadTools]));
    }

    #[test]
    fn lines_too_big_to_parse_are_refused_by_line() {
        // A line of many tiny messages: few bytes, but too many values to parse.
        let tiny = r#"{"role":"user","content":"x"},"#.repeat(MAX_LINE_VALUES / 5 + 10);
        let line = msgs(&format!("{tiny}{{\"role\":\"assistant\",\"content\":\"y\"}}"));
        let input = format!("{OK}\n{line}\n{OK}");
        let report = run(input.as_bytes(), &CheckOptions { min_examples: 0, ..CheckOptions::default() });
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
        assert_eq!((report.problems[0].code, report.problems[0].line), (LineTooLong, Some(2)));
        assert!(report.problems[0].message.contains("JSON values"), "{}", report.problems[0].message);
        assert_eq!(report.problems[1].code, Duplicate);
        // A line over the byte limit is skipped without being kept whole; the next line is read.
        let long = format!(r#"{{"messages":"{}"}}"#, "a".repeat(MAX_LINE_BYTES));
        let input = format!("{long}\n{OK}\n");
        let report = run(input.as_bytes(), &CheckOptions { min_examples: 0, ..CheckOptions::default() });
        assert_eq!((report.lines, report.examples), (2, 1));
        assert_eq!((report.problems[0].code, report.problems[0].line), (LineTooLong, Some(1)));
        let want = format!("the line is {} bytes, over the 32 MiB limit for one example; it is not parsed", long.len());
        assert_eq!(report.problems[0].message, want);
        assert!(line_size_problem(OK.as_bytes()).is_none());
        // Values inside strings do not count.
        assert!(line_size_problem(format!(r#"{{"a":"{}"}}"#, ",".repeat(MAX_LINE_VALUES * 2)).as_bytes()).is_none());
    }

    #[test]
    fn chunked_counts_equal_whole_counts() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let words = [
            "the",
            "Quick",
            "brown",
            "fox's",
            "42",
            "12345",
            "don't",
            "naïve",
            "日本語",
            "emoji🙂",
            "x=y;",
            "...",
            "--",
            "(a)",
            "URL/path",
            "I'm",
            "HTTP",
        ];
        let gaps = [" ", " ", " ", " ", "  ", "\n", " \n", "\t", "", ", ", ". ", "\r\n"];
        for enc in [Encoding::O200kBase, Encoding::Cl100kBase] {
            for _ in 0..30 {
                let mut text = String::new();
                while text.len() < rng.random_range(5_000..40_000) {
                    text.push_str(words[rng.random_range(0..words.len())]);
                    text.push_str(gaps[rng.random_range(0..gaps.len())]);
                }
                assert_eq!(enc.count(&text), enc.bpe().encode_ordinary(&text).len());
            }
        }
    }

    #[test]
    fn models() {
        use Encoding::*;
        for (model, enc, limit) in [
            ("gpt-3.5-turbo-0613", Cl100kBase, 4096),
            ("ft:gpt-3.5-turbo-0613:org::abc", Cl100kBase, 4096),
            ("gpt-3.5-turbo-0125", Cl100kBase, 16385),
            ("gpt-4", Cl100kBase, 65536),
            ("gpt-4-0613", Cl100kBase, 65536),
            ("ft:gpt-4-0613:org::x", Cl100kBase, 65536),
            ("davinci-002", Cl100kBase, 65536),
            ("babbage-002", Cl100kBase, 65536),
            ("gpt-4o-2024-08-06", O200kBase, 65536),
            ("gpt-4o-mini-2024-07-18", O200kBase, 65536),
            ("ft:gpt-4.1-mini-2025-04-14:org:run:id", O200kBase, 65536),
            ("ft:gpt-4.1-2025-04-14:org::id", O200kBase, 65536),
            ("o4-mini", O200kBase, 65536),
            ("gpt-5", O200kBase, 65536),
            ("qwen2.5-0.5b", O200kBase, 65536),
        ] {
            assert_eq!((encoding_for_model(model), token_limit_for_model(model)), (enc, limit), "{model}");
        }
        assert_eq!(CheckOptions::for_model("gpt-3.5-turbo").token_limit, 16385);
    }

    #[test]
    fn overlap_names_lines() {
        let opts = CheckOptions { min_examples: 0, ..CheckOptions::default() };
        let train = run(format!("{}\n{}\n{}", ok("a", "x"), ok("b", "x"), ok("c", "x")).as_bytes(), &opts);
        let valid = run(format!("{}\n\n{}\n{}", ok("c", "x"), ok("d", "x"), ok("a", "x")).as_bytes(), &opts);
        let problem = overlap(&train, &valid).unwrap();
        assert_eq!(problem.code, Overlap);
        assert_eq!(
            problem.message,
            "2 validation conversations also appear in the training file, e.g. valid line 1 = train line 3"
        );
        let other = run(ok("e", "x").as_bytes(), &opts);
        assert_eq!(overlap(&train, &other), None);
    }

    #[test]
    fn fuzz_never_panics() {
        use rand::{Rng, SeedableRng};
        let cases: usize = std::env::var("FTSWEEP_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0xF7_5EED);
        let seeds = [
            OK.to_owned(),
            DPO_OK.to_owned(),
            msgs(
                r#"{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"a"}]},{"role":"assistant","tool_calls":[{"id":"1"}],"weight":0},{"role":"tool","content":"t"},{"role":"assistant","content":"ok","name":"n"}"#,
            ),
        ];
        let junk: [&[u8]; 14] =
            [b"\"", b"{", b"}", b"[", b"]", b":", b",", b"\\", b"null", b"1e999", b"\xff", b"\xc3", b"\n", b"\r\n"];
        let swaps: [(&str, &[&str]); 4] = [
            (
                "\"content\":\"",
                &["\"content\":1,\"x\":\"", "\"content\":[\"", "\"content\":{\"a\":\"", "\"content\":null,\"y\":\""],
            ),
            ("\"role\":\"", &["\"role\":[\"", "\"role\":\"x", "\"role\":0,\"z\":\""]),
            ("\"messages\":[", &["\"messages\":{\"a\":[", "\"messages\":[1,", "\"messages\":[[],"]),
            ("\"type\":\"text\"", &["\"type\":5", "\"type\":\"image\"", "\"text\":\"text\""]),
        ];
        let start = std::time::Instant::now();
        for case in 0..cases {
            let mut file = Vec::new();
            for _ in 0..rng.random_range(0..6) {
                let mut line: Vec<u8> = if rng.random_bool(0.2) {
                    (0..rng.random_range(0..200)).map(|_| rng.random()).collect()
                } else {
                    seeds[rng.random_range(0..seeds.len())].clone().into_bytes()
                };
                for _ in 0..rng.random_range(0..4) {
                    let at = rng.random_range(0..=line.len());
                    match rng.random_range(0..4) {
                        0 => line.truncate(at),
                        1 => line.splice(at..at, junk[rng.random_range(0..junk.len())].iter().copied()).for_each(drop),
                        2 => {
                            let (from, tos) = swaps[rng.random_range(0..swaps.len())];
                            let to = tos[rng.random_range(0..tos.len())];
                            let text = String::from_utf8_lossy(&line).replacen(from, to, 1);
                            line = text.into_bytes();
                        }
                        _ => {
                            let end = rng.random_range(at..=line.len());
                            line.drain(at..end);
                        }
                    }
                }
                file.extend_from_slice(&line);
                file.extend_from_slice([&b"\n"[..], b"\r\n", b""][rng.random_range(0..3)]);
            }
            for format in [Format::Sft, Format::Dpo] {
                let opts = CheckOptions { format, token_limit: rng.random_range(1..40), ..CheckOptions::default() };
                let r = run(&file, &opts);
                assert_eq!(r.total_tokens.len(), r.examples, "case {case}");
                assert_eq!(r.hashes.len(), r.examples);
                assert!(r.examples + r.blank_lines <= r.lines);
                assert!(r.counts.values().all(|&n| n > 0));
                assert!(r.problems.len() <= r.counts.len() * opts.max_per_kind);
                let _ = crate::data::stats::stats(&r);
            }
        }
        eprintln!("fuzz: {cases} cases (x2 formats) in {:?}", start.elapsed());
    }
}
