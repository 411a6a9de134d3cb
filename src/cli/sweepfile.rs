//! Loading a sweep for `plan` and `run`: the file, its data (checked line by
//! line, as the fine-tuning API would), its runs and its price. All checks
//! happen here, before anything is written.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;

use super::UsageError;
use super::data::{DataCheckFailed, check_path};
use super::out::errln;
use crate::data::check::{self, CheckOptions, FileReport, Format, Severity};
use crate::data::{self, ChatFile};
use crate::plan::{self, DataIdentity};
use crate::pricing::{self, Price};
use crate::report;
use crate::run::PlannedRun;
use crate::spec::{self, Method, OpenAiSettings, ProviderKind, Sweep, check_base_url};

/// A sweep file with its data checked and read and its runs expanded.
pub struct LoadedSweep {
    pub path: PathBuf,
    pub text: String,
    pub sweep: Sweep,
    pub training: Arc<ChatFile>,
    pub validation: Arc<ChatFile>,
    pub training_report: FileReport,
    pub validation_report: FileReport,
    /// The price used for estimates: the sweep's `[pricing]`, else the table's.
    pub price: Option<Price>,
    pub runs: Vec<PlannedRun>,
    /// What the run ids hash besides the hyperparameters.
    pub identity: DataIdentity,
}

pub fn load(path: &Path) -> Result<LoadedSweep> {
    let text = std::fs::read_to_string(path).map_err(|e| UsageError {
        message: format!("cannot read the sweep file `{}`: {e}", path.display()),
        hint: "give the path of a sweep TOML file, e.g. sweeps/quickstart.toml".into(),
    })?;
    load_text(path, text)
}

/// Loads a sweep from its text (as recorded in the database); `path` names
/// it and anchors its relative data paths.
pub fn load_text(path: &Path, text: String) -> Result<LoadedSweep> {
    let mut sweep = spec::parse(path, &text)?;
    if let Some(c) = &mut sweep.command {
        c.output_root = output_root(path, &text, &c.output_root)?;
    }
    data_file(path, &text, &sweep.training_file, "training_file", CHAT_FILE)?;
    data_file(path, &text, &sweep.validation_file, "validation_file", CHAT_FILE)?;
    let config_template = config_template(path, &text, &sweep)?;
    warn_unused(path, &text, &sweep, config_template.as_deref())?;
    let validation_format = method_lines(&sweep)?;
    let opts = CheckOptions { format: training_format(sweep.method), ..CheckOptions::for_model(&sweep.base_model) };
    let training_report = check_path(&sweep.training_file, &opts)?;
    let validation_report =
        check_path(&sweep.validation_file, &CheckOptions { min_examples: 0, format: validation_format, ..opts })?;
    let reports = [&training_report, &validation_report];
    if reports.iter().any(|r| r.has_errors()) {
        let n: usize = reports.iter().map(|r| r.total(Severity::Error)).sum();
        let lines: Vec<String> = reports
            .iter()
            .flat_map(|r| report::problem_lines(r))
            .filter(|l| !l.contains(": warning: "))
            .map(|l| format!("  {l}"))
            .collect();
        return Err(DataCheckFailed(format!(
            "the sweep's data has {n} error(s); the fine-tuning API would reject it:\n{}\n  hint: fix the lines above; \
             `ftsweep data check FILE` lists every problem",
            lines.join("\n")
        ))
        .into());
    }
    // A text grader on tool-call references is refused before any warning is printed.
    let validation = read(&sweep.validation_file)?;
    crate::eval::config::check_references(&sweep.evaluation.graders, &validation)?;
    for r in reports {
        for line in report::problem_lines(r) {
            errln!("{line}")?;
        }
    }
    if let Some(p) = check::overlap(&training_report, &validation_report) {
        errln!("{}", validation_report.describe(&p))?;
    }
    if (sweep.provider, sweep.method) == (ProviderKind::Local, Method::Dpo) {
        errln!("note: {}", crate::provider::local::DPO_NOTE)?;
    }
    let training = read(&sweep.training_file)?;
    let identity = DataIdentity {
        training_sha256: training.sha256.clone(),
        validation_sha256: validation.sha256.clone(),
        server: match sweep.provider {
            ProviderKind::Local => String::new(),
            ProviderKind::OpenAi => server_url(&sweep.openai)?,
            // The trainer command decides what a run is: another command
            // trains other runs. The engine does not: a run is the same on
            // this machine and on a cluster.
            ProviderKind::Command => command_identity(&sweep, config_template.as_deref())?,
            // Run ids do not depend on where the API is reached: the same
            // account's jobs through a proxy are the same runs.
            ProviderKind::Together => "together".into(),
            ProviderKind::Azure => {
                sweep.azure.as_ref().map_or_else(|| "azure".to_string(), |a| format!("azure {}", a.account_id()))
            }
        },
    };
    let runs = plan::expand(&sweep, &identity);
    // A trainer command runs on the user's own hardware: no price (the
    // sweep file refuses `[pricing]` and the USD limits for it).
    let price = match sweep.provider {
        ProviderKind::Command => None,
        _ => sweep.pricing.or_else(|| pricing::committed(sweep.provider, &sweep.base_model)),
    };
    Ok(LoadedSweep {
        path: path.to_path_buf(),
        text,
        sweep,
        training: Arc::new(training),
        validation: Arc::new(validation),
        training_report,
        validation_report,
        price,
        runs,
        identity,
    })
}

