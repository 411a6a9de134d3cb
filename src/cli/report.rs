//! `ftsweep report NAME [-o FILE]`: the sweep as one self-contained HTML page (see
//! [`crate::html`]), read from the database alone. It writes the file atomically (a
//! temporary file beside it, then a rename) and prints its path on stdout.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::compare::disagreements;
use super::leaderboard::Board;
use super::out::{errln, outln};
use super::{Cli, ExitStatus, UsageError, open_sweep};
use crate::html::{self, Curve, DataFile, Disagreements, Example, Page, Pick};
use crate::report::LeaderboardRow;
use crate::store::SharedStore;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sweep's name (the `name` in its file).
    pub sweep: String,
    /// Where to write the page (default: NAME-report.html in the current directory).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Rank by this grader (or `combined`) instead of the sweep's metric.
    #[arg(long)]
    pub metric: Option<String>,
}

/// Refuses an output path that cannot be written as a file before anything is read: a
/// folder, or a file in a folder that does not exist.
fn check_output(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(UsageError {
            message: format!("`{}` is a folder, not a file to write the report to", path.display()),
            hint: format!("give a file name: -o {}", path.join("report.html").display()),
        }
        .into());
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(folder) = parent.filter(|p| !p.is_dir()) {
        return Err(UsageError {
            message: format!(
                "cannot write the report to `{}`: there is no folder `{}`",
                path.display(),
                folder.display()
            ),
            hint: format!("create it first (mkdir -p {}) or give another -o", folder.display()),
        }
        .into());
    }
    Ok(())
}

pub fn run(cli: &Cli, args: &Args) -> Result<ExitStatus> {
    let (store, sweep) = open_sweep(&cli.db, &args.sweep)?;
    let path = args.output.clone().unwrap_or_else(|| PathBuf::from(format!("{}-report.html", sweep.name)));
    check_output(&path)?;
    let board = Board::load(&store, &sweep, args.metric.as_deref())?;
    let (rows, pick) = board.rows_and_pick();
    let pick = pick.map(|c| Pick { index: c.index, reason: c.reason, note: c.note });
    let curves = curves(&store, &rows)?;
    let others = board.others();
    let view = board.view(&others, None);
    let legend = crate::report::board_legend(&rows, &view);
    let disagreements = match &pick {
        Some(p) => runner_up(&board, &rows, p.index)?,
        None => None,
    };
    let sweep_file = store.lock().sweep_text(sweep.id)?;
    let page = Page {
        sweep: sweep.name.clone(),
        metric: board.metric.clone(),
        others: others.clone(),
        pick,
        legend,
        decoding: board.decoding_note(),
        curves,
        disagreements,
        sweep_path: sweep.spec_path.clone(),
        sweep_file,
        files: vec![
            DataFile {
                role: "training file".into(),
                path: sweep.training_file.clone(),
                sha256: sweep.training_sha256.clone(),
            },
            DataFile {
                role: "validation file".into(),
                path: sweep.validation_file.clone(),
                sha256: sweep.validation_sha256.clone(),
            },
        ],
        version: env!("CARGO_PKG_VERSION").to_string(),
        generated: jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string()),
        rows,
    };
    let text = html::render(&page)?;
    crate::files::write_atomically(&path, text.as_bytes())
        .with_context(|| format!("writing the report to `{}`", path.display()))?;
    errln!("report of `{}`: {} rows, {} bytes", sweep.name, page.rows.len(), text.len())?;
    outln!("{}", path.display())?;
    Ok(ExitStatus::Success)
}

/// Each run's losses and checkpoints, by run id.
fn curves(store: &SharedStore, rows: &[LeaderboardRow]) -> Result<std::collections::BTreeMap<String, Curve>> {
    let s = store.lock();
    let mut out = std::collections::BTreeMap::new();
    for id in rows.iter().filter(|r| r.kind == "run").filter_map(|r| r.run_id.as_deref()) {
        let metrics = s.run_metrics(id)?;
        let checkpoints = s.run_checkpoints(id)?;
        let curve = Curve {
            train: metrics.iter().filter(|m| !m.epoch_end).filter_map(|m| Some((m.step, m.train_loss?))).collect(),
            valid: metrics.iter().filter_map(|m| Some((m.step, m.valid_loss?))).collect(),
            checkpoints: checkpoints.iter().map(|c| (c.step, c.epoch, c.train_loss, c.valid_loss)).collect(),
        };
        out.insert(id.to_string(), curve);
    }
    Ok(out)
}

/// The examples where the pick and the runner-up (the best-ranked other scored row) disagree.
fn runner_up(board: &Board, rows: &[LeaderboardRow], pick: usize) -> Result<Option<Disagreements>> {
    let Some(other) = (0..rows.len()).find(|&i| i != pick && rows[i].score.is_some() && !rows[i].is_baseline) else {
        return Ok(None);
    };
    let grades = |i: usize| board.loaded[board.standings[i].index].candidate.grades.get(&board.metric);
    let (Some(sa), Some(sb)) = (grades(pick), grades(other)) else { return Ok(None) };
    if sa.len() != sb.len() {
        return Ok(None);
    }
    let examples = disagreements(board, pick, other, sa, sb)?
        .into_iter()
        .map(|d| Example {
            line: d.line,
            prompt: d.prompt,
            reference: d.reference,
            reply_pick: d.reply_a,
            reply_other: d.reply_b,
            score_pick: d.score_a,
            score_other: d.score_b,
        })
        .collect();
    Ok(Some(Disagreements { other, n_examples: sa.len(), examples }))
}
