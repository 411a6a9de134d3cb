//! `ftsweep promote RUN --alias NAME`: points an alias at a run's model,
//! with provenance (sweep, run, model, data hashes, graders, scores, time).
//! Guarded by the rule of `best`: an alias moves only to a model
//! significantly better than the current holder on the same validation
//! examples, or to a cheaper one (fewer trained tokens) shown to be within
//! `[evaluation] margin` of it (the one-sided upper bound on its shortfall
//! below the margin), unless `--force`. Not significantly different is never
//! enough.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use serde_json::json;

use super::compare::paired_test;
use super::leaderboard::{Board, sweep_for};
use super::out::{errln, outln};
use super::{Cli, ExitStatus, UsageError};
use crate::eval::scores;
use crate::rank::Candidate;
use crate::report::LeaderboardRow;
use crate::run::EvalKind;
use crate::store::{AliasRecord, EvalExample, SharedStore, SweepRecord};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run to promote: its id (a unique prefix will do), or RUN@EPOCH for a checkpoint.
    pub run: String,
    /// The alias to point at the run's model, e.g. `champion`.
    #[arg(long)]
    pub alias: String,
    /// Move the alias even if the run is neither significantly better than its current model nor cheaper and
    /// within the margin of it.
    #[arg(long)]
    pub force: bool,
    /// The sweep (default: the latest sweep that plans the run).
    #[arg(long)]
    pub sweep: Option<String>,
    /// Judge by this grader (or `combined`) instead of the sweep's metric.
    #[arg(long)]
    pub metric: Option<String>,
}

fn check_alias(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(UsageError {
            message: format!("`{name}` is not a usable alias"),
            hint: "use 1 to 64 letters, digits, `-`, `_` or `.`, e.g. `champion`".into(),
        }
        .into());
    }
    Ok(())
}

/// Seconds since the epoch as an RFC 3339 UTC time, to the second (a fraction is dropped;
/// before the epoch or not a number is the epoch, past jiff's range its last second).
pub fn rfc3339(seconds: f64) -> String {
    let whole = seconds.max(0.0).floor() as i64;
    let time = jiff::Timestamp::from_second(whole).unwrap_or(jiff::Timestamp::MAX);
    format!("{:.0}", time)
}

pub fn run(cli: &Cli, args: &Args) -> Result<ExitStatus> {
    check_alias(&args.alias)?;
    let (store, sweep) = sweep_for(&cli.db, args.sweep.as_deref(), &[&args.run])?;
    let board = Board::load(&store, &sweep, args.metric.as_deref())?;
    let i = board.find(&args.run)?;
    let (standing, rows) = (&board.standings[i], board.rows());
    let (candidate, row) = (&board.candidates[standing.index], &rows[i]);
    if !matches!(candidate.role, EvalKind::Run | EvalKind::Checkpoint) || standing.rank.is_none() {
        return Err(UsageError {
            message: format!("`{}` is not a finished run of sweep `{}` with all its grades", args.run, sweep.name),
            hint: "promote a ranked run from `ftsweep leaderboard`".into(),
        }
        .into());
    }
    let model = candidate.model.clone().unwrap_or_default();
    let examples = board.examples(i)?;
    let subject = Subject {
        board: &board,
        candidate,
        examples: &examples,
        scores: candidate.grades.get(&board.metric).unwrap_or_default(),
        model: &model,
    };
    let current = store.lock().alias(&args.alias)?;

    let (previous, forced) = match &current {
        None => (serde_json::Value::Null, false),
        Some(holder) if holder.model == model => {
            errln!("alias `{}` already points at {model}", args.alias)?;
            outln!("{model}")?;
            return Ok(ExitStatus::Success);
        }
        Some(holder) => judge(args, &store, &sweep, &subject, holder)?,
    };

    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let record = AliasRecord {
        name: args.alias.clone(),
        model: model.clone(),
        run_id: row.run_id.clone(),
        sweep: Some(sweep.name.clone()),
        provenance: provenance(args, &sweep, &subject, row, previous, forced, now),
        promoted_at: now,
    };
    store.lock().set_alias(&record, forced)?;
    outln!("{model}")?;
    errln!(
        "`{}` now points at {model} ({} of sweep `{}`, {} {}){}",
        args.alias,
        row.run_id.as_deref().unwrap_or("-"),
        sweep.name,
        board.metric,
        row.score.map_or("-".into(), |s| format!("{s:.3}")),
        match &current {
            Some(h) => format!("; it was {}", h.model),
            None => String::new(),
        }
    )?;
    Ok(ExitStatus::Success)
}

