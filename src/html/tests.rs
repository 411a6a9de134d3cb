//! The page's unit tests: escaping, the Pareto front, thinning, no external reference, each plot drawn.

use std::collections::BTreeMap;

use super::plots::{pareto_front, thin};
use super::*;
use crate::report::SeedGroup;
use crate::run::RunConfig;

/// A row with nothing set.
fn blank() -> LeaderboardRow {
    LeaderboardRow {
        rank: None,
        run_id: None,
        kind: String::new(),
        is_baseline: false,
        epoch: None,
        status: String::new(),
        n_epochs: None,
        hyperparameters: BTreeMap::new(),
        seed: None,
        config: None,
        model: None,
        model_dir: None,
        metric: String::new(),
        score: None,
        ci_low: None,
        ci_high: None,
        is_leader: false,
        tied_with_best: false,
        is_pick: false,
        shortfall_upper: None,
        within_margin: false,
        test: None,
        p_value: None,
        diff_from_leader: None,
        scores: BTreeMap::new(),
        valid_loss: None,
        valid_accuracy: None,
        train_loss: None,
        gap: None,
        overfit: false,
        trained_tokens: None,
        cost_usd: None,
        train_seconds: None,
        eval_seconds: None,
        n_eval: None,
        error: None,
        note: None,
        origin: None,
        source_run: None,
        rung: None,
        role: None,
        stopped_early: None,
        model_epochs: None,
        job_tokens: None,
        seed_group: None,
    }
}

fn run_row(rank: usize, id: &str, epochs: u32, lr: f64, score: f64, tokens: i64) -> LeaderboardRow {
    let mut params = BTreeMap::new();
    params.insert("learning_rate_multiplier".to_string(), crate::run::Value::Float(lr));
    let config = RunConfig { n_epochs: Some(epochs), seed: 42, params };
    LeaderboardRow {
        rank: Some(rank),
        run_id: Some(id.into()),
        kind: "run".into(),
        status: "done".into(),
        n_epochs: Some(Some(epochs)),
        seed: Some(42),
        config: Some(config),
        metric: "exact_match".into(),
        score: Some(score),
        ci_low: Some(score - 0.05),
        ci_high: Some(score + 0.05),
        is_leader: rank == 1,
        trained_tokens: Some(tokens),
        job_tokens: Some(tokens),
        ..blank()
    }
}

fn page(rows: Vec<LeaderboardRow>) -> Page {
    let mut curves = BTreeMap::new();
    for r in &rows {
        let id = r.run_id.clone().unwrap_or_default();
        let train = (0..300).map(|s| (s, 2.0 / (1.0 + s as f64 / 50.0))).collect();
        let valid = vec![(100, 1.5), (200, 1.2), (299, 1.1)];
        curves.insert(id, Curve { train, valid, checkpoints: vec![(100, 1, Some(1.4), Some(1.5))] });
    }
    Page {
        sweep: "s".into(),
        metric: "exact_match".into(),
        others: vec!["contains".into()],
        pick: Some(Pick { index: 0, reason: "the leader".into(), note: None }),
        legend: "legend".into(),
        decoding: "decoding: local".into(),
        curves,
        disagreements: None,
        sweep_path: "sweeps/s.toml".into(),
        sweep_file: "name = \"s\"\n".into(),
        files: vec![DataFile { role: "training file".into(), path: "t.jsonl".into(), sha256: "ab".repeat(32) }],
        version: "0.1.0".into(),
        generated: "2026-12-01T00:00:00Z".into(),
        rows,
    }
}

fn three() -> Vec<LeaderboardRow> {
    vec![run_row(1, "r-a", 3, 1.0, 0.8, 300), run_row(2, "r-b", 1, 0.1, 0.7, 100), run_row(3, "r-c", 8, 10.0, 0.6, 800)]
}

#[test]
fn escape_turns_markup_into_text() {
    assert_eq!(
        escape("<script>alert('x') & \"y\"</script>"),
        "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
    );
}

