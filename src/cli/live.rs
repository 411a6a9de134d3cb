//! The live progress display of `run` and `resume` when stderr is a terminal: the runs done,
//! running, queued and failed, a bar per running job (its step of its steps, epoch and training
//! loss, from the sweep's progress events), the spend against the budget (read from the store
//! each second) and an ETA. The progress lines the plain mode prints still print, above it.
//!
//! The ETA: each run to train weighs its planned trained tokens (`RunOptions::estimate`); a
//! running job counts the share of its steps done (or of its epochs, where the steps are not
//! known). The work done by this process so far, over the time it took, is the pace at which
//! the work left goes: `ETA = left × elapsed / done`. Evaluation time is in the pace, not in
//! the work.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::out::{self, LiveTerm};
use crate::run::{RunRecord, RunState, show};
use crate::store::BudgetState;
use crate::sweep::{Progress, SweepContext};

/// Whether `run` draws the live display: stderr is a terminal that can move its cursor.
pub fn wanted() -> bool {
    console::Term::stderr().is_term() && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// Where a run is, as the display counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Queued,
    Training,
    Evaluating,
    Done,
    Failed,
    /// Not launched (budget), stopped early without a model, or interrupted: out of the work.
    Out,
}

struct RunView {
    phase: Phase,
    /// Planned trained tokens; `None` until read for a run planned during the sweep.
    estimate: Option<u64>,
    /// The share of its training done now, and when this process began.
    fraction: f64,
    start_fraction: f64,
}

struct State {
    runs: HashMap<String, RunView>,
    bars: HashMap<String, ProgressBar>,
    budget: Option<BudgetState>,
    waiting: Option<String>,
    started: Instant,
}

/// The display: its bars, what it knows, and the thread that refreshes it each second.
pub struct Live {
    display: MultiProgress,
    counts: ProgressBar,
    budget: ProgressBar,
    eta: ProgressBar,
    state: Mutex<State>,
    cx: Arc<SweepContext>,
    stopping: AtomicBool,
    ticker: Mutex<Option<JoinHandle<()>>>,
}

fn line_bar(display: &MultiProgress, template: &str) -> ProgressBar {
    let bar = display.add(ProgressBar::hidden());
    bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar
}

