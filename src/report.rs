//! Rendering: tables (comfy-table) and JSON rows, returned as strings; no I/O.

use comfy_table::{Cell, CellAlignment, ContentArrangement, Table, presets};
use serde::Serialize;

use crate::plan::{PlannedRun, show};
use crate::rank::Ranked;

/// Serializes a hyperparameter as its number, or `"auto"`.
fn auto_or<T: Serialize, S: serde::Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(x) => x.serialize(s),
        None => s.serialize_str("auto"),
    }
}

/// One leaderboard row, as `--json` prints it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LeaderboardRow {
    pub rank: Option<usize>,
    pub run_id: String,
    pub status: String,
    #[serde(serialize_with = "auto_or")]
    pub n_epochs: Option<u32>,
    #[serde(serialize_with = "auto_or")]
    pub learning_rate_multiplier: Option<f64>,
    #[serde(serialize_with = "auto_or")]
    pub batch_size: Option<u32>,
    pub seed: u64,
    pub model: Option<String>,
    pub metric: String,
    pub score: Option<f64>,
    pub valid_loss: Option<f64>,
    pub valid_accuracy: Option<f64>,
    pub train_loss: Option<f64>,
    pub trained_tokens: Option<i64>,
    pub train_seconds: Option<f64>,
    pub eval_seconds: Option<f64>,
    pub n_eval: Option<i64>,
    pub error: Option<String>,
}

/// Builds the leaderboard rows from ranked runs.
pub fn leaderboard_rows(ranked: &[Ranked<'_>], metric: &str) -> Vec<LeaderboardRow> {
    ranked
        .iter()
        .map(|r| {
            let run = r.run;
            LeaderboardRow {
                rank: r.rank,
                run_id: run.run_id.clone(),
                status: run.state.as_str().to_string(),
                n_epochs: run.config.n_epochs,
                learning_rate_multiplier: run.config.learning_rate_multiplier,
                batch_size: run.config.batch_size,
                seed: run.config.seed,
                model: run.model.clone(),
                metric: metric.to_string(),
                score: run.score,
                valid_loss: run.valid_loss.filter(|l| l.is_finite()),
                valid_accuracy: run.valid_accuracy,
                train_loss: run.train_loss.filter(|l| l.is_finite()),
                trained_tokens: run.trained_tokens,
                train_seconds: run.train_seconds,
                eval_seconds: run.eval_seconds,
                n_eval: run.n_eval,
                error: run.error.clone(),
            }
        })
        .collect()
}

fn opt(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

fn loss(x: Option<f64>) -> String {
    match x {
        Some(v) if !v.is_finite() => "inf".into(),
        Some(v) if v >= 1000.0 => format!("{v:.3e}"),
        other => opt(other, 3),
    }
}

fn new_table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(Cell::new));
    t
}

fn right(t: &mut Table, from: usize, to: usize) {
    for i in from..to {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// The ranked table.
pub fn leaderboard_table(rows: &[LeaderboardRow], metric: &str) -> String {
    let mut t = new_table(&[
        "rank",
        "run",
        "n_epochs",
        "lr_mult",
        "batch",
        "seed",
        "status",
        metric,
        "valid_loss",
        "train_loss",
        "trained_tokens",
        "time_s",
        "note",
    ]);
    for r in rows {
        let time = match (r.train_seconds, r.eval_seconds) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        };
        let note = r.error.as_deref().map(|e| e.chars().take(60).collect::<String>()).unwrap_or_default();
        t.add_row(vec![
            r.rank.map_or_else(|| "-".into(), |x| x.to_string()),
            r.run_id.clone(),
            show(r.n_epochs),
            show(r.learning_rate_multiplier),
            show(r.batch_size),
            r.seed.to_string(),
            r.status.clone(),
            opt(r.score, 3),
            loss(r.valid_loss),
            loss(r.train_loss),
            r.trained_tokens.map_or_else(|| "-".into(), |x| x.to_string()),
            opt(time, 2),
            note,
        ]);
    }
    right(&mut t, 2, 6);
    right(&mut t, 7, 12);
    t.to_string()
}

/// One planned run, as `plan --json` prints it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlanRow {
    pub run_id: String,
    #[serde(serialize_with = "auto_or")]
    pub n_epochs: Option<u32>,
    #[serde(serialize_with = "auto_or")]
    pub learning_rate_multiplier: Option<f64>,
    #[serde(serialize_with = "auto_or")]
    pub batch_size: Option<u32>,
    pub seed: u64,
    /// The run's recorded state, or `new` when the database does not know it.
    pub status: String,
    /// Whether running the sweep would train it (it is not done).
    pub to_train: bool,
    pub epochs_estimated: bool,
    pub estimated_trained_tokens: u64,
    pub estimated_training_cost_usd: Option<f64>,
    pub estimated_eval_cost_usd: Option<f64>,
    pub estimated_cost_usd: Option<f64>,
}