#[test]
fn a_reply_with_markup_is_shown_as_text() {
    let mut p = page(three());
    p.disagreements = Some(Disagreements {
        other: 1,
        n_examples: 10,
        examples: vec![Example {
            line: 3,
            prompt: "<b>hi</b>".into(),
            reference: "ok".into(),
            reply_pick: "<script>alert(1)</script>".into(),
            reply_other: "<img src=x onerror=alert(2)>".into(),
            score_pick: 1.0,
            score_other: 0.0,
        }],
    });
    p.sweep_file = "</pre><script>bad()</script>".into();
    let html = render(&p).unwrap();
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "the reply is escaped");
    assert!(!html.contains("<script>alert"), "no reply becomes a script");
    assert!(!html.contains("<img"), "no reply becomes an element");
    assert!(!html.contains("<script>bad"), "the sweep file is escaped");
    assert_eq!(html.matches("<script>").count(), 1, "the page's own script only");
}

#[test]
fn the_page_references_nothing_outside_itself() {
    let mut rows = three();
    rows[1].cost_usd = Some(1.5);
    let html = render(&page(rows)).unwrap();
    for bad in ["http://", "https://", "//cdn", "src=", "href=", "@import", "url("] {
        assert!(!html.contains(bad), "the page contains `{bad}`");
    }
}

#[test]
fn every_plot_is_drawn_and_the_pick_is_marked() {
    let html = render(&page(three())).unwrap();
    for plot in ["training loss", "validation loss", "parallel coordinates", "metric vs tokens"] {
        assert!(html.contains(&format!("data-plot=\"{plot}\"")), "no {plot} plot");
    }
    // A layer per run for each of the two loss plots.
    assert_eq!(html.matches("class=\"layer l").count(), 6);
    assert!(html.contains("<tr class=\"pick\">"));
    assert!(html.contains("best picks r-a"));
    // The top runs' curves show at first; picking is CSS, not script.
    assert!(html.contains("#pick0:checked~div .l0{display:block}"));
}

#[test]
fn rungs_and_seed_groups_show_only_when_the_sweep_has_them() {
    let html = render(&page(three())).unwrap();
    assert!(!html.contains("Successive halving") && !html.contains("Seed replicates"));
    let mut rows = three();
    rows[0].rung = Some(0);
    rows[1].rung = Some(1);
    rows[1].source_run = Some("r-a".into());
    let g = SeedGroup { seeds: vec![1, 2], mean: 0.75, sd: 0.07, min: 0.7, max: 0.8 };
    rows[0].seed_group = Some(g.clone());
    rows[2].seed_group = Some(g);
    let html = render(&page(rows)).unwrap();
    assert!(html.contains("data-plot=\"rungs\"") && html.contains("data-plot=\"seeds\""));
}

#[test]
fn pareto_front_keeps_the_points_nothing_beats_on_cost_and_score() {
    let pts = [(100.0, 0.7), (300.0, 0.8), (800.0, 0.6), (300.0, 0.75), (50.0, 0.5), (f64::NAN, 0.9)];
    assert_eq!(pareto_front(&pts), vec![4, 0, 1]);
    assert!(pareto_front(&[]).is_empty());
}

#[test]
fn thinning_keeps_the_ends_and_at_most_the_limit() {
    let pts: Vec<u32> = (0..1000).collect();
    let t = thin(&pts, 160);
    assert!(t.len() <= 161, "{}", t.len());
    assert_eq!((t[0], *t.last().unwrap()), (0, 999));
    assert_eq!(thin(&pts[..5], 160), pts[..5].to_vec());
}

#[test]
fn a_page_without_scores_still_renders() {
    let mut rows = three();
    for r in &mut rows {
        r.score = None;
    }
    let mut p = page(rows);
    p.pick = None;
    p.curves.clear();
    let html = render(&p).unwrap();
    assert!(html.contains("no run has finished yet"));
}

#[test]
fn the_table_has_a_column_for_each_other_score() {
    let mut rows = three();
    rows[0].scores.insert("contains".into(), Some(0.625));
    let html = render(&page(rows)).unwrap();
    let head = &html[html.find("id=\"ranked\"").unwrap()..html.find("</thead>").unwrap()];
    assert!(head.contains(">contains</th>"), "a column for the other grader: {head}");
    assert!(html.contains("data-v=\"0.625\">0.625</td>"), "the row's score under it");
}