/// What names a trainer command's runs: its argv templates, and the text
/// of its config template.
fn command_identity(sweep: &Sweep, config_template: Option<&str>) -> Result<String> {
    let Some(c) = &sweep.command else { return Ok("command".into()) };
    let mut identity = format!("command {}", serde_json::to_string(&c.train)?);
    if let Some(text) = config_template {
        identity.push_str(&format!(" config {}", crate::data::sha256_hex(text.as_bytes())));
    }
    Ok(identity)
}

/// The most bytes a config template may have (a trainer's YAML is a few
/// kilobytes).
const MAX_CONFIG_TEMPLATE_BYTES: u64 = 1 << 20;

/// Reads and checks a command sweep's config template: a UTF-8 text file
/// whose placeholders are all known, at the template's own file and line;
/// with successive halving, `{init_from}` in `train` or in it. `None`
/// without a template.
fn config_template(path: &Path, text: &str, sweep: &Sweep) -> Result<Option<String>> {
    let Some(file) = sweep.command.as_ref().and_then(|c| c.config_template.as_ref()) else { return Ok(None) };
    const KEY: &str = "command.config_template";
    data_file(path, text, file, KEY, ("the config template", "axolotl.yml"))?;
    let refuse = |message: String, hint: &str| spec::key_error(path, text, KEY, message, hint);
    let shown = file.display();
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    if size > MAX_CONFIG_TEMPLATE_BYTES {
        let message =
            format!("`{shown}` has {size} bytes, more than a config template may ({MAX_CONFIG_TEMPLATE_BYTES})");
        return Err(refuse(message, "name the trainer's config file (YAML, JSON, TOML), a few kilobytes").into());
    }
    let bytes = std::fs::read(file)
        .map_err(|e| refuse(format!("`{shown}` cannot be read: {e}"), "check the file's permissions"))?;
    let template = String::from_utf8(bytes).map_err(|e| {
        refuse(
            format!("`{shown}` is not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
            "a config template is a text file (YAML, JSON, TOML) with `{placeholders}`",
        )
    })?;
    let known = sweep.placeholder_names();
    // A placeholder never spans lines, so each line's are its own.
    for (i, line) in template.lines().enumerate() {
        if let Some((message, hint)) = spec::template_problem(line, &known) {
            return Err(spec::SpecError {
                path: file.clone(),
                line: Some(i + 1),
                key: None,
                message,
                hint: Some(hint),
            }
            .into());
        }
    }
    let halving = sweep.search.halving().is_some();
    let train = sweep.command.as_ref().map_or(&[][..], |c| &c.train[..]);
    if halving
        && !spec::template_uses(&template, spec::INIT_FROM)
        && !train.iter().any(|a| spec::template_uses(a, spec::INIT_FROM))
    {
        let (message, hint) = spec::halving_needs_init_from(true);
        return Err(spec::key_error(path, text, "command.train", message, &hint).into());
    }
    Ok(Some(template))
}

/// A command sweep's `output_root` as an absolute path, its folder resolved
/// by the file system (`sweeps/../runs` is `/…/runs`); it need not exist yet,
/// but if it does it must be a directory.
fn output_root(path: &Path, text: &str, root: &Path) -> Result<PathBuf> {
    let resolved = match (root.parent().map(std::fs::canonicalize), root.file_name()) {
        (Some(Ok(parent)), Some(name)) => parent.join(name),
        _ => std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()),
    };
    match std::fs::metadata(&resolved) {
        Ok(m) if !m.is_dir() => Err(spec::key_error(
            path,
            text,
            "command.output_root",
            format!("`{}` is not a directory", resolved.display()),
            "name a directory (made if missing) under which each run attempt trains, e.g. `output_root = \"runs\"`",
        )
        .into()),
        _ => Ok(resolved),
    }
}