/// Builds plan rows; `status_of` gives a run's recorded state.
pub fn plan_rows(
    runs: &[PlannedRun],
    data: &crate::pricing::DataFigures,
    price: Option<crate::pricing::Price>,
    status_of: impl Fn(&str) -> Option<String>,
) -> Vec<PlanRow> {
    runs.iter()
        .map(|r| {
            let e = crate::pricing::estimate(r.config.n_epochs, data, price);
            let status = status_of(&r.run_id).unwrap_or_else(|| "new".into());
            PlanRow {
                run_id: r.run_id.clone(),
                n_epochs: r.config.n_epochs,
                learning_rate_multiplier: r.config.learning_rate_multiplier,
                batch_size: r.config.batch_size,
                seed: r.config.seed,
                to_train: status != "done",
                status,
                epochs_estimated: e.epochs_estimated,
                estimated_trained_tokens: e.trained_tokens,
                estimated_training_cost_usd: e.training_usd,
                estimated_eval_cost_usd: e.eval_usd,
                estimated_cost_usd: e.total_usd(),
            }
        })
        .collect()
}

fn usd(x: Option<f64>) -> String {
    match x {
        None => "?".into(),
        Some(v) if v > 0.0 && v < 0.01 => format!("${v:.4}"),
        Some(v) => format!("${v:.2}"),
    }
}

/// The plan table.
pub fn plan_table(rows: &[PlanRow]) -> String {
    let mut t = new_table(&[
        "#",
        "run",
        "n_epochs",
        "lr_mult",
        "batch",
        "seed",
        "status",
        "est_trained_tokens",
        "est_training",
        "est_eval",
    ]);
    for (i, r) in rows.iter().enumerate() {
        let tokens = if r.epochs_estimated {
            format!("~{}", r.estimated_trained_tokens)
        } else {
            r.estimated_trained_tokens.to_string()
        };
        t.add_row(vec![
            (i + 1).to_string(),
            r.run_id.clone(),
            show(r.n_epochs),
            show(r.learning_rate_multiplier),
            show(r.batch_size),
            r.seed.to_string(),
            r.status.clone(),
            tokens,
            usd(r.estimated_training_cost_usd),
            usd(r.estimated_eval_cost_usd),
        ]);
    }
    right(&mut t, 2, 6);
    right(&mut t, 7, 10);
    t.to_string()
}

/// Formats an amount in USD for messages; `?` when unknown.
pub fn format_usd(x: Option<f64>) -> String {
    usd(x)
}

/// The summary table of `data check`: one row per file.
pub fn check_table(reports: &[crate::data::check::FileReport]) -> String {
    use crate::data::check::Severity;
    let mut t = new_table(&["file", "lines", "examples", "errors", "warnings", "billed_tokens", "over_limit"]);
    for r in reports {
        t.add_row(vec![
            r.path.display().to_string(),
            r.lines.to_string(),
            r.examples.to_string(),
            r.total(Severity::Error).to_string(),
            r.total(Severity::Warning).to_string(),
            r.billing_tokens.to_string(),
            r.over_limit.to_string(),
        ]);
    }
    right(&mut t, 1, 7);
    t.to_string()
}

/// Every kept problem of a report as `file:line: severity: message [code]`,
/// each kind followed by how many more of it were found but not listed.
pub fn problem_lines(report: &crate::data::check::FileReport) -> Vec<String> {
    let mut out = Vec::new();
    for (code, &count) in &report.counts {
        let kept: Vec<_> = report.problems.iter().filter(|p| p.code == *code).collect();
        out.extend(kept.iter().map(|p| report.describe(p)));
        if count > kept.len() {
            out.push(format!("{}: ... and {} more [{}]", report.path.display(), count - kept.len(), code));
        }
    }
    out
}

/// The text of `data stats`: a table of distributions, then the labels.
pub fn stats_text(r: &crate::data::check::FileReport, s: &crate::data::stats::DataStats) -> String {
    let mut out = format!(
        "{}: {} examples, {} distinct replies, {} billed tokens per epoch ({}, limit {} per example, {} over it); \
         \"auto\" epochs ≈ {}\n",
        r.path.display(),
        s.examples,
        s.distinct_replies,
        s.billing_tokens,
        r.encoding.name(),
        s.token_limit,
        s.over_limit,
        s.default_epochs
    );
    let mut t = new_table(&["per example", "min", "p5", "p10", "p50", "p90", "p95", "max", "mean"]);
    for (name, d) in [("messages", &s.messages), ("tokens", &s.total_tokens), ("assistant tokens", &s.assistant_tokens)]
    {
        if let Some(d) = d {
            t.add_row(vec![
                name.to_string(),
                d.min.to_string(),
                d.p5.to_string(),
                d.p10.to_string(),
                d.p50.to_string(),
                d.p90.to_string(),
                d.p95.to_string(),
                d.max.to_string(),
                format!("{:.1}", d.mean),
            ]);
        }
    }
    right(&mut t, 1, 9);
    out.push_str(&t.to_string());
    out.push_str("\npercentiles are nearest-rank: p90 is the value at rank ⌈0.9·n⌉ of the sorted values\n");
    if let Some(labels) = &s.labels {
        let mut t = new_table(&["label", "examples", "share"]);
        for l in labels {
            t.add_row(vec![l.label.clone(), l.count.to_string(), format!("{:.1}%", l.share * 100.0)]);
        }
        right(&mut t, 1, 3);
        out.push_str(&format!("\nthe replies form a label set of {}:\n{t}", labels.len()));
    }
    out
}
