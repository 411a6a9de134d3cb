//! `ftsweep data check|stats|split`: the data-preparation commands.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::out::{errln, outln};
use super::{Cli, ExitStatus, UsageError};
use crate::data::check::{self, CheckOptions, FileReport, Format};
use crate::data::{split, stats};
use crate::report;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    /// Check chat JSONL files line by line, as the fine-tuning API would (exit 2 on any error).
    Check(CheckArgs),
    /// Describe a chat JSONL file: examples, messages, tokens, replies, label balance.
    Stats(StatsArgs),
    /// Split a chat JSONL file into training and validation files, deterministically.
    Split(SplitArgs),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FormatArg {
    /// Supervised fine-tuning: {"messages": [...]}.
    Sft,
    /// Direct preference optimisation: {"input", "preferred_output", "non_preferred_output"}.
    Dpo,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The files; with two or more, the later ones are also checked for overlap with the first.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The line format.
    #[arg(long, value_enum, default_value = "sft")]
    pub format: FormatArg,
    /// The base model: chooses the tokenizer and the per-example token limit.
    #[arg(long, default_value = "gpt-4.1-mini-2025-04-14")]
    pub model: String,
    /// Problems listed per kind (all are counted).
    #[arg(long, default_value_t = 5)]
    pub max_per_kind: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// The chat JSONL file to describe.
    pub file: PathBuf,
    /// The base model: chooses the tokenizer and the per-example token limit.
    #[arg(long, default_value = "gpt-4.1-mini-2025-04-14")]
    pub model: String,
    #[arg(long, value_enum, default_value = "sft")]
    pub format: FormatArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct SplitArgs {
    /// The chat JSONL file to split.
    pub file: PathBuf,
    /// The share of examples that goes to validation, between 0 and 1 (exclusive).
    #[arg(long, default_value_t = 0.2)]
    pub valid: f64,
    /// The seed of the shuffle: the same file, share and seed give the same split.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The training output (default: FILE with `-train` before `.jsonl`).
    #[arg(long)]
    pub out_train: Option<PathBuf>,
    /// The validation output (default: FILE with `-valid` before `.jsonl`).
    #[arg(long)]
    pub out_valid: Option<PathBuf>,
    /// Replace outputs that already exist (without it, a split refuses to overwrite them).
    #[arg(long)]
    pub force: bool,
    /// Print JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// Data files had errors: exit code 2. The problems were printed already.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DataCheckFailed(pub String);

pub fn run(_cli: &Cli, args: &Args) -> Result<ExitStatus> {
    match &args.command {
        DataCommand::Check(a) => run_check(a),
        DataCommand::Stats(a) => run_stats(a),
        DataCommand::Split(a) => run_split(a),
    }
}

fn options(model: &str, format: FormatArg) -> Result<CheckOptions, super::out::WriteFailed> {
    if !check::model_is_known(model) {
        let o = CheckOptions::for_model(model);
        errln!(
            "warning: unknown model `{model}`: tokens are counted with {} and a limit of {} per example \
             (the gpt-4o defaults)\n  hint: pass --model with the base model you will fine-tune, e.g. \
             gpt-4.1-mini-2025-04-14",
            o.encoding.name(),
            o.token_limit
        )?;
    }
    Ok(CheckOptions {
        format: match format {
            FormatArg::Sft => Format::Sft,
            FormatArg::Dpo => Format::Dpo,
        },
        ..CheckOptions::for_model(model)
    })
}

/// Checks a file, turning "cannot open" into a usage error.
pub fn check_path(path: &Path, opts: &CheckOptions) -> Result<FileReport> {
    check::check_file(path, opts).map_err(|e| {
        UsageError { message: format!("cannot read `{}`: {e}", path.display()), hint: "check the path".into() }.into()
    })
}

fn run_check(a: &CheckArgs) -> Result<ExitStatus> {
    let opts = CheckOptions { max_per_kind: a.max_per_kind, ..options(&a.model, a.format)? };
    let mut reports = Vec::new();
    for (i, f) in a.files.iter().enumerate() {
        // Only the first file (the training file) must hold 10 examples.
        let o = if i == 0 { opts.clone() } else { CheckOptions { min_examples: 0, ..opts.clone() } };
        reports.push(check_path(f, &o)?);
    }
    let overlaps: Vec<(usize, check::Problem)> =
        (1..reports.len()).filter_map(|i| check::overlap(&reports[0], &reports[i]).map(|p| (i, p))).collect();
    // The overlap warning is one of the later file's problems: counted, and listed with the rest.
    for (i, p) in &overlaps {
        reports[*i].add_problem(p.clone());
    }
    let failed = reports.iter().any(FileReport::has_errors);
    if a.json {
        let files: Vec<_> = reports
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                let extra: Vec<_> = overlaps.iter().filter(|(j, _)| *j == i).map(|(_, p)| p).collect();
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("overlap".into(), serde_json::to_value(extra).unwrap_or_default());
                }
                v
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&serde_json::json!({ "ok": !failed, "files": files }))?)?;
    } else {
        outln!("{}", report::check_table(&reports))?;
        for r in &reports {
            for line in report::problem_lines(r) {
                outln!("{line}")?;
            }
        }
    }
    if failed {
        let n: usize = reports.iter().map(|r| r.total(check::Severity::Error)).sum();
        return Err(DataCheckFailed(format!(
            "{n} error(s) found: the fine-tuning API would reject these files\n  hint: fix the lines listed above"
        ))
        .into());
    }
    Ok(ExitStatus::Success)
}

fn run_stats(a: &StatsArgs) -> Result<ExitStatus> {
    let opts = CheckOptions { min_examples: 0, ..options(&a.model, a.format)? };
    let r = check_path(&a.file, &opts)?;
    let s = stats::stats(&r);
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&s)?)?;
    } else {
        outln!("{}", report::stats_text(&r, &s))?;
    }
    if r.has_errors() {
        errln!("warning: {} line(s) with errors were left out; run `ftsweep data check` to see them", {
            r.total(check::Severity::Error)
        })?;
    }
    Ok(ExitStatus::Success)
}

fn sibling(file: &Path, suffix: &str) -> PathBuf {
    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    file.with_file_name(format!("{stem}-{suffix}.jsonl"))
}

fn run_split(a: &SplitArgs) -> Result<ExitStatus> {
    let out_train = a.out_train.clone().unwrap_or_else(|| sibling(&a.file, "train"));
    let out_valid = a.out_valid.clone().unwrap_or_else(|| sibling(&a.file, "valid"));
    let summary = split::split(&a.file, a.valid, a.seed, &out_train, &out_valid, a.force)
        .map_err(|e| UsageError { message: e.to_string(), hint: e.hint().into() })?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&summary)?)?;
    } else {
        outln!(
            "{} → {} ({} examples) and {} ({} examples){}",
            a.file.display(),
            out_train.display(),
            summary.train,
            out_valid.display(),
            summary.valid,
            if summary.stratified { ", stratified by label" } else { "" }
        )?;
        for p in &summary.overwritten {
            outln!("replaced the existing {}", p.display())?;
        }
    }
    Ok(ExitStatus::Success)
}