/// Warns of a command sweep's hyperparameter that neither `train` nor the
/// config template uses: its runs would differ in nothing the trainer sees
/// (the seed only when the file writes it or replicates vary it).
fn warn_unused(path: &Path, text: &str, sweep: &Sweep, template: Option<&str>) -> Result<()> {
    let Some(c) = &sweep.command else { return Ok(()) };
    let used = |name: &str| {
        c.train.iter().any(|a| spec::template_uses(a, name)) || template.is_some_and(|t| spec::template_uses(t, name))
    };
    for axis in sweep.hyperparameters.iter() {
        let varied = axis.written
            || axis.name == crate::space::N_EPOCHS
            || (axis.name == crate::space::SEED && sweep.replicates.is_some());
        if !varied || used(&axis.name) {
            continue;
        }
        let name = &axis.name;
        let where_ =
            if template.is_some() { "neither `train` nor the config template uses" } else { "`train` never uses" };
        let e = spec::key_error(
            path,
            text,
            &format!("hyperparameters.{name}"),
            format!("{where_} `{{{name}}}`: runs that differ in `{name}` would train the same model"),
            &format!("pass `{{{name}}}` to the trainer, or remove `{name}`"),
        );
        errln!("warning: {e}")?;
    }
    Ok(())
}

/// The server a hosted sweep talks to: `OPENAI_BASE_URL` overrides the
/// sweep file's `[openai] base_url`.
pub fn server_url(settings: &OpenAiSettings) -> Result<String> {
    match std::env::var("OPENAI_BASE_URL") {
        Ok(url) if !url.trim().is_empty() => {
            let url = url.trim().trim_end_matches('/').to_string();
            check_base_url(&url).map_err(|m| UsageError {
                message: format!("OPENAI_BASE_URL: {m}"),
                hint: "use an https:// URL, or http://127.0.0.1:PORT/v1 for a local server, with no `user@` part"
                    .into(),
            })?;
            Ok(url)
        }
        _ => Ok(settings.base_url.clone()),
    }
}

/// The line format a training file of `method` is checked in.
fn training_format(method: Method) -> Format {
    match method {
        Method::Sft => Format::Sft,
        Method::Dpo => Format::Dpo,
    }
}

/// What a data line is, by its keys: a preference pair (`input`, `preferred_output`,
/// `non_preferred_output`) or a chat example (`messages`); `None` for a line that is neither (or
/// not a JSON object), which the line checks report.
fn line_kind(line: &[u8]) -> Option<Format> {
    let serde_json::Value::Object(o) = serde_json::from_slice(line).ok()? else { return None };
    if ["input", "preferred_output", "non_preferred_output"].iter().any(|k| o.contains_key(*k)) {
        Some(Format::Dpo)
    } else {
        o.contains_key("messages").then_some(Format::Sft)
    }
}

/// The first line of `path` of each kind: (line number, kind), in the order they come. Read as
/// the line checks read (a line buffer of at most `MAX_LINE_BYTES`; a line too big to parse is
/// theirs to report, not parsed here), stopping once both kinds are seen.
fn first_lines(path: &Path) -> Result<Vec<(usize, Format)>> {
    let file = std::fs::File::open(path).map_err(|e| UsageError {
        message: format!("cannot read `{}`: {e}", path.display()),
        hint: "check the path".into(),
    })?;
    let mut found: Vec<(usize, Format)> = Vec::new();
    // An unreadable line is the line checks' to report; `Interrupted` only ends the scan early.
    let _ = check::for_each_line(std::io::BufReader::with_capacity(1 << 16, file), |number, line| {
        if let check::Line::Bytes(bytes) = line
            && check::line_size_problem(bytes).is_none()
            && let Some(kind) = line_kind(bytes)
            && !found.iter().any(|(_, k)| *k == kind)
        {
            found.push((number, kind));
        }
        match found.len() {
            2 => Err(std::io::ErrorKind::Interrupted.into()),
            _ => Ok(()),
        }
    });
    Ok(found)
}

