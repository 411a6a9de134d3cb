//! `ftsweep leaderboard`: a sweep's runs, its baseline and evaluated models,
//! ranked from the database with intervals and tie marks. It reads stored
//! replies and cached grades and never calls a provider. Also the helpers the
//! other evaluation commands share.

use std::path::Path;

use anyhow::Result;

use super::best::{self, Choice};
use super::out::{errln, outln};
use super::{Cli, ExitStatus, UsageError, open_existing, open_sweep};
use crate::eval::config::COMBINED;
use crate::eval::load::{self, Loaded, SweepSetup};
use crate::provider::local::labels;
use crate::rank::{self, Candidate, Settings, Standing};
use crate::report::{self, BoardView, LeaderboardRow};
use crate::run::EvalKind;
use crate::store::{EvalExample, SharedStore, SweepRecord};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sweep's name (the `name` in its file).
    pub sweep: String,
    /// Print a JSON array instead of a table.
    #[arg(long, conflicts_with_all = ["csv", "markdown"])]
    pub json: bool,
    /// Print CSV, every grader a column.
    #[arg(long, conflicts_with = "markdown")]
    pub csv: bool,
    /// Print a GitHub Markdown table (for pull requests).
    #[arg(long)]
    pub markdown: bool,
    /// Rank by this grader (or `combined`) instead of the sweep's metric.
    #[arg(long)]
    pub metric: Option<String>,
    /// Show every column of the table in full, however wide the terminal (a pipe always gets them).
    #[arg(long)]
    pub wide: bool,
}

/// How the leaderboard is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
    Markdown,
}

pub fn run(cli: &Cli, args: &Args) -> Result<ExitStatus> {
    let (store, sweep) = open_sweep(&cli.db, &args.sweep)?;
    let format = match (args.json, args.csv, args.markdown) {
        (true, _, _) => Format::Json,
        (_, true, _) => Format::Csv,
        (_, _, true) => Format::Markdown,
        _ => Format::Table,
    };
    let board = Board::load(&store, &sweep, args.metric.as_deref())?;
    let width = if args.wide || format != Format::Table { None } else { table_width()? };
    outln!("{}", board.render(format, width)?)?;
    Ok(ExitStatus::Success)
}

/// Prints the sweep's leaderboard on stdout: a table that fits the terminal, or JSON.
pub fn print(store: &SharedStore, sweep: &SweepRecord, json: bool) -> Result<()> {
    let board = Board::load(store, sweep, None)?;
    let (format, width) = if json { (Format::Json, None) } else { (Format::Table, table_width()?) };
    outln!("{}", board.render(format, width)?)?;
    Ok(())
}

/// The width the table must fit: `COLUMNS` when it is set to a positive integer (another value
/// is ignored with a warning, as GNU `ls` does; an empty one is unset), else the terminal's when
/// stdout is one, else none (a pipe or file gets every column).
fn table_width() -> Result<Option<usize>> {
    if let Some(text) = std::env::var_os("COLUMNS").filter(|v| !v.is_empty()) {
        match text.to_str().and_then(|t| t.parse::<usize>().ok()).filter(|&n| n > 0) {
            Some(n) => return Ok(Some(n)),
            None => errln!("warning: ignoring COLUMNS={}: not a positive integer", text.to_string_lossy())?,
        }
    }
    Ok(console::Term::stdout().size_checked().map(|(_, columns)| usize::from(columns)))
}

/// A sweep's ranked rows, loaded and graded.
pub struct Board {
    pub setup: SweepSetup,
    pub loaded: Vec<Loaded>,
    pub candidates: Vec<Candidate>,
    pub standings: Vec<Standing>,
    /// The score ranked by.
    pub metric: String,
    /// Every score, graders then `combined`.
    pub names: Vec<String>,
    pub pass_fail: bool,
    /// A local sweep's note on the bound its coverage sets (see [`local_note`]).
    pub local_note: Option<String>,
    /// Where the rows' examples are read from (see [`Board::examples`]).
    store: SharedStore,
}

