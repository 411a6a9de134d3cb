//! The scheduler: runs a sweep's runs concurrently up to `max_concurrent`,
//! each a state machine persisted in the store (planned → launching →
//! training → trained → evaluating → done, or failed with the reason). A
//! failed run is a row, never an abort of the sweep. Runs are claimed with
//! leases, so processes sharing a database never train a run twice; the
//! intent to launch (with the job's metadata tags and the budget check) is
//! committed before the call that costs money. This file holds what the
//! scheduler shares (its context, progress, summary, lease owners) and the
//! sweep's outer loop; `decide.rs` decides, `execute.rs` carries a pass out,
//! `task.rs` is one run's work, `launch.rs` gets its job, `follow.rs`
//! follows it, `evaluate.rs` evaluates, `search.rs` adds the runs planned
//! as the sweep goes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

mod decide;
mod evaluate;
mod execute;
mod follow;
mod launch;
mod search;
mod task;
pub use decide::launch_order;
pub use search::{adopt_stored, with_decided};

use crate::data::ChatFile;
use crate::pricing::Price;
use crate::provider::Provider;
use crate::run::{RunConfig, RunRecord};
use crate::spec::Metric;
use crate::store::{Budget, SharedStore, StoreError};

/// Everything a sweep's runs share.
pub struct SweepContext {
    pub sweep_name: String,
    pub store: SharedStore,
    pub provider: Arc<Provider>,
    pub base_model: String,
    pub training: Arc<ChatFile>,
    pub validation: Arc<ChatFile>,
    pub metric: Metric,
    pub max_concurrent: u32,
    pub options: RunOptions,
    /// The graders, the limit on completions in flight, and the counts.
    pub eval: Arc<crate::eval::Session>,
    /// The sweep as parsed, and what its run ids hash: rungs and replicates
    /// are planned from them as the scores come in.
    pub spec: Arc<crate::spec::Sweep>,
    pub identity: crate::plan::DataIdentity,
}

/// How runs are claimed, budgeted, retried and interrupted.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub sweep_id: i64,
    /// This process, as lease owner: `host:pid:nonce`.
    pub owner: String,
    pub lease: Duration,
    pub budget: Budget,
    /// Attempts after a provider-side failure.
    pub retries: u32,
    /// On interrupt, cancel the running jobs instead of leaving them running.
    pub cancel_on_interrupt: bool,
    /// Becomes `true` when the sweep must stop launching (Ctrl-C).
    pub shutdown: watch::Receiver<bool>,
    /// Each run's estimated training (tokens, USD), for the budget.
    pub estimates: HashMap<String, (u64, f64)>,
    /// The price that turns trained tokens into spent USD.
    pub price: Option<Price>,
    /// How long a run waits after a daily job cap without a `retry-after`.
    pub daily_limit_wait: Duration,
    /// The estimated (tokens, USD) of one epoch, for runs planned during the
    /// sweep (rungs, replicates), and the epochs `auto` stands for.
    pub epoch_estimate: (u64, f64),
    pub auto_epochs: u32,
}

/// The lease owner of this process: `host:pid:nonce`.
pub fn owner_id() -> String {
    let nonce = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{}:{}:{nonce:08x}", host_name(), std::process::id())
}

/// This machine's name (`uname -n`; on Linux, what /proc/sys/kernel/hostname says).
fn host_name() -> String {
    #[cfg(unix)]
    let name = Some(rustix::system::uname().nodename().to_string_lossy().trim().to_string());
    #[cfg(not(unix))]
    let name = std::env::var("COMPUTERNAME").or_else(|_| std::env::var("HOSTNAME")).ok();
    name.filter(|n| !n.is_empty()).unwrap_or_else(|| "localhost".into())
}

/// Whether the process behind an owner id may still run: on this host, its
/// pid must exist (`kill(pid, 0)` succeeds or is refused for permission); on
/// another host, or where that cannot be asked, only its lease tells.
pub fn owner_alive(owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, ':');
    let (_nonce, pid, host) = (parts.next(), parts.next(), parts.next());
    match (host, pid.and_then(|p| p.parse::<u32>().ok())) {
        (Some(h), Some(pid)) if h == host_name() => pid_exists(pid),
        _ => true,
    }
}

#[cfg(unix)]
fn pid_exists(pid: u32) -> bool {
    use rustix::io::Errno;
    // Only a positive pid names one process (0 and negatives name groups).
    let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else { return false };
    !matches!(rustix::process::test_kill_process(pid), Err(Errno::SRCH))
}

#[cfg(not(unix))]
fn pid_exists(_pid: u32) -> bool {
    true
}

/// How often a run's job reports a [`Progress::Step`] at most, and how often its step metrics
/// are written to the store between epochs (so that `status` sees a job within an epoch).
pub const STEP_EVERY: Duration = Duration::from_millis(250);
pub const METRICS_EVERY: Duration = Duration::from_secs(2);

