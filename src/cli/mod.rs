//! The command line: clap types, one file per command, and the one place
//! where errors become exit codes. Only this module prints, through `out`.

// `println!` and `eprintln!` panic when a write fails: print with `outln!` and `errln!`.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod aliases;
mod best;
mod cancel;
mod compare;
mod data;
mod eval;
mod hosted;
mod job;
mod leaderboard;
mod live;
pub mod out;
mod plan;
mod promote;
mod prune;
mod report;
mod resume;
mod run;
mod serve;
mod status;
mod sweepfile;
mod train;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::data::DataError;
use crate::spec::SpecError;
use crate::store::{SharedStore, Store, StoreError, SweepRecord};

/// Hyperparameter sweeps of model fine-tunes, and picking the model to deploy.
#[derive(Debug, Parser)]
#[command(name = "ftsweep", version, about, long_about = None)]
pub struct Cli {
    /// The SQLite database that records everything.
    #[arg(long, global = true, env = "FTSWEEP_DB", default_value = "ftsweep.db")]
    pub db: PathBuf,
    /// Show more detail on stderr (per-epoch progress, logs).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check, describe and split chat JSONL data.
    Data(data::Args),
    /// Validate a sweep file and its data, and print the runs it expands to.
    Plan(plan::Args),
    /// Train and evaluate every run of a sweep that is not done, then print the ranked table.
    Run(run::Args),
    /// Print a sweep's runs ranked by its metric.
    Leaderboard(leaderboard::Args),
    /// Print the best run's model id (exit code 1 when no run finished).
    Best(best::Args),
    /// Serve the OpenAI fine-tuning protocol over the local trainer.
    Serve(serve::Args),
    /// Show each run's state, job, progress and age, and the budget.
    Status(status::Args),
    /// Resume a sweep from the database alone.
    Resume(resume::Args),
    /// Cancel a sweep's running jobs at the provider.
    Cancel(cancel::Args),
    /// Compare two runs: hyperparameters, metrics, a paired test, disagreeing examples.
    Compare(compare::Args),
    /// Evaluate any model on a data file with a sweep's graders, and record it.
    Eval(eval::Args),
    /// Point an alias (e.g. `champion`) at a run's model, with provenance.
    Promote(promote::Args),
    /// List the aliases.
    Aliases(aliases::Args),
    /// Drop the weights of a sweep's runs no longer needed (keeps scores), and shrink the database.
    Prune(prune::Args),
    /// Write the sweep as one self-contained HTML page with plots (read offline; see README).
    Report(report::Args),
    /// Train the local model into a directory by Hugging Face Trainer conventions (a sweep's trainer command).
    Train(train::Args),
    /// The local engine's wrapper of a trainer command (internal).
    #[command(name = "__command-job", hide = true)]
    CommandJob(job::Args),
}

/// A problem with what the user asked for: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{message}\n  hint: {hint}")]
pub struct UsageError {
    pub message: String,
    pub hint: String,
}

/// Asks `prompt` on the terminal and goes on only on a yes. Without a terminal the answer is
/// `refused` (a usage error, exit 2); any answer but yes is `declined`, with a hint to pass `--yes`.
pub fn confirm_on_terminal(prompt: &str, refused: UsageError, declined: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Err(refused.into());
    }
    out::err!("{prompt} [y/N] ")?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    match answer.trim() {
        "y" | "Y" | "yes" => Ok(()),
        _ => Err(UsageError { message: declined.into(), hint: "pass --yes to skip the question".into() }.into()),
    }
}

/// A result with nothing to show: exit code 1, message on stderr.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NoResult(pub String);

/// How a command ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Success,
    /// The command did its work but some of it failed (e.g. a run).
    Failure,
    /// Stopped by Ctrl-C, with everything recorded: exit code 130.
    Interrupted,
    /// Stopped by SIGTERM, with everything recorded: exit code 143.
    Terminated,
}

