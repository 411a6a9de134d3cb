//! `ftsweep compare RUN_A RUN_B`: two rows of a sweep side by side
//! (hyperparameters, every score, losses, tokens, cost), the paired test on
//! the same examples, and the examples where they disagree. Reads the
//! database only.

use anyhow::Result;
use serde::Serialize;

use super::leaderboard::{Board, sweep_for};
use super::out::outln;
use super::{Cli, ExitStatus, UsageError};
use crate::data::Reply;
use crate::eval::judge::render_prompt;
use crate::report::LeaderboardRow;
use crate::run::EvalKind;
use crate::stats;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A run id (a unique prefix will do), RUN@EPOCH for a checkpoint, `baseline`, or a model id.
    pub a: String,
    /// The other row, named the same way.
    pub b: String,
    /// The sweep (default: the latest sweep that plans RUN_A or RUN_B).
    #[arg(long)]
    pub sweep: Option<String>,
    /// Compare by this grader (or `combined`) instead of the sweep's metric.
    #[arg(long)]
    pub metric: Option<String>,
    /// How many disagreeing examples to print (`--json` lists them all).
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The paired test of A against B.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PairedTest {
    /// `mcnemar_exact` or `paired_bootstrap`.
    pub test: String,
    pub p_value: f64,
    pub significant: bool,
    /// Mean of A minus mean of B.
    pub mean_diff: f64,
    /// McNemar: examples only A passes, and only B passes.
    pub only_a: Option<u64>,
    pub only_b: Option<u64>,
    /// The bootstrap's 95 % interval of the difference.
    pub diff_ci: Option<(f64, f64)>,
}

/// One example where the two disagree.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Disagreement {
    pub line: usize,
    pub prompt: String,
    pub reference: String,
    pub reply_a: String,
    pub reply_b: String,
    pub score_a: f64,
    pub score_b: f64,
}

#[derive(Debug, Serialize)]
struct Comparison<'a> {
    sweep: &'a str,
    metric: &'a str,
    a: &'a LeaderboardRow,
    b: &'a LeaderboardRow,
    paired_test: Option<PairedTest>,
    n_examples: usize,
    disagreements: Vec<Disagreement>,
}

pub fn run(cli: &Cli, args: &Args) -> Result<ExitStatus> {
    let (store, sweep) = sweep_for(&cli.db, args.sweep.as_deref(), &[&args.a, &args.b])?;
    let board = Board::load(&store, &sweep, args.metric.as_deref())?;
    let (ia, ib) = (find(&board, &args.a)?, find(&board, &args.b)?);
    let rows = board.rows();
    let (ra, rb) = (&rows[ia], &rows[ib]);
    let (la, lb) = (&board.loaded[board.standings[ia].index], &board.loaded[board.standings[ib].index]);
    let (sa, sb) = (la.candidate.grades.get(&board.metric), lb.candidate.grades.get(&board.metric));
    let (Some(sa), Some(sb)) = (sa, sb) else {
        return Err(UsageError {
            message: format!("`{}` and `{}` are not both graded by `{}`", args.a, args.b, board.metric),
            hint: "compare finished runs; `ftsweep run` grades what is missing".into(),
        }
        .into());
    };
    if sa.len() != sb.len() {
        return Err(UsageError {
            message: format!("the two were graded on different numbers of examples ({} and {})", sa.len(), sb.len()),
            hint: "compare models evaluated on the sweep's validation data".into(),
        }
        .into());
    }
    let test = paired_test(sa, sb, board.setup.evaluation.alpha);
    let disagreements = disagreements(&board, ia, ib, sa, sb)?;
    if args.json {
        let c = Comparison {
            sweep: &sweep.name,
            metric: &board.metric,
            a: ra,
            b: rb,
            paired_test: test.clone(),
            n_examples: sa.len(),
            disagreements,
        };
        outln!("{}", serde_json::to_string_pretty(&c)?)?;
        return Ok(ExitStatus::Success);
    }
    outln!("{}", side_by_side(&board, ra, rb))?;
    match &test {
        Some(t) => outln!("{}", describe_test(t, &board.metric, sa.len(), board.setup.evaluation.alpha)),
        None => outln!("no paired test: the two score the same on every example"),
    }?;
    outln!(
        "\n{} of {} examples differ on `{}`{}",
        disagreements.len(),
        sa.len(),
        board.metric,
        if disagreements.len() > args.limit {
            format!(" (the first {} shown; --limit N for more)", args.limit)
        } else {
            String::new()
        }
    )?;
    let short = |s: &str| {
        let one_line = s.replace('\n', " ⏎ ");
        if one_line.chars().count() > 100 {
            format!("{}…", one_line.chars().take(99).collect::<String>())
        } else {
            one_line
        }
    };
    for d in disagreements.iter().take(args.limit) {
        outln!(
            "\nline {}: {}\n  reference: {}\n  A ({:.2}): {}\n  B ({:.2}): {}",
            d.line,
            short(&d.prompt),
            short(&d.reference),
            d.score_a,
            short(&d.reply_a),
            d.score_b,
            short(&d.reply_b)
        )?;
    }
    Ok(ExitStatus::Success)
}