/// The run to promote: its sweep's board, its candidate, examples and scores, and its model.
struct Subject<'a> {
    board: &'a Board,
    candidate: &'a Candidate,
    /// The validation examples the run was evaluated on.
    examples: &'a [EvalExample],
    /// The run's per-example scores by the board's metric.
    scores: &'a [f64],
    model: &'a str,
}

/// Whether the alias may move, with the reason and hint when it may not.
type Verdict = Result<(), (String, String)>;

/// Judges the run against the alias's current holder: the holder's part of the provenance and
/// whether the move is forced; an error when the move is refused.
fn judge(
    args: &Args,
    store: &SharedStore,
    sweep: &SweepRecord,
    subject: &Subject<'_>,
    holder: &AliasRecord,
) -> Result<(serde_json::Value, bool)> {
    let board = subject.board;
    let holder_scores = holder_scores(store, sweep, subject, holder)?;
    let old_mean = holder_scores.as_deref().map(crate::stats::mean);
    // Cheaper: fewer trained tokens behind the model than the holder's
    // (from its row in this sweep, else from its provenance).
    let holder_tokens = board
        .candidates
        .iter()
        .find(|c| c.role.is_ranked() && c.model.as_deref() == Some(holder.model.as_str()))
        .and_then(|c| c.trained_tokens)
        .or_else(|| holder.provenance["trained_tokens"].as_i64());
    let cheaper = subject.candidate.trained_tokens.zip(holder_tokens).is_some_and(|(new, old)| new < old);
    let (previous, verdict) = match &holder_scores {
        None => (
            serde_json::Value::Null,
            Err((
                format!("the current model `{}` has no grades on this sweep's validation examples", holder.model),
                format!(
                    "evaluate it first (`ftsweep eval --model {} --sweep {}`), or pass --force",
                    holder.model, sweep.name
                ),
            )),
        ),
        Some(old) => weigh(subject, holder, old, old_mean, cheaper)?,
    };
    let mut forced = false;
    if let Err((reason, hint)) = verdict {
        if !args.force {
            let old = old_mean.map_or(String::new(), |m| format!(" ({} {m:.3})", board.metric));
            let new = crate::stats::mean(subject.scores);
            bail!(
                "refusing to move `{}` from `{}`{old} to `{}` ({new:.3}): {reason}\n  hint: {hint}",
                args.alias,
                holder.model,
                subject.model
            );
        }
        forced = true;
        errln!("warning: moving `{}` anyway (--force): {reason}", args.alias)?;
    }
    Ok((previous, forced))
}

/// The holder's scores on the same examples, graded the same way; `None` when it has no
/// evaluation on the sweep's validation file, or one on other examples.
fn holder_scores(
    store: &SharedStore,
    sweep: &SweepRecord,
    subject: &Subject<'_>,
    holder: &AliasRecord,
) -> Result<Option<Vec<f64>>> {
    let (board, examples) = (subject.board, subject.examples);
    let s = store.lock();
    Ok(match s.latest_evaluation(&holder.model, &sweep.validation_sha256)? {
        None => None,
        Some(e) => {
            let held = s.evaluation_examples(e.id)?;
            let aligned = held.len() == examples.len()
                && held.iter().zip(examples).all(|(h, x)| h.conversation_sha256 == x.conversation_sha256);
            let cache = crate::eval::runner::grade_cache(&s, &board.setup.evaluation, &board.setup.dir)?;
            let graded = scores::grade(&board.setup.evaluation, &held, &cache);
            graded.get(&board.metric).filter(|_| aligned).map(<[f64]>::to_vec)
        }
    })
}