impl Live {
    /// Draws the display for the sweep of `cx`, whose runs were `runs` when it began; a draw
    /// that cannot be written sends `stop` (as a progress line that cannot be written does).
    pub fn start(cx: Arc<SweepContext>, runs: &[RunRecord], stop: tokio::sync::watch::Sender<bool>) -> Arc<Live> {
        let term = LiveTerm::stderr();
        let failed = term.failed.clone();
        let display = MultiProgress::with_draw_target(ProgressDrawTarget::term_like_with_hz(Box::new(term), 10));
        let counts = line_bar(&display, "{spinner} {elapsed:>4} [{bar:20}] {wide_msg}");
        counts.set_length(runs.len() as u64);
        let budget = line_bar(&display, "  {wide_msg}");
        let eta = line_bar(&display, "  {wide_msg}");
        let views = runs.iter().map(|r| (r.run_id.clone(), initial(r, &cx))).collect();
        let state = State { runs: views, bars: HashMap::new(), budget: None, waiting: None, started: Instant::now() };
        let live = Arc::new(Live {
            display: display.clone(),
            counts,
            budget,
            eta,
            state: Mutex::new(state),
            cx,
            stopping: AtomicBool::new(false),
            ticker: Mutex::new(None),
        });
        out::set_live(Some(display));
        let ticking = live.clone();
        let ticker = std::thread::spawn(move || {
            while !ticking.stopping.load(Ordering::Relaxed) {
                ticking.tick();
                if failed.load(Ordering::Relaxed) {
                    let _ = stop.send(true);
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        *live.ticker.lock().unwrap_or_else(|p| p.into_inner()) = Some(ticker);
        live.redraw(&mut live.lock());
        live
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Clears the display: what is printed next goes where it was.
    pub fn finish(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
        out::set_live(None);
        let _ = self.display.clear();
    }

    /// Reads the budget and the estimates of runs planned during the sweep, then redraws.
    fn tick(&self) {
        let sweep_id = self.cx.options.sweep_id;
        let budget = self.cx.store.lock().budget_state(sweep_id).ok();
        let unknown = self.lock().runs.values().any(|v| v.estimate.is_none());
        let records = if unknown { self.cx.store.lock().sweep_runs(sweep_id).ok() } else { None };
        let mut state = self.lock();
        if budget.is_some() {
            state.budget = budget;
        }
        for r in records.iter().flatten() {
            if let Some(v) = state.runs.get_mut(&r.run_id) {
                v.estimate.get_or_insert(self.cx.options.estimate(r).0);
            }
        }
        self.redraw(&mut state);
    }

    /// Takes a progress event; `label` names its run as the plain lines do (`[ 3/18] r-…`).
    pub fn event(&self, p: &Progress, label: &str) {
        let mut state = self.lock();
        match p {
            Progress::Planned { run_ids, .. } => {
                for id in run_ids {
                    state.runs.entry(id.clone()).or_insert(RunView {
                        phase: Phase::Queued,
                        estimate: None,
                        fraction: 0.0,
                        start_fraction: 0.0,
                    });
                }
            }
            Progress::Waiting { runs, owner } => {
                state.waiting = Some(format!("waiting for {runs} run(s) of another process ({owner})"));
            }
            Progress::Training { run_id, .. } => {
                self.set_phase(&mut state, run_id, Phase::Training, Some(0.0));
                let bar = self.job_bar(&mut state, run_id, label);
                bar.set_message("launched; waiting for its first step");
            }
            Progress::Step { run_id, step, total_steps, epoch, n_epochs, train_loss } => {
                let fraction = match total_steps {
                    Some(t) if *t > 0 => Some((*step as f64 / *t as f64).min(1.0)),
                    _ => None,
                };
                if let Some(f) = fraction {
                    self.set_fraction(&mut state, run_id, f);
                }
                let bar = self.job_bar(&mut state, run_id, label);
                if let Some(t) = total_steps {
                    bar.set_length(*t);
                    bar.set_position(*step);
                }
                let mut msg = Vec::new();
                if *epoch > 0 {
                    msg.push(format!("epoch {epoch}/{}", show(*n_epochs)));
                }
                msg.push(match total_steps {
                    Some(t) => format!("step {step}/{t}"),
                    None => format!("step {step}"),
                });
                if let Some(l) = train_loss {
                    msg.push(format!("train_loss {l:.3}"));
                }
                bar.set_message(msg.join("  "));
            }
            Progress::Epoch { run_id, epoch, n_epochs, .. } => {
                if let Some(n) = n_epochs.filter(|n| *n > 0)
                    && state.bars.get(run_id).and_then(|b| b.length()).unwrap_or(1) <= 1
                {
                    self.set_fraction(&mut state, run_id, (f64::from(*epoch) / f64::from(n)).min(1.0));
                    let bar = self.job_bar(&mut state, run_id, label);
                    bar.set_message(format!("epoch {epoch}/{n}"));
                }
            }
            Progress::Evaluating { run_id, model } => {
                self.set_phase(&mut state, run_id, Phase::Evaluating, Some(1.0));
                let bar = self.job_bar(&mut state, run_id, label);
                bar.set_message(format!("evaluating {model}"));
            }
            Progress::Done { run_id, .. } => self.set_phase(&mut state, run_id, Phase::Done, Some(1.0)),
            Progress::Failed { run_id, .. } => self.set_phase(&mut state, run_id, Phase::Failed, Some(1.0)),
            Progress::Skipped { run_id, .. } => self.set_phase(&mut state, run_id, Phase::Out, None),
            Progress::Queued { run_id, .. } => self.set_phase(&mut state, run_id, Phase::Queued, None),
            Progress::Interrupted { run_id, .. } => self.set_phase(&mut state, run_id, Phase::Out, None),
            // With a model, its evaluation comes next.
            Progress::Stopped { run_id, model, .. } => {
                let phase = if model.is_some() { Phase::Evaluating } else { Phase::Out };
                self.set_phase(&mut state, run_id, phase, Some(1.0));
            }
            Progress::Started { .. } => {}
        }
        self.redraw(&mut state);
    }

    fn set_fraction(&self, state: &mut State, run_id: &str, fraction: f64) {
        if let Some(v) = state.runs.get_mut(run_id) {
            v.fraction = fraction;
        }
    }

    /// Moves a run to `phase` (and its training to `fraction`); a run that no longer runs loses
    /// its bar.
    fn set_phase(&self, state: &mut State, run_id: &str, phase: Phase, fraction: Option<f64>) {
        let Some(v) = state.runs.get_mut(run_id) else { return };
        v.phase = phase;
        if let Some(f) = fraction {
            // A new attempt starts from nothing, and so does its share of the work.
            if phase == Phase::Training {
                v.start_fraction = 0.0;
            }
            v.fraction = f;
        }
        if !matches!(phase, Phase::Training | Phase::Evaluating)
            && let Some(bar) = state.bars.remove(run_id)
        {
            bar.finish_and_clear();
            self.display.remove(&bar);
        }
    }

    /// The bar of a running job, made on its first event.
    fn job_bar(&self, state: &mut State, run_id: &str, label: &str) -> ProgressBar {
        state
            .bars
            .entry(run_id.to_string())
            .or_insert_with(|| {
                let bar = line_bar(&self.display, "  {prefix} [{bar:20}] {wide_msg}");
                // Empty until the job says its steps.
                bar.set_length(1);
                bar.set_prefix(label.to_string());
                bar
            })
            .clone()
    }

    /// Redraws the counts, the budget and the ETA lines.
    fn redraw(&self, state: &mut State) {
        let count = |p: Phase| state.runs.values().filter(|v| v.phase == p).count();
        let (done, training, evaluating) = (count(Phase::Done), count(Phase::Training), count(Phase::Evaluating));
        let (queued, failed, out) = (count(Phase::Queued), count(Phase::Failed), count(Phase::Out));
        self.counts.set_length(state.runs.len() as u64);
        self.counts.set_position(done as u64);
        let mut msg = format!("{done}/{} runs done · {} running", state.runs.len(), training + evaluating);
        if evaluating > 0 {
            msg.push_str(&format!(" ({evaluating} evaluating)"));
        }
        msg.push_str(&format!(" · {queued} queued · {failed} failed"));
        if out > 0 {
            msg.push_str(&format!(" · {out} skipped or stopped"));
        }
        if let Some(w) = &state.waiting {
            msg.push_str(&format!(" · {w}"));
        }
        self.counts.set_message(msg);
        self.counts.tick();
        let limits = &self.cx.spec.limits;
        self.budget.set_message(match state.budget {
            Some(b) => budget_short(&b, limits.budget_usd, limits.max_trained_tokens),
            None => "budget: reading…".to_string(),
        });
        self.eta.set_message(eta_line(state));
    }
}

/// A run as the display first sees it, from its state in the database.
fn initial(r: &RunRecord, cx: &SweepContext) -> RunView {
    let (phase, fraction) = match r.state {
        RunState::Done => (Phase::Done, 1.0),
        RunState::Failed | RunState::Cancelled => (Phase::Failed, 1.0),
        RunState::Trained | RunState::Evaluating => (Phase::Queued, 1.0),
        RunState::Planned | RunState::Launching | RunState::Training => (Phase::Queued, 0.0),
    };
    RunView { phase, estimate: Some(cx.options.estimate(r).0), fraction, start_fraction: fraction }
}

/// The ETA line: the time left at the pace so far, and how it is reckoned.
fn eta_line(state: &State) -> String {
    let known: Vec<u64> = state.runs.values().filter_map(|v| v.estimate).collect();
    let mean = if known.is_empty() { 0.0 } else { known.iter().sum::<u64>() as f64 / known.len() as f64 };
    let (mut done, mut left, mut total) = (0.0, 0.0, 0.0);
    for v in state.runs.values().filter(|v| v.phase != Phase::Out) {
        let tokens = v.estimate.map_or(mean, |e| e as f64);
        done += tokens * (v.fraction - v.start_fraction).max(0.0);
        total += tokens;
        if matches!(v.phase, Phase::Queued | Phase::Training) {
            left += tokens * (1.0 - v.fraction);
        }
    }
    let elapsed = state.started.elapsed().as_secs_f64();
    let share = if total > 0.0 { 100.0 * (total - left) / total } else { 100.0 };
    let basis = format!("{share:.0}% of {} planned trained tokens", si(total));
    if left <= 0.0 {
        return format!("ETA: training done; evaluations to finish ({basis})");
    }
    if done <= 0.0 {
        return format!("ETA: after the first steps ({basis})");
    }
    let secs = left * elapsed / done;
    format!(
        "ETA ~{} ({basis}; {} trained here in {}, at that pace)",
        super::status::format_age(secs),
        si(done),
        super::status::format_age(elapsed)
    )
}

/// The store's budget state as `run::budget_line` gives it, in a line that fits 100 columns.
fn budget_short(b: &BudgetState, usd: Option<f64>, tokens: Option<u64>) -> String {
    let mut line = format!("budget: ${:.2} spent + ${:.2} committed", b.spent_usd, b.running_usd);
    if let Some(u) = usd {
        line.push_str(&format!(" of ${u:.2} (${:.2} left)", (u - b.spent_usd - b.running_usd).max(0.0)));
    }
    line.push_str(&format!("; tokens {} (+{} running)", si(b.spent_tokens as f64), si(b.running_tokens as f64)));
    if let Some(t) = tokens {
        line.push_str(&format!("; max_trained_tokens {}", si(t as f64)));
    }
    line
}

/// A count in k or M.
fn si(n: f64) -> String {
    match n {
        n if n >= 1e6 => format!("{:.1}M", n / 1e6),
        n if n >= 1e3 => format!("{:.1}k", n / 1e3),
        n => format!("{n:.0}"),
    }
}
