//! Loading a sweep for `plan` and `run`: the file, its data (checked line by
//! line, as the fine-tuning API would), its runs and its price. All checks
//! happen here, before anything is written.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;

use super::UsageError;
use super::data::{DataCheckFailed, check_path};
use super::out::errln;
use crate::data::check::{self, CheckOptions, FileReport, Severity};
use crate::data::{self, ChatFile, DataError};
use crate::plan::{self, DataIdentity, PlannedRun};
use crate::pricing::{self, Price};
use crate::report;
use crate::spec::{self, OpenAiSettings, ProviderKind, Sweep, check_base_url};

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
    let sweep = spec::parse(path, &text)?;
    exists(&sweep.training_file, "training_file")?;
    exists(&sweep.validation_file, "validation_file")?;
    let opts = CheckOptions::for_model(&sweep.base_model);
    let training_report = check_path(&sweep.training_file, &opts)?;
    let validation_report = check_path(&sweep.validation_file, &CheckOptions { min_examples: 0, ..opts })?;
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
    for r in reports {
        for line in report::problem_lines(r) {
            errln!("{line}")?;
        }
    }
    if let Some(p) = check::overlap(&training_report, &validation_report) {
        errln!("{}", validation_report.describe(&p))?;
    }
    let training = read(&sweep.training_file)?;
    let validation = read(&sweep.validation_file)?;
    let identity = DataIdentity {
        training_sha256: training.sha256.clone(),
        validation_sha256: validation.sha256.clone(),
        server: match sweep.provider {
            ProviderKind::Local => String::new(),
            ProviderKind::OpenAi => server_url(&sweep.openai)?,
        },
    };
    let runs = plan::expand(&sweep, &identity);
    let price = sweep.pricing.or_else(|| pricing::lookup(&sweep.base_model));
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

/// The server a hosted sweep talks to: `OPENAI_BASE_URL` overrides the
/// sweep file's `[openai] base_url`.
pub fn server_url(settings: &OpenAiSettings) -> Result<String> {
    match std::env::var("OPENAI_BASE_URL") {
        Ok(url) if !url.trim().is_empty() => {
            let url = url.trim().trim_end_matches('/').to_string();
            check_base_url(&url).map_err(|m| UsageError {
                message: format!("OPENAI_BASE_URL: {m}"),
                hint: "use an https:// URL, or http://127.0.0.1:PORT/v1 for a local server".into(),
            })?;
            Ok(url)
        }
        _ => Ok(settings.base_url.clone()),
    }
}

fn exists(path: &Path, key: &str) -> Result<()> {
    if !path.is_file() {
        return Err(DataError {
            path: path.to_path_buf(),
            line: None,
            message: format!("the file named by `{key}` does not exist"),
            hint: format!("check `{key}` in the sweep file: the path is relative to the sweep file's folder"),
        }
        .into());
    }
    Ok(())
}

fn read(path: &Path) -> Result<ChatFile> {
    Ok(data::read_chat_file(path)?)
}
