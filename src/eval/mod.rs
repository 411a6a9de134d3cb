//! Evaluation: ask a model for each example's reply through the provider's
//! chat completion, cache the replies, and grade them.
//!
//! - [`graders`]: the pure graders (exact match, F1, BLEU, …) and the judge's score parsing.
//! - [`config`]: the `[evaluation]` graders as written, checked and fingerprinted.
//! - [`judge`] and [`command`]: the graders that cost a call or a process.
//! - [`runner`]: concurrent completions through the predictions cache, then grading.
//! - [`scores`]: per-example scores from stored replies and cached grades; pure.
//! - [`load`]: a sweep's evaluated models, read back from the store for ranking.

pub mod command;
pub mod config;
pub mod graders;
pub mod judge;
pub mod load;
pub mod runner;
pub mod scores;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::provider::ProviderError;
use crate::spec::Evaluation;
use crate::store::StoreError;

/// Why an evaluation could not finish. A grader's failure is not one: its
/// example is left ungraded and counted, and graded again next time.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("the model `{model}` did not answer: {source}")]
    Provider { model: String, source: ProviderError },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an evaluation asked for, counted as it goes.
#[derive(Debug, Default)]
pub struct Counts {
    completions: AtomicU64,
    cached: AtomicU64,
    judge_calls: AtomicU64,
    judge_cached: AtomicU64,
    commands: AtomicU64,
    commands_cached: AtomicU64,
    grader_failures: AtomicU64,
}

/// The counts at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CountSnapshot {
    /// Completions asked of the provider for replies to grade.
    pub completions: u64,
    /// Replies read from the predictions cache instead.
    pub cached: u64,
    /// Completions asked of a judge model.
    pub judge_calls: u64,
    /// Judge grades read from the grade cache instead.
    pub judge_cached: u64,
    /// Command grader processes run.
    pub commands: u64,
    /// Command grades read from the grade cache instead.
    pub commands_cached: u64,
    /// Examples a judge or command could not grade.
    pub grader_failures: u64,
}

impl CountSnapshot {
    /// Calls that cost something: completions and judge calls.
    pub fn provider_calls(&self) -> u64 {
        self.completions + self.judge_calls
    }
}

impl fmt::Display for CountSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} provider calls: {} completions ({} replies from the cache), {} judge calls ({} cached)",
            self.provider_calls(),
            self.completions,
            self.cached,
            self.judge_calls,
            self.judge_cached
        )?;
        if self.commands + self.commands_cached > 0 {
            write!(f, ", {} command runs ({} cached)", self.commands, self.commands_cached)?;
        }
        if self.grader_failures > 0 {
            write!(f, ", {} examples left ungraded", self.grader_failures)?;
        }
        Ok(())
    }
}

impl Counts {
    pub fn snapshot(&self) -> CountSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CountSnapshot {
            completions: get(&self.completions),
            cached: get(&self.cached),
            judge_calls: get(&self.judge_calls),
            judge_cached: get(&self.judge_cached),
            commands: get(&self.commands),
            commands_cached: get(&self.commands_cached),
            grader_failures: get(&self.grader_failures),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A sweep's evaluation: its settings, the limit on completions in flight
/// (shared by every run evaluated at the same time) and the counts.
pub struct Session {
    pub evaluation: Evaluation,
    /// The sweep file's folder: command graders run there.
    pub dir: PathBuf,
    permits: Arc<Semaphore>,
    pub counts: Counts,
    first_failure: Mutex<Option<String>>,
}

impl Session {
    /// A session for a sweep file's `[evaluation]`.
    pub fn new(evaluation: &Evaluation, sweep_file: &Path) -> Session {
        let dir = sweep_file.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        Session {
            permits: Arc::new(Semaphore::new(evaluation.concurrency.max(1) as usize)),
            evaluation: evaluation.clone(),
            dir,
            counts: Counts::default(),
            first_failure: Mutex::default(),
        }
    }

    /// The first grader failure of the session, for the report.
    pub fn first_failure(&self) -> Option<String> {
        self.first_failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn grader_failed(&self, message: String) {
        let before = self.counts.grader_failures.fetch_add(1, Ordering::Relaxed);
        match before {
            0..2 => tracing::warn!("{message}"),
            2 => tracing::warn!("{message} (further grader failures are counted, not shown)"),
            _ => tracing::debug!("{message}"),
        }
        let mut first = self.first_failure.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(message);
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("evaluation", &self.evaluation).field("dir", &self.dir).finish()
    }
}