/// What the scheduler reports as it goes; the CLI renders it on stderr.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Before any work: how many runs need what.
    Started {
        total: usize,
        to_train: usize,
        to_evaluate: usize,
        done: usize,
    },
    Training {
        run_id: String,
        config: RunConfig,
        job_id: String,
    },
    Epoch {
        run_id: String,
        epoch: u32,
        n_epochs: Option<u32>,
        valid_loss: Option<f64>,
    },
    /// A training step of a run's job, at most every [`STEP_EVERY`] per run (and its last):
    /// `total_steps` when the provider says it, `epoch` 0 when it cannot tell.
    Step {
        run_id: String,
        step: u64,
        total_steps: Option<u64>,
        epoch: u32,
        n_epochs: Option<u32>,
        train_loss: Option<f64>,
    },
    Evaluating {
        run_id: String,
        model: String,
    },
    Done {
        run_id: String,
        score: f64,
        valid_loss: Option<f64>,
        seconds: f64,
    },
    Failed {
        run_id: String,
        reason: String,
    },
    /// Not launched: the budget would be exceeded.
    Skipped {
        run_id: String,
        reason: String,
    },
    /// Back in the queue: the provider refused the launch for now.
    Queued {
        run_id: String,
        reason: String,
        wait: Duration,
    },
    /// Runs owned by another live process; this one waits for them.
    Waiting {
        runs: usize,
        owner: String,
    },
    /// Stopped by an interrupt; how it was left.
    Interrupted {
        run_id: String,
        note: String,
    },
    /// Early stopping cancelled the run's job.
    Stopped {
        run_id: String,
        reason: String,
        trained_tokens: u64,
        /// The checkpoint that became the run's model, if any.
        model: Option<String>,
    },
    /// Runs added to the sweep as it goes (a rung's promotions, replicates).
    Planned {
        run_ids: Vec<String>,
        note: String,
    },
}

/// How a sweep went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub reused: usize,
    pub trained: usize,
    pub evaluated: usize,
    pub failed: usize,
    pub skipped: usize,
    pub interrupted: usize,
    /// Runs whose job early stopping cancelled.
    pub stopped: usize,
}

impl Summary {
    fn add(&mut self, o: &Summary) {
        self.reused += o.reused;
        self.trained += o.trained;
        self.evaluated += o.evaluated;
        self.failed += o.failed;
        self.skipped += o.skipped;
        self.interrupted += o.interrupted;
        self.stopped += o.stopped;
    }

    /// Counts how a run's task ended.
    fn record(&mut self, end: task::RunEnd) {
        match end {
            task::RunEnd::Done { trained, stopped } => {
                self.evaluated += 1;
                self.trained += usize::from(trained);
                self.stopped += usize::from(stopped);
            }
            task::RunEnd::Stopped => {
                self.trained += 1;
                self.stopped += 1;
            }
            task::RunEnd::Failed => self.failed += 1,
            task::RunEnd::Skipped => self.skipped += 1,
            task::RunEnd::Interrupted => self.interrupted += 1,
        }
    }
}

impl RunOptions {
    /// A run's estimated training (tokens, USD): from the plan, or, for a run
    /// planned during the sweep, from the epochs its own job trains.
    pub fn estimate(&self, run: &RunRecord) -> (u64, f64) {
        if let Some(e) = self.estimates.get(&run.run_id) {
            return *e;
        }
        let epochs = crate::run::job_epochs(&run.origin, run.config.n_epochs).unwrap_or(self.auto_epochs);
        let (tokens, usd) = self.epoch_estimate;
        (tokens * u64::from(epochs), usd * f64::from(epochs))
    }
}

/// The metadata tags of a run's attempt: how its job is found again.
pub fn job_tags(sweep_name: &str, run_id: &str, attempt: i64) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("ftsweep_sweep".to_string(), sweep_name.chars().take(512).collect()),
        ("ftsweep_run".to_string(), run_id.to_string()),
        ("ftsweep_attempt".to_string(), attempt.to_string()),
    ])
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Runs a sweep to its end: its runs, then, as the scores come in, the next
/// rungs of successive halving and the replicates of the leaders, each
/// planned from the database (so a restarted sweep plans the same ones).
pub async fn run_sweep(
    cx: Arc<SweepContext>,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
) -> Result<Summary, StoreError> {
    let mut total = Summary::default();
    let mut state = decide::State::default();
    loop {
        let runs = cx.store.lock().sweep_runs(cx.options.sweep_id)?;
        let summary = execute::run(cx.clone(), runs, &mut state, progress.clone()).await?;
        total.add(&summary);
        if !decide::goes_on(*cx.options.shutdown.borrow(), summary.interrupted) {
            break;
        }
        if !search::advance(&cx, progress.as_ref())? {
            break;
        }
    }
    Ok(total)
}
