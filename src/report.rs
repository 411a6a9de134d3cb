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
    pub estimated_trained_tokens: u64,
}

/// Builds plan rows; `auto_epochs` is what `"auto"` epochs are estimated
/// to be, `status_of` gives a run's recorded state.
pub fn plan_rows(
    runs: &[PlannedRun],
    epoch_tokens: u64,
    auto_epochs: u32,
    status_of: impl Fn(&str) -> Option<String>,
) -> Vec<PlanRow> {
    runs.iter()
        .map(|r| PlanRow {
            run_id: r.run_id.clone(),
            n_epochs: r.config.n_epochs,
            learning_rate_multiplier: r.config.learning_rate_multiplier,
            batch_size: r.config.batch_size,
            seed: r.config.seed,
            status: status_of(&r.run_id).unwrap_or_else(|| "new".into()),
            estimated_trained_tokens: epoch_tokens * u64::from(r.config.n_epochs.unwrap_or(auto_epochs)),
        })
        .collect()
}

/// The plan table.
pub fn plan_table(rows: &[PlanRow]) -> String {
    let mut t = new_table(&["#", "run", "n_epochs", "lr_mult", "batch", "seed", "status", "est_trained_tokens"]);
    for (i, r) in rows.iter().enumerate() {
        t.add_row(vec![
            (i + 1).to_string(),
            r.run_id.clone(),
            show(r.n_epochs),
            show(r.learning_rate_multiplier),
            show(r.batch_size),
            r.seed.to_string(),
            r.status.clone(),
            r.estimated_trained_tokens.to_string(),
        ]);
    }
    right(&mut t, 2, 6);
    right(&mut t, 7, 8);
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(rank: Option<usize>, valid_loss: Option<f64>) -> LeaderboardRow {
        LeaderboardRow {
            rank,
            run_id: "r-0011223344".into(),
            status: "done".into(),
            n_epochs: Some(3),
            learning_rate_multiplier: Some(0.5),
            batch_size: Some(8),
            seed: 42,
            model: Some("m".into()),
            metric: "exact_match".into(),
            score: Some(0.8766),
            valid_loss,
            valid_accuracy: None,
            train_loss: Some(0.1),
            trained_tokens: Some(1234),
            train_seconds: Some(0.25),
            eval_seconds: Some(0.05),
            n_eval: Some(10),
            error: None,
        }
    }

    #[test]
    fn table_shows_scores_losses_and_missing_values() {
        let t = leaderboard_table(&[row(Some(1), Some(0.4321)), row(None, None)], "exact_match");
        assert!(t.contains("exact_match"));
        assert!(t.contains("0.877"), "{t}");
        assert!(t.contains("0.432"), "{t}");
        assert!(t.contains("0.30"), "time is train + eval: {t}");
        assert_eq!(t.lines().filter(|l| l.contains("r-0011223344")).count(), 2);
    }

    #[test]
    fn huge_losses_use_scientific_notation() {
        assert_eq!(loss(Some(123456.0)), "1.235e5");
        assert_eq!(loss(Some(f64::INFINITY)), "inf");
        assert_eq!(loss(None), "-");
    }
}