/// The note that a local sweep's scores are bounded by the validation references its classifier
/// can give, when some are out of reach; read from the sweep's data files when they are still
/// there unchanged, else `None`.
fn local_note(sweep: &SweepRecord) -> Option<String> {
    if sweep.provider != crate::spec::ProviderKind::Local.as_str() {
        return None;
    }
    let read = |path: &str, sha256: &str| {
        crate::data::read_chat_file(Path::new(path)).ok().filter(|file| file.sha256 == sha256)
    };
    let training = read(&sweep.training_file, &sweep.training_sha256)?;
    let validation = read(&sweep.validation_file, &sweep.validation_sha256)?;
    labels::coverage(&training.conversations, &validation.conversations).note()
}

impl Board {
    /// Loads and ranks a sweep's rows by `metric` (default: the sweep's).
    pub fn load(store: &SharedStore, sweep: &SweepRecord, metric: Option<&str>) -> Result<Board> {
        let (setup, loaded) = {
            let mut s = store.lock();
            let setup = load::setup(&s, sweep)?;
            let loaded = load::board(&mut s, &setup)?;
            (setup, loaded)
        };
        if let Some(w) = &setup.warning {
            errln!("warning: {w}")?;
        }
        let names = setup.evaluation.score_names();
        let metric = match metric {
            None => setup.evaluation.metric.as_str().to_string(),
            Some(m) if names.iter().any(|n| n == m) => m.to_string(),
            Some(m) => {
                return Err(UsageError {
                    message: format!("sweep `{}` has no grader named `{m}`", sweep.name),
                    hint: format!("rank by one of: {}", names.join(", ")),
                }
                .into());
            }
        };
        let pass_fail = metric != COMBINED && setup.evaluation.grader(&metric).is_some_and(|g| g.is_pass_fail());
        let candidates: Vec<Candidate> = loaded.iter().map(|l| l.candidate.clone()).collect();
        let settings =
            Settings { metric: &metric, pass_fail, alpha: setup.evaluation.alpha, margin: setup.evaluation.margin };
        let standings = rank::standings(&candidates, &settings);
        let local_note = local_note(sweep);
        let store = store.clone();
        Ok(Board { setup, loaded, candidates, standings, metric, names, pass_fail, local_note, store })
    }

    /// The examples of the row at `standing` (an index into the standings), read from the store:
    /// the board itself holds their scores only.
    pub fn examples(&self, standing: usize) -> Result<Vec<EvalExample>> {
        Ok(load::examples(&self.store.lock(), &self.loaded[self.standings[standing].index])?)
    }

    /// The rows, `best`'s pick marked (`is_pick`).
    pub fn rows(&self) -> Vec<LeaderboardRow> {
        self.rows_and_pick().0
    }

    /// The rows with `best`'s pick marked, and the pick.
    pub fn rows_and_pick(&self) -> (Vec<LeaderboardRow>, Option<Choice>) {
        let mut rows = report::leaderboard_rows(&self.candidates, &self.standings, &self.metric, &self.names);
        report::mark_seed_groups(&mut rows);
        let pick = best::choose(self, &rows, false);
        if let Some(p) = &pick {
            rows[p.index].is_pick = true;
        }
        (rows, pick)
    }

    /// The other scores than the one ranked by.
    pub fn others(&self) -> Vec<String> {
        self.names.iter().filter(|n| **n != self.metric).cloned().collect()
    }