/// Checks that the data's lines are of the sweep's method: every training line a preference pair
/// for DPO, no preference pair anywhere for SFT; a DPO sweep's validation file holds chat examples
/// or preference pairs (graded against the preferred output), one kind throughout. Returns the
/// format the validation file is checked in.
fn method_lines(sweep: &Sweep) -> Result<Format> {
    const PAIR: &str = "{\"input\": {\"messages\": [...]}, \"preferred_output\": [{\"role\": \"assistant\", ...}], \
                        \"non_preferred_output\": [{\"role\": \"assistant\", ...}]}";
    let at = |path: &Path, line: usize| format!("{}:{line}", path.display());
    let training = first_lines(&sweep.training_file)?;
    let validation = first_lines(&sweep.validation_file)?;
    match sweep.method {
        Method::Dpo => {
            if let Some((line, _)) = training.iter().find(|(_, k)| *k == Format::Sft) {
                return Err(UsageError {
                    message: format!(
                        "{}: a chat example (`messages`) in the training file of a DPO sweep (`method = \"dpo\"`): \
                         every line must be a preference pair",
                        at(&sweep.training_file, *line)
                    ),
                    hint: format!(
                        "write each line as {PAIR}, or remove `method = \"dpo\"` to fine-tune on chat examples"
                    ),
                }
                .into());
            }
            if let [(a, ka), (b, _)] = validation.as_slice() {
                let (pair, chat) = if *ka == Format::Dpo { (a, b) } else { (b, a) };
                return Err(UsageError {
                    message: format!(
                        "{}: the validation file mixes preference pairs (line {pair}) and chat examples (line {chat})",
                        at(&sweep.validation_file, *a.max(b))
                    ),
                    hint: "make every validation line one kind: chat examples, or preference pairs (graded against \
                           the preferred output)"
                        .into(),
                }
                .into());
            }
            // A hosted DPO job is sent the validation file too, and the provider checks it in the
            // training file's format (Azure's DPO guide: both files hold `input` and two outputs).
            let hosted = matches!(sweep.provider, ProviderKind::OpenAi | ProviderKind::Azure | ProviderKind::Together);
            if let Some((line, Format::Sft)) = validation.first().filter(|_| hosted) {
                return Err(UsageError {
                    message: format!(
                        "{}: a chat example (`messages`) in the validation file of a DPO sweep on `{}`: the provider \
                         checks the validation file as preference pairs, like the training file",
                        at(&sweep.validation_file, *line),
                        sweep.provider.as_str()
                    ),
                    hint: format!(
                        "write each validation line as {PAIR} (evaluation grades against the preferred output)"
                    ),
                }
                .into());
            }
            Ok(validation.first().map_or(Format::Dpo, |(_, k)| *k))
        }
        Method::Sft => {
            let files =
                [(&sweep.training_file, &training, "training"), (&sweep.validation_file, &validation, "validation")];
            for (path, lines, noun) in files {
                if let Some((line, _)) = lines.iter().find(|(_, k)| *k == Format::Dpo) {
                    return Err(UsageError {
                        message: format!(
                            "{}: a preference pair (`preferred_output`, `non_preferred_output`) in the {noun} file of \
                             an SFT sweep",
                            at(path, *line)
                        ),
                        hint: "set `method = \"dpo\"` at the top of the sweep file to train on preference pairs (its \
                               training file all pairs), or give a chat file (`messages` lines)"
                            .into(),
                    }
                    .into());
                }
            }
            Ok(Format::Sft)
        }
    }
}

/// What a data file is, for hints: its noun and an example path.
const CHAT_FILE: (&str, &str) = ("the chat JSONL file", "data/train.jsonl");

/// Checks that the data file a sweep file's `key` names is a regular file
/// (or a symbolic link to one); the error names the sweep file, the line and
/// the key, and says what the path is instead.
fn data_file(sweep_path: &Path, text: &str, file: &Path, key: &str, (noun, example): (&str, &str)) -> Result<()> {
    let name = key.rsplit('.').next().unwrap_or(key);
    let shown = file.display();
    let (message, hint) = match std::fs::metadata(file) {
        Ok(m) if m.is_file() => return Ok(()),
        Ok(m) if m.is_dir() => (
            format!("`{shown}` is a directory, not a file"),
            format!("name {noun} inside it, e.g. `{name} = \"{example}\"`"),
        ),
        Ok(_) => (
            format!("`{shown}` is not a regular file (a device, pipe or socket)"),
            format!("name {noun} on disk; save it to a file first"),
        ),
        Err(e) if is_symlink_loop(&e) => (
            format!("`{shown}` cannot be resolved: its symbolic links form a loop ({e})"),
            "fix or remove the symbolic link, or name the file itself".to_string(),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::read_link(file) {
            Ok(target) => (
                format!("`{shown}` is a symbolic link to `{}`, which does not exist", target.display()),
                "fix the symbolic link, or name the file itself".to_string(),
            ),
            Err(_) => (
                format!("`{shown}` does not exist"),
                format!("check `{key}`: a relative path is relative to the sweep file's folder"),
            ),
        },
        Err(e) => (format!("`{shown}` cannot be opened: {e}"), format!("check `{key}` and the file's permissions")),
    };
    Err(spec::key_error(sweep_path, text, key, message, &hint).into())
}

fn is_symlink_loop(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    let code = Some(libc::ELOOP);
    #[cfg(not(unix))]
    let code = None;
    code.is_some() && e.raw_os_error() == code
}

fn read(path: &Path) -> Result<ChatFile> {
    Ok(data::read_chat_file(path)?)
}
