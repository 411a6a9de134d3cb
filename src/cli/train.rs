//! `ftsweep train`: trains the local model family into an output directory by Hugging Face
//! Trainer conventions (`provider::local::hf`), as a sweep's trainer command. Progress goes to
//! stderr; SIGTERM ends it at once (no final adapter is written).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use super::out::errln;
use super::{Cli, ExitStatus, UsageError};
use crate::provider::local::BASE_MODEL;
use crate::provider::local::hf::{self, Progress, Training, TrainingError};
use crate::run::RunConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model to fine-tune: only `local/ngram` (the local model family).
    #[arg(long)]
    pub model: String,
    /// The training set, chat JSONL.
    #[arg(long = "train")]
    pub training_file: PathBuf,
    /// The validation set, chat JSONL; evaluated four times an epoch.
    #[arg(long = "valid")]
    pub validation_file: PathBuf,
    /// Epochs to train (on top of --init-from's), or `auto`.
    #[arg(long, value_parser = parse_epochs)]
    pub epochs: Auto<u32>,
    /// The learning rate multiplier (1 is the local trainer's base rate), or `auto`.
    #[arg(long, value_parser = parse_multiplier)]
    pub learning_rate_multiplier: Auto<f64>,
    /// Examples per step, or `auto`.
    #[arg(long, value_parser = parse_batch_size)]
    pub batch_size: Auto<u32>,
    #[arg(long)]
    pub seed: u64,
    /// Where metrics.jsonl, the checkpoint-<step>/ directories and the final adapter go.
    #[arg(long)]
    pub output_dir: PathBuf,
    /// Continue training the adapter in this directory (a final adapter or a checkpoint). Empty
    /// (a sweep's `{init_from}` outside a continuation): start from the base model.
    #[arg(long, value_parser = clap::value_parser!(std::ffi::OsString))]
    pub init_from: Option<std::ffi::OsString>,
    /// Pause this many milliseconds after each step (for trying crash recovery and early stopping).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub step_delay_ms: u64,
}

/// A value, or `auto` (`None`: the trainer chooses, as the local provider does).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Auto<T>(pub Option<T>);

fn auto<T>(text: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Auto<T>, String> {
    match text.trim() {
        "auto" => Ok(Auto(None)),
        t => parse(t).map(|v| Auto(Some(v))),
    }
}

fn parse_epochs(text: &str) -> Result<Auto<u32>, String> {
    auto(text, |t| {
        t.parse::<u32>()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| format!("`{t}` is not `auto` or a whole number of at least 1"))
    })
}

fn parse_batch_size(text: &str) -> Result<Auto<u32>, String> {
    auto(text, |t| {
        t.parse::<u32>()
            .ok()
            .filter(|&n| (1..=65_536).contains(&n))
            .ok_or_else(|| format!("`{t}` is not `auto` or a whole number from 1 to 65536"))
    })
}

fn parse_multiplier(text: &str) -> Result<Auto<f64>, String> {
    auto(text, |t| {
        t.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x > 0.0 && *x <= 1e6)
            .ok_or_else(|| format!("`{t}` is not `auto` or a positive number (at most 1e6)"))
    })
}

pub fn run(_cli: &Cli, args: &Args) -> Result<ExitStatus> {
    let training = Training {
        base_model: args.model.clone(),
        training_file: args.training_file.clone(),
        validation_file: args.validation_file.clone(),
        hyperparameters: RunConfig::supervised(
            args.epochs.0,
            args.batch_size.0,
            args.learning_rate_multiplier.0,
            args.seed,
        ),
        output_dir: args.output_dir.clone(),
        init_from: args.init_from.as_ref().filter(|d| !d.is_empty()).map(PathBuf::from),
        step_delay: Duration::from_millis(args.step_delay_ms),
    };
    let mut print_error = None;
    let mut on_progress = |p: Progress<'_>| {
        let line = match p {
            // Steps are in metrics.jsonl; evaluations and checkpoints are worth a line.
            Progress::Log(entry) if entry.contains_key("eval_loss") => {
                let number = |k: &str| entry.get(k).and_then(serde_json::Value::as_f64).unwrap_or(f64::NAN);
                format!(
                    "ftsweep train: step {}/{} (epoch {:.2}): eval_loss {:.4}, eval_mean_token_accuracy {:.4}",
                    number("step"),
                    number("max_steps"),
                    number("epoch"),
                    number("eval_loss"),
                    number("eval_mean_token_accuracy"),
                )
            }
            Progress::Log(_) => return,
            Progress::Checkpoint { .. } => format!("ftsweep train: {p}"),
        };
        if let Err(e) = errln!("{line}") {
            print_error.get_or_insert(e);
        }
    };
    let trained = hf::train(&training, &mut on_progress).map_err(|e| usage(e, args))?;
    if let Some(e) = print_error {
        return Err(e.into());
    }
    errln!(
        "ftsweep train: done: {} step(s), {} epoch(s); the adapter is in {}",
        trained.steps,
        trained.epochs,
        args.output_dir.display()
    )?;
    Ok(ExitStatus::Success)
}

/// Bad input becomes a usage error (exit code 2) with a hint; a data file's error says its own.
fn usage(e: TrainingError, args: &Args) -> anyhow::Error {
    let hint = match e {
        TrainingError::Data(data) => return data.into(),
        TrainingError::Write { .. } => return e.into(),
        TrainingError::Model(_) => format!(
            "pass --model {BASE_MODEL}; to fine-tune other models, use their own trainer (e.g. TRL) as the sweep's command"
        ),
        TrainingError::InitFrom(_) => {
            "pass a directory this trainer wrote (its output directory or one of its checkpoint-<step> directories)"
                .into()
        }
        TrainingError::Config(_) => format!(
            "check --epochs, --batch-size and --learning-rate-multiplier, and that {} has assistant replies",
            args.training_file.display()
        ),
    };
    UsageError { message: e.to_string(), hint }.into()
}