/// The examples where rows `ia` and `ib` of `board` (indexes into `board.rows()`) score
/// differently, `sa` and `sb` being their grades by the board's metric on the same examples.
pub fn disagreements(board: &Board, ia: usize, ib: usize, sa: &[f64], sb: &[f64]) -> Result<Vec<Disagreement>> {
    let (la, lb) = (board.examples(ia)?, board.examples(ib)?);
    Ok((0..sa.len().min(sb.len()))
        .filter(|&i| sa[i] != sb[i])
        .map(|i| {
            let (xa, xb) = (&la[i], &lb[i]);
            Disagreement {
                line: xa.line,
                prompt: xa
                    .prompt
                    .iter()
                    .rev()
                    .find(|m| m.role == "user")
                    .map_or_else(|| render_prompt(&xa.prompt), |m| m.content.clone()),
                // Tool calls as `name({arguments})`, not their stored encoding.
                reference: Reply::decode(&xa.reference).display(),
                reply_a: Reply::decode(&xa.prediction).display(),
                reply_b: Reply::decode(&xb.prediction).display(),
                score_a: sa[i],
                score_b: sb[i],
            }
        })
        .collect())
}

/// The row `text` names (see `Board::find`). `RUN@EPOCH` at the run's last epoch is the run
/// itself (its model is that epoch's checkpoint); at an earlier epoch that was not evaluated, the
/// error says what `RUN@EPOCH` needs.
fn find(board: &Board, text: &str) -> Result<usize> {
    let found = board.find(text);
    let Some((run, epoch)) = text.trim().split_once('@') else { return found };
    let (Err(_), Ok(i), Ok(epoch)) = (&found, board.find(run), epoch.parse::<u32>()) else { return found };
    let candidate = &board.candidates[board.standings[i].index];
    let Some(record) = candidate.run.as_ref().filter(|_| candidate.role == EvalKind::Run) else { return found };
    let parent = record.origin.parent_epochs().unwrap_or(0);
    let last = record.model_epochs.or(record.config.n_epochs).map(|e| e.saturating_sub(parent));
    if last == Some(epoch) {
        return Ok(i);
    }
    let id = &record.run_id;
    let evaluated: Vec<String> = (board.candidates.iter())
        .filter(|c| c.role == EvalKind::Checkpoint && c.run.as_ref().is_some_and(|r| r.run_id == *id))
        .filter_map(|c| c.epoch.map(|e| e.to_string()))
        .collect();
    let sweep = &board.setup.sweep.name;
    let last = last.map_or(String::new(), |e| format!(" (its last epoch, {e}, is the run itself: `{id}`)"));
    Err(if board.setup.evaluation.checkpoints {
        UsageError {
            message: format!("run {id} of sweep `{sweep}` has no evaluated checkpoint at epoch {epoch}"),
            hint: if evaluated.is_empty() {
                format!("none of its checkpoints is evaluated yet: `ftsweep run` evaluates them{last}")
            } else {
                format!(
                    "its evaluated checkpoints are at epochs {} (a job keeps its last three epochs){last}",
                    evaluated.join(", ")
                )
            },
        }
    } else {
        UsageError {
            message: format!(
                "`{text}` needs the checkpoints of run {id} evaluated, and sweep `{sweep}` evaluates none: its \
                 `[evaluation] checkpoints` is false"
            ),
            hint: format!(
                "set `checkpoints = true` under [evaluation] in the sweep file before its runs train (a local job \
                 keeps the weights of its last three epochs only then), run the sweep, and compare again{last}"
            ),
        }
    }
    .into())
}

/// McNemar's exact test when both only pass or fail, else the paired
/// bootstrap; `None` when the scores are the same on every example.
pub fn paired_test(a: &[f64], b: &[f64], alpha: f64) -> Option<PairedTest> {
    let mean_diff = stats::mean(a) - stats::mean(b);
    if a == b {
        return None;
    }
    if stats::is_pass_fail(a) && stats::is_pass_fail(b) {
        let pass = |xs: &[f64]| xs.iter().map(|&s| s == 1.0).collect::<Vec<_>>();
        let m = stats::mcnemar_exact(&pass(a), &pass(b));
        Some(PairedTest {
            test: "mcnemar_exact".into(),
            p_value: m.p_value,
            significant: m.p_value < alpha,
            mean_diff,
            only_a: Some(m.b),
            only_b: Some(m.c),
            diff_ci: None,
        })
    } else {
        let r = stats::paired_bootstrap(a, b, stats::COMPARE_RESAMPLES, crate::rank::SEED);
        Some(PairedTest {
            test: "paired_bootstrap".into(),
            p_value: r.p_value,
            significant: r.p_value < alpha,
            mean_diff: r.mean_diff,
            only_a: None,
            only_b: None,
            diff_ci: Some(r.interval),
        })
    }
}