/// Weighs the run's scores against the holder's `old` ones: better by the paired test, or
/// cheaper and within the margin. Returns the holder's part of the provenance and the verdict.
fn weigh(
    subject: &Subject<'_>,
    holder: &AliasRecord,
    old: &[f64],
    old_mean: Option<f64>,
    cheaper: bool,
) -> Result<(serde_json::Value, Verdict)> {
    let (model, new_scores) = (subject.model, subject.scores);
    let evaluation = &subject.board.setup.evaluation;
    let (alpha, margin) = (evaluation.alpha, evaluation.margin);
    let test = paired_test(new_scores, old, alpha);
    let shortfall = crate::stats::shortfall_bound(old, new_scores, alpha, crate::rank::SEED).ok();
    let confidence = crate::stats::confidence_percent(alpha);
    // A cheaper model shown to be within the margin of the holder.
    let shown = shortfall.filter(|b| cheaper && b.within(margin));
    let previous = json!({
        "model": holder.model,
        "run_id": holder.run_id,
        "score": old_mean,
        "test": test.as_ref().map(|t| t.test.clone()),
        "p_value": test.as_ref().map(|t| t.p_value),
        "shortfall_upper": shortfall.map(|b| b.upper),
        "cheaper_within_margin": shown.is_some(),
    });
    // Why a cheaper model does not pass the margin, when it is cheaper.
    let margin_text = match shortfall.filter(|_| cheaper) {
        Some(b) => format!(
            "; it is cheaper, but not shown to be within the margin {margin} of it: it may be up to \
             {:.3} below it ({confidence}% one-sided bound)",
            b.upper
        ),
        None => String::new(),
    };
    let hint = || "--force moves it anyway".to_string();
    let verdict = match (test, shown) {
        (Some(t), _) if t.significant && t.mean_diff > 0.0 => Ok(()),
        (_, Some(b)) => {
            errln!(
                "`{model}` is cheaper than `{}` and shown to be within the margin {margin} of it on the \
                 same {} examples: at most {:.3} below it ({confidence}% one-sided bound)",
                holder.model,
                b.n,
                b.upper
            )?;
            Ok(())
        }
        (Some(t), None) if t.mean_diff <= 0.0 => Err((
            format!(
                "it is not better on the same {} examples ({} p = {:.4}){margin_text}",
                new_scores.len(),
                t.test.replace('_', " "),
                t.p_value
            ),
            hint(),
        )),
        (Some(t), None) => Err((
            format!(
                "it is not significantly better on the same {} examples ({} p = {:.4}, alpha = \
                 {alpha}){margin_text}",
                new_scores.len(),
                t.test.replace('_', " "),
                t.p_value
            ),
            hint(),
        )),
        (None, None) => Err((format!("it scores exactly as the current model on every example{margin_text}"), hint())),
    };
    Ok((previous, verdict))
}

/// The alias's provenance: the run, its sweep and data, the graders, its scores, the holder it
/// replaces and whether it was forced.
fn provenance(
    args: &Args,
    sweep: &SweepRecord,
    subject: &Subject<'_>,
    row: &LeaderboardRow,
    previous: serde_json::Value,
    forced: bool,
    now: f64,
) -> serde_json::Value {
    let board = subject.board;
    let evaluation = &board.setup.evaluation;
    json!({
        "alias": args.alias,
        "sweep": sweep.name,
        "run_id": row.run_id,
        "epoch": row.epoch,
        "model": subject.model,
        "provider": sweep.provider,
        "base_model": sweep.base_model,
        "hyperparameters": row.hyperparameters_json(),
        "training_file": sweep.training_file,
        "training_sha256": sweep.training_sha256,
        "validation_file": sweep.validation_file,
        "validation_sha256": sweep.validation_sha256,
        "metric": board.metric,
        "graders": evaluation.graders.iter().map(|g| g.describe()).collect::<Vec<_>>(),
        "combined": evaluation.combined.as_ref().map(|w| w.parts.clone()),
        "alpha": evaluation.alpha,
        "margin": evaluation.margin,
        "score": row.score,
        "ci_low": row.ci_low,
        "ci_high": row.ci_high,
        "scores": row.scores,
        "n_examples": subject.scores.len(),
        "trained_tokens": row.trained_tokens,
        "previous": previous,
        "forced": forced,
        "promoted_at": rfc3339(now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400.0), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_790_000_000.5), "2026-09-21T14:13:20Z");
        assert_eq!(rfc3339(1_790_000_000.999_9), "2026-09-21T14:13:20Z", "a fraction is dropped, not rounded");
        assert_eq!(rfc3339(1_709_251_199.0), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339(1_709_251_200.0), "2024-03-01T00:00:00Z");
        assert_eq!(rfc3339(4_107_542_399.0), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339(4_107_542_400.0), "2100-03-01T00:00:00Z", "2100 is not a leap year");
        assert_eq!(rfc3339(253_402_128_000.0), "9999-12-30T00:00:00Z");
        assert_eq!(rfc3339(253_402_300_800.0), rfc3339(f64::INFINITY), "past the range: its last second");
        assert_eq!(rfc3339(f64::INFINITY), "9999-12-30T22:00:00Z", "never a year of five digits");
        assert_eq!(rfc3339(-1.5), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(f64::NAN), "1970-01-01T00:00:00Z");
    }
}