/// Runs the parsed command line and maps the outcome to an exit code.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Data(ref a) => data::run(&cli, a),
        Command::Plan(ref a) => plan::run(&cli, a),
        Command::Run(ref a) => run::run(&cli, a),
        Command::Leaderboard(ref a) => leaderboard::run(&cli, a),
        Command::Best(ref a) => best::run(&cli, a),
        Command::Serve(ref a) => serve::run(&cli, a),
        Command::Status(ref a) => status::run(&cli, a),
        Command::Resume(ref a) => resume::run(&cli, a),
        Command::Cancel(ref a) => cancel::run(&cli, a),
        Command::Compare(ref a) => compare::run(&cli, a),
        Command::Eval(ref a) => eval::run(&cli, a),
        Command::Promote(ref a) => promote::run(&cli, a),
        Command::Aliases(ref a) => aliases::run(&cli, a),
        Command::Prune(ref a) => prune::run(&cli, a),
        Command::Report(ref a) => report::run(&cli, a),
        Command::Train(ref a) => train::run(&cli, a),
        Command::CommandJob(ref a) => job::run(&cli, a),
    };
    match result {
        // Output that could not be written is a failure, whatever the work's outcome.
        Ok(_) if out::failed() => ExitCode::from(1),
        Ok(ExitStatus::Success) => ExitCode::SUCCESS,
        Ok(ExitStatus::Failure) => ExitCode::from(1),
        Ok(ExitStatus::Interrupted) => ExitCode::from(130),
        Ok(ExitStatus::Terminated) => ExitCode::from(143),
        // As a Unix tool killed by SIGPIPE: no message.
        Err(e) if e.downcast_ref::<out::WriteFailed>().is_some_and(out::WriteFailed::is_closed_stdout) => {
            ExitCode::from(141)
        }
        Err(e) => {
            let code = exit_code(&e);
            // Nothing more can be said when stderr fails too: the exit code says it.
            let _ = if code == 2 { out::errln!("error: {e}") } else { out::errln!("error: {e:#}") };
            ExitCode::from(code)
        }
    }
}

fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<SpecError>().is_some()
        || e.downcast_ref::<DataError>().is_some()
        || e.downcast_ref::<UsageError>().is_some()
        || e.downcast_ref::<data::DataCheckFailed>().is_some()
        || e.downcast_ref::<StoreError>().is_some_and(StoreError::is_bad_input)
    {
        2
    } else {
        1
    }
}

/// Opens the database, creating it.
fn open_store(db: &Path) -> anyhow::Result<SharedStore> {
    Ok(SharedStore::new(Store::open(db)?))
}

/// Fails when there is no database at `db`.
fn must_exist(db: &Path) -> anyhow::Result<()> {
    if !db.exists() {
        return Err(UsageError {
            message: format!("no database at `{}`", db.display()),
            hint:
                "run a sweep first (`ftsweep run sweeps/quickstart.toml`), or point --db / FTSWEEP_DB at the database"
                    .into(),
        }
        .into());
    }
    Ok(())
}

/// Opens an existing database to read it (read commands do not create one); a file that
/// cannot be written is opened read-only.
pub fn open_existing(db: &Path) -> anyhow::Result<SharedStore> {
    must_exist(db)?;
    Ok(SharedStore::new(Store::open_existing(db)?))
}

/// Opens an existing database to write to it: a read-only one is refused now, before any work.
fn open_existing_for_writing(db: &Path) -> anyhow::Result<SharedStore> {
    must_exist(db)?;
    open_store(db)
}

/// Opens an existing database to read it and finds a sweep in it.
fn open_sweep(db: &Path, name: &str) -> anyhow::Result<(SharedStore, SweepRecord)> {
    find_sweep(open_existing(db)?, db, name)
}

/// Opens an existing database to write to it and finds a sweep in it.
fn open_sweep_for_writing(db: &Path, name: &str) -> anyhow::Result<(SharedStore, SweepRecord)> {
    find_sweep(open_existing_for_writing(db)?, db, name)
}

fn find_sweep(store: SharedStore, db: &Path, name: &str) -> anyhow::Result<(SharedStore, SweepRecord)> {
    let sweep = store.lock().sweep(name)?;
    match sweep {
        Some(s) => Ok((store, s)),
        None => {
            let names = store.lock().sweep_names()?;
            Err(UsageError {
                message: format!("no sweep named `{name}` in `{}`", db.display()),
                hint: if names.is_empty() {
                    "the database has no sweeps yet: run one with `ftsweep run SWEEP.toml`".into()
                } else {
                    format!("the sweeps recorded are: {}", names.join(", "))
                },
            }
            .into())
        }
    }
}

/// The signal that asked a command to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Ctrl-C (SIGINT).
    Interrupt,
    /// SIGTERM, as from `kill`, systemd or a container runtime.
    Terminate,
}

/// Completes on Ctrl-C or SIGTERM, saying which. A signal that cannot be watched is never seen,
/// rather than stopping the command at once.
pub(crate) async fn shutdown_signal() -> Signal {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => Signal::Interrupt,
        () = terminate => Signal::Terminate,
    }
}
