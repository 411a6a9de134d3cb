//! What an engine is asked to do and what it reports: the one interface the
//! local-process engine and the Ray engine both implement (`submit`, `find`,
//! `state`, `stop`, `log_tail`). The id of a submission is deterministic
//! (from the sweep, run and attempt), so a submission whose answer was lost
//! is found again, never made twice.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// One run attempt's training job, as an engine is asked to run it.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    /// Deterministic from the sweep, run and attempt; `[A-Za-z0-9_-]`, at
    /// most 128 bytes. Ray's `submission_id`; the local engine's job id.
    pub id: String,
    /// The rendered trainer command.
    pub argv: Vec<String>,
    /// Absolute; made before the submission; the trainer writes here
    /// (`metrics.jsonl`, `checkpoint-<step>/`, the final adapter).
    pub output_dir: PathBuf,
    /// Extra environment for the trainer (the local engine's
    /// `CUDA_VISIBLE_DEVICES`).
    pub env: BTreeMap<String, String>,
    /// The sweep, run and attempt (`ftsweep_sweep`, `ftsweep_run`,
    /// `ftsweep_attempt`), for the engine's own listings.
    pub metadata: BTreeMap<String, String>,
}

/// Where a submitted job is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Accepted, waiting for resources.
    Pending,
    Running,
    /// The trainer exited 0.
    Succeeded,
    /// The trainer exited otherwise, or the engine lost it; `reason` ends
    /// with the last lines of its log.
    Failed {
        reason: String,
    },
    /// Stopped on request (cancel, early stopping, SIGTERM).
    Stopped,
}

impl JobState {
    /// Whether the job has ended.
    pub fn is_terminal(&self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed { .. } | JobState::Stopped)
    }
}

/// How many of a log's last lines a failure reason quotes.
pub const LOG_TAIL_LINES: usize = 20;