    /// How its table is shown: `others` from [`Board::others`], `pick` the reason of `best`'s pick.
    pub fn view<'a>(&'a self, others: &'a [String], pick: Option<&'a str>) -> BoardView<'a> {
        BoardView {
            metric: &self.metric,
            others,
            alpha: self.setup.evaluation.alpha,
            margin: self.setup.evaluation.margin,
            pass_fail: self.pass_fail,
            local_note: self.local_note.as_deref(),
            sweep: &self.setup.sweep.name,
            pick,
        }
    }

    /// The leaderboard in `format`; a table within `width` columns when given.
    pub fn render(&self, format: Format, width: Option<usize>) -> Result<String> {
        let (rows, pick) = self.rows_and_pick();
        let others = self.others();
        let view = self.view(&others, pick.as_ref().map(|p| p.reason.as_str()));
        Ok(match format {
            Format::Table => format!(
                "{}\n{}",
                report::leaderboard_table(&rows, &view, width),
                report::wrap(&self.decoding_note(), width)
            ),
            Format::Json => serde_json::to_string_pretty(&rows)?,
            Format::Csv => report::leaderboard_csv(&rows, &self.names).trim_end().to_string(),
            Format::Markdown => {
                format!("{}\n\n{}", report::leaderboard_markdown(&rows, &view).trim_end(), self.decoding_note())
            }
        })
    }

    /// The footnote on how the replies were asked for: each distinct decoding of the rows'
    /// evaluations (provider, server, temperature, token limit, `top_p` and `seed` when set),
    /// with how many rows each when they differ.
    pub fn decoding_note(&self) -> String {
        let mut seen: Vec<(&str, usize)> = Vec::new();
        for d in self.loaded.iter().filter_map(|l| l.decoding.as_deref()) {
            match seen.iter_mut().find(|(s, _)| *s == d) {
                Some((_, n)) => *n += 1,
                None => seen.push((d, 1)),
            }
        }
        let local = |d: &str| {
            if d.starts_with("local ") {
                format!(
                    "{d} (the local provider answers its most probable reply; temperature, top_p and seed do not apply)"
                )
            } else {
                d.to_string()
            }
        };
        match seen.as_slice() {
            [] => "decoding: no evaluation recorded".into(),
            [(d, _)] => format!("decoding: {}", local(d)),
            many => {
                let parts: Vec<String> = many
                    .iter()
                    .map(|(d, n)| format!("{} ({n} row{})", local(d), if *n == 1 { "" } else { "s" }))
                    .collect();
                format!("decoding (the rows were asked under different settings): {}", parts.join("; "))
            }
        }
    }

    /// The standing of the row `text` names: a run id or a unique prefix of
    /// one, `RUN@EPOCH` for a checkpoint, `baseline`, or a model id.
    pub fn find(&self, text: &str) -> Result<usize> {
        let text = text.trim();
        let matches: Vec<usize> = (0..self.standings.len())
            .filter(|&i| {
                let c = &self.candidates[self.standings[i].index];
                let label = c.label();
                match c.role {
                    EvalKind::Baseline => text == "baseline" || c.model.as_deref() == Some(text),
                    EvalKind::Model => c.model.as_deref() == Some(text),
                    EvalKind::Run => label.starts_with(text) || c.model.as_deref() == Some(text),
                    EvalKind::Checkpoint => label == text || c.model.as_deref() == Some(text),
                }
            })
            .collect();
        match matches.as_slice() {
            [one] => Ok(*one),
            [] => Err(UsageError {
                message: format!("sweep `{}` has no run or model `{text}`", self.setup.sweep.name),
                hint: "give a run id from `ftsweep leaderboard` (a unique prefix will do), RUN@EPOCH, `baseline`, \
                       or a model id evaluated with `ftsweep eval --sweep`"
                    .into(),
            }
            .into()),
            many => Err(UsageError {
                message: format!("`{text}` names {} rows of sweep `{}`", many.len(), self.setup.sweep.name),
                hint: "give more of the run id".into(),
            }
            .into()),
        }
    }
}

/// The sweep a command is about: the one named, else the latest sweep that
/// plans the run `text` names.
pub fn sweep_for(db: &Path, named: Option<&str>, texts: &[&str]) -> Result<(SharedStore, SweepRecord)> {
    if let Some(name) = named {
        return open_sweep(db, name);
    }
    let store = open_existing(db)?;
    for text in texts {
        let id = text.split('@').next().unwrap_or(text);
        let ids = store.lock().run_ids_like(id)?;
        if let [one] = ids.as_slice() {
            let sweeps = store.lock().sweeps_of_run(one)?;
            if let Some(name) = sweeps.first() {
                let record = store.lock().sweep(name)?;
                if let Some(record) = record {
                    return Ok((store, record));
                }
            }
        }
    }
    Err(UsageError {
        message: format!("cannot tell which sweep `{}` belongs to", texts.join("` and `")),
        hint: "name the sweep with --sweep NAME".into(),
    }
    .into())
}