fn p4(p: f64) -> String {
    if p < 0.0001 { "p < 0.0001".into() } else { format!("p = {p:.4}") }
}

fn describe_test(t: &PairedTest, metric: &str, n: usize, alpha: f64) -> String {
    let verdict = if t.significant {
        format!("significant at alpha = {alpha}: {} is better", if t.mean_diff > 0.0 { "A" } else { "B" })
    } else {
        format!(
            "not significant at alpha = {alpha}: no difference was found, which does not show that they are as good \
             as each other"
        )
    };
    match (t.only_a, t.only_b, t.diff_ci) {
        (Some(oa), Some(ob), _) => format!(
            "\n{metric}: A - B = {:+.3} on {n} paired examples; exact McNemar test: A alone right on {oa}, B alone on \
             {ob}, {}; {verdict}",
            t.mean_diff,
            p4(t.p_value)
        ),
        (_, _, Some((lo, hi))) => format!(
            "\n{metric}: A - B = {:+.3}, 95% CI [{lo:+.3}, {hi:+.3}] on {n} paired examples; paired bootstrap {}; \
             {verdict}",
            t.mean_diff,
            p4(t.p_value)
        ),
        _ => String::new(),
    }
}

fn side_by_side(board: &Board, a: &LeaderboardRow, b: &LeaderboardRow) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED).set_header(vec!["", "A", "B"]);
    let label = |r: &LeaderboardRow| match (&r.run_id, r.epoch) {
        (Some(id), Some(e)) => format!("{id}@{e}"),
        (Some(id), None) => id.clone(),
        (None, _) => r.kind.clone(),
    };
    let num = |x: Option<f64>, d: usize| x.map_or("-".into(), |v| format!("{v:.d$}"));
    let ci = |r: &LeaderboardRow| match (r.ci_low, r.ci_high) {
        (Some(lo), Some(hi)) => format!("[{lo:.3}, {hi:.3}]"),
        _ => "-".into(),
    };
    let mut rows: Vec<(String, String, String)> = vec![
        ("run".into(), label(a), label(b)),
        ("model".into(), a.model.clone().unwrap_or_default(), b.model.clone().unwrap_or_default()),
        ("rank".into(), a.rank.map_or("-".into(), |r| r.to_string()), b.rank.map_or("-".into(), |r| r.to_string())),
    ];
    rows.extend(hyperparameter_rows(a, b));
    rows.extend([
        (format!("{} (ranked by)", board.metric), num(a.score, 3), num(b.score, 3)),
        ("95% CI".into(), ci(a), ci(b)),
    ]);
    for name in board.others() {
        let get = |r: &LeaderboardRow| num(r.scores.get(&name).copied().flatten(), 3);
        rows.push((name.clone(), get(a), get(b)));
    }
    rows.extend([
        ("valid_loss".into(), num(a.valid_loss, 3), num(b.valid_loss, 3)),
        ("train_loss".into(), num(a.train_loss, 3), num(b.train_loss, 3)),
        (
            "trained_tokens".into(),
            a.trained_tokens.map_or("-".into(), |x| x.to_string()),
            b.trained_tokens.map_or("-".into(), |x| x.to_string()),
        ),
        ("cost".into(), crate::report::format_usd(a.cost_usd), crate::report::format_usd(b.cost_usd)),
    ]);
    for (k, x, y) in rows {
        t.add_row(vec![k, x, y]);
    }
    t.to_string()
}

/// One row per hyperparameter either side has, the epochs first and the
/// seed last; `-` where a side lacks it.
fn hyperparameter_rows(a: &LeaderboardRow, b: &LeaderboardRow) -> Vec<(String, String, String)> {
    let (ta, tb) = (a.hyperparameter_texts(), b.hyperparameter_texts());
    let mut names: Vec<&str> = Vec::new();
    for (n, _) in ta.iter().chain(&tb) {
        if !names.contains(&n.as_str()) {
            names.push(n);
        }
    }
    if let Some(i) = names.iter().position(|n| *n == crate::space::SEED) {
        let seed = names.remove(i);
        names.push(seed);
    }
    let get = |t: &[(String, String)], n: &str| t.iter().find(|(k, _)| k == n).map_or("-".into(), |(_, v)| v.clone());
    names.into_iter().map(|n| (n.to_string(), get(&ta, n), get(&tb, n))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_fail_scores_take_mcnemar_and_graded_scores_the_bootstrap() {
        let a = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0];
        let b = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0];
        let t = paired_test(&a, &b, 0.05).unwrap();
        assert_eq!((t.test.as_str(), t.only_a, t.only_b), ("mcnemar_exact", Some(6), Some(1)));
        assert!((t.p_value - 0.125).abs() < 1e-12 && !t.significant);
        let g = paired_test(&[0.5, 0.7, 0.9], &[0.1, 0.2, 0.3], 0.05).unwrap();
        assert_eq!(g.test, "paired_bootstrap");
        assert!((g.mean_diff - 0.5).abs() < 1e-12);
        assert!(paired_test(&a, &a, 0.05).is_none());
    }
}
