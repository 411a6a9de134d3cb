//! Ranking: orders a sweep's evaluated models by the primary metric, gives
//! each a 95 % interval, a paired test against the leader (marking those not
//! significantly different from it) and an upper bound on how far below the
//! leader it is (marking those shown to be within the margin), flags
//! overfitting, and picks the model to deploy. Pure: no I/O.
//!
//! The pick: a test that fails to find a difference is no evidence that two
//! runs are as good, so `best` trades quality for cost only on a shown bound:
//! a cheaper run is picked only when the one-sided `1 - alpha` upper bound on
//! its shortfall from the leader is below `[evaluation] margin`
//! ([`stats::shortfall_bound`]); otherwise the leader is.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::run::{EvalKind, RunRecord, RunState};
use crate::stats::{self, Comparison, Shortfall};

/// The seed of every bootstrap, so that a report is reproducible.
pub const SEED: u64 = 0x5EED_0006;

/// Resamples of the bootstrap interval of a graded (not pass/fail) metric.
pub const INTERVAL_RESAMPLES: u32 = 2000;

/// How much the last validation loss may exceed the lowest earlier one
/// before the run is flagged as overfitting.
pub const OVERFIT_RISE: f64 = 0.10;

/// Per score name (graders, then `combined`): the per-example scores in file
/// order, or `None` when some example has no grade yet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grades(pub BTreeMap<String, Option<Vec<f64>>>);

impl Grades {
    /// The per-example scores of one grader, if complete.
    pub fn get(&self, name: &str) -> Option<&[f64]> {
        self.0.get(name).and_then(|s| s.as_deref())
    }

    /// The mean of one grader's scores, if complete.
    pub fn mean(&self, name: &str) -> Option<f64> {
        self.get(name).map(crate::stats::mean)
    }
}

/// A model to rank, with everything known about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub role: EvalKind,
    /// The run (for a checkpoint, its run).
    pub run: Option<RunRecord>,
    /// A checkpoint's epoch.
    pub epoch: Option<u32>,
    pub model: Option<String>,
    pub grades: Grades,
    pub valid_loss: Option<f64>,
    pub train_loss: Option<f64>,
    /// The validation loss at each epoch up to this model.
    pub valid_curve: Vec<(u32, f64)>,
    pub trained_tokens: Option<i64>,
    /// Training plus evaluation, in USD, when prices are known.
    pub cost_usd: Option<f64>,
    /// USD per million input tokens plus per million output tokens.
    pub inference_price: Option<f64>,
    /// Examples evaluated.
    pub n_examples: usize,
}

impl Candidate {
    /// The run id, with `@epoch` for a checkpoint; the role otherwise.
    pub fn label(&self) -> String {
        match (&self.run, self.epoch, self.role) {
            (Some(r), Some(e), _) => format!("{}@{e}", r.run_id),
            (Some(r), None, _) => r.run_id.clone(),
            (None, _, role) => role.as_str().to_string(),
        }
    }

    fn finished(&self) -> bool {
        match self.role {
            EvalKind::Run | EvalKind::Checkpoint => self.run.as_ref().is_some_and(|r| r.state == RunState::Done),
            EvalKind::Baseline | EvalKind::Model => true,
        }
    }
}

/// What to rank by.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    /// The score name: a grader or `combined`.
    pub metric: &'a str,
    /// Whether it only scores 0 or 1 (Wilson interval, McNemar's test).
    pub pass_fail: bool,
    /// The significance level of the test against the leader, and `1 -` the
    /// confidence of the bound on the shortfall.
    pub alpha: f64,
    /// The largest shortfall from the leader that counts as as good.
    pub margin: f64,
}

/// Validation loss that rose after its lowest point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overfit {
    pub best_epoch: u32,
    pub best_loss: f64,
    pub final_loss: f64,
}

/// A candidate's place.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    /// Index into the candidates.
    pub index: usize,
    /// 1-based, for finished runs and checkpoints with complete scores.
    pub rank: Option<usize>,
    /// The mean of the metric.
    pub score: Option<f64>,
    /// Its 95 % interval.
    pub interval: Option<(f64, f64)>,
    /// The paired test against the leader (not for the leader itself).
    pub comparison: Option<Comparison>,
    pub is_leader: bool,
    /// The leader, and every row not significantly different from it (the
    /// test failed to find a difference: no evidence that it is as good).
    pub tied_with_best: bool,
    /// The upper bound on how far below the leader it is (not for the leader).
    pub shortfall: Option<Shortfall>,
    /// The leader, and every row whose shortfall bound is below the margin:
    /// shown to be as good within the margin.
    pub within_margin: bool,
    pub overfit: Option<Overfit>,
}

/// The flag for a validation curve whose last loss is more than
/// [`OVERFIT_RISE`] above the lowest earlier one.
pub fn overfitting(curve: &[(u32, f64)]) -> Option<Overfit> {
    let (&(_, final_loss), earlier) = curve.split_last()?;
    let &(best_epoch, best_loss) = earlier.iter().filter(|(_, l)| l.is_finite()).min_by(|a, b| a.1.total_cmp(&b.1))?;
    (final_loss.is_finite() && final_loss > best_loss * (1.0 + OVERFIT_RISE)).then_some(Overfit {
        best_epoch,
        best_loss,
        final_loss,
    })
}

/// The 95 % interval of a mean: Wilson for pass/fail scores, otherwise the
/// seeded percentile bootstrap.
pub fn interval(scores: &[f64], pass_fail: bool) -> (f64, f64) {
    if pass_fail {
        let passed = scores.iter().filter(|&&s| s == 1.0).count() as u64;
        stats::wilson_interval(passed, scores.len() as u64, stats::Z95)
    } else {
        stats::bootstrap_interval(scores, INTERVAL_RESAMPLES, 0.95, SEED)
    }
}

fn by_score(a: &Candidate, b: &Candidate, sa: f64, sb: f64) -> Ordering {
    let loss = |c: &Candidate| c.valid_loss.filter(|l| l.is_finite()).unwrap_or(f64::INFINITY);
    sb.total_cmp(&sa)
        .then_with(|| loss(a).total_cmp(&loss(b)))
        .then_with(|| a.trained_tokens.unwrap_or(i64::MAX).cmp(&b.trained_tokens.unwrap_or(i64::MAX)))
        .then_with(|| a.label().cmp(&b.label()))
}

fn scores_of<'c>(c: &'c Candidate, metric: &str) -> Option<&'c [f64]> {
    c.grades.get(metric).filter(|x| !x.is_empty())
}

/// Ranks the candidates. Rows come in this order: the ranked runs and
/// checkpoints (score, then validation loss, then trained tokens), the
/// baseline and other evaluated models by score, then the runs not ranked
/// (unfinished, failed, or with grades missing) in the order given.
pub fn standings(candidates: &[Candidate], s: &Settings<'_>) -> Vec<Standing> {
    let mut ranked: Vec<usize> =
        (0..candidates.len()).filter(|&i| candidates[i].role.is_ranked() && candidates[i].finished()).collect();
    ranked.retain(|&i| scores_of(&candidates[i], s.metric).is_some());
    // Each mean once, not once per comparison of the sort.
    let means: Vec<f64> =
        candidates.iter().map(|c| scores_of(c, s.metric).map_or(f64::NEG_INFINITY, stats::mean)).collect();
    let mean = |i: usize| means[i];
    ranked.sort_by(|&a, &b| by_score(&candidates[a], &candidates[b], mean(a), mean(b)));
    let mut references: Vec<usize> = (0..candidates.len())
        .filter(|&i| !candidates[i].role.is_ranked() && scores_of(&candidates[i], s.metric).is_some())
        .collect();
    references.sort_by(|&a, &b| by_score(&candidates[a], &candidates[b], mean(a), mean(b)));
    let mut placed = vec![false; candidates.len()];
    ranked.iter().chain(&references).for_each(|&i| placed[i] = true);
    let rest = (0..candidates.len()).filter(|&i| !placed[i]);
    let (unfinished, failed): (Vec<usize>, Vec<usize>) =
        rest.partition(|&i| candidates[i].run.as_ref().is_none_or(|r| r.state != RunState::Failed));

    let leader = ranked.first().copied();
    let leader_scores = leader.and_then(|i| scores_of(&candidates[i], s.metric));
    let mut out = Vec::with_capacity(candidates.len());
    for (position, &i) in ranked.iter().chain(&references).chain(&unfinished).chain(&failed).enumerate() {
        let c = &candidates[i];
        let scores = scores_of(c, s.metric);
        let is_leader = Some(i) == leader;
        let (comparison, shortfall) = match (scores, leader_scores) {
            (Some(x), Some(l)) if !is_leader => match stats::compare_and_bound(l, x, s.alpha, SEED) {
                Ok((c, b)) => (Some(c), Some(b)),
                Err(_) => (None, None),
            },
            _ => (None, None),
        };
        out.push(Standing {
            index: i,
            rank: (position < ranked.len()).then_some(position + 1),
            score: scores.map(stats::mean),
            interval: scores.map(|x| interval(x, s.pass_fail)),
            tied_with_best: is_leader || comparison.is_some_and(|c| c.tied),
            within_margin: is_leader || shortfall.is_some_and(|b| b.within(s.margin)),
            comparison,
            shortfall,
            is_leader,
            overfit: overfitting(&c.valid_curve),
        });
    }
    out
}

/// How the model to deploy is picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The cheapest of the runs shown to be within the margin of the leader
    /// (the leader included): fewest trained tokens, then lowest inference
    /// price, then rank. Not significantly different is not enough.
    Cheapest,
    /// The leader: the top score alone.
    Strict,
}

/// The pick, with what explains it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pick {
    /// Index into the standings.
    pub chosen: usize,
    /// Index into the standings.
    pub leader: usize,
    /// The ranked rows within the margin of the leader, the leader included (indices into the standings).
    pub within: Vec<usize>,
    /// The ranked rows cheaper than the leader (fewer trained tokens, or as
    /// many and a lower inference price), most promising first: the lowest
    /// shortfall bound first (indices into the standings).
    pub cheaper: Vec<usize>,
}

/// Fewest trained tokens, then lowest inference price.
fn by_cost(a: &Candidate, b: &Candidate) -> Ordering {
    a.trained_tokens
        .unwrap_or(i64::MAX)
        .cmp(&b.trained_tokens.unwrap_or(i64::MAX))
        .then_with(|| a.inference_price.unwrap_or(f64::INFINITY).total_cmp(&b.inference_price.unwrap_or(f64::INFINITY)))
}

/// Picks the model to deploy among the ranked rows; `None` when no run has
/// finished with complete grades.
pub fn pick(candidates: &[Candidate], standings: &[Standing], strategy: Strategy) -> Option<Pick> {
    let leader = standings.iter().position(|s| s.is_leader)?;
    let of = |i: usize| &candidates[standings[i].index];
    let ranked = (0..standings.len()).filter(|&i| standings[i].rank.is_some());
    let within: Vec<usize> = ranked.clone().filter(|&i| standings[i].within_margin).collect();
    let upper = |i: usize| standings[i].shortfall.map_or(f64::INFINITY, |b| b.upper);
    let mut cheaper: Vec<usize> = ranked.filter(|&i| by_cost(of(i), of(leader)) == Ordering::Less).collect();
    cheaper.sort_by(|&a, &b| upper(a).total_cmp(&upper(b)).then_with(|| standings[a].rank.cmp(&standings[b].rank)));
    let chosen = match strategy {
        Strategy::Strict => leader,
        Strategy::Cheapest => *within
            .iter()
            .min_by(|&&a, &&b| by_cost(of(a), of(b)).then_with(|| standings[a].rank.cmp(&standings[b].rank)))?,
    };
    Some(Pick { chosen, leader, within, cheaper })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn run(id: &str, state: RunState, tokens: i64) -> RunRecord {
        let planned = crate::run::PlannedRun {
            run_id: id.into(),
            config: crate::run::RunConfig::supervised(Some(1), Some(1), Some(1.0), 0),
            origin: crate::run::Origin::Job,
            rung: None,
        };
        RunRecord { model: Some(format!("m-{id}")), trained_tokens: Some(tokens), ..RunRecord::new(&planned, state) }
    }

    /// `passes` of `n` examples right, the passes first.
    fn pass_fail(passes: usize, n: usize) -> Vec<f64> {
        (0..n).map(|i| if i < passes { 1.0 } else { 0.0 }).collect()
    }

    fn candidate(id: &str, state: RunState, tokens: i64, scores: Option<Vec<f64>>) -> Candidate {
        Candidate {
            role: EvalKind::Run,
            run: Some(run(id, state, tokens)),
            epoch: None,
            model: Some(format!("m-{id}")),
            grades: Grades(BTreeMap::from([("exact_match".to_string(), scores)])),
            valid_loss: None,
            train_loss: None,
            valid_curve: vec![],
            trained_tokens: Some(tokens),
            cost_usd: None,
            inference_price: Some(1.0),
            n_examples: 100,
        }
    }

    const EXACT: Settings<'static> = Settings { metric: "exact_match", pass_fail: true, alpha: 0.05, margin: 0.02 };

    fn labels(c: &[Candidate], s: &[Standing]) -> Vec<(Option<usize>, String, bool)> {
        s.iter().map(|s| (s.rank, c[s.index].label(), s.tied_with_best)).collect()
    }

    #[test]
    fn ranks_by_score_marks_ties_and_puts_references_and_unfinished_runs_last() {
        let mut base = candidate("b", RunState::Done, 0, Some(pass_fail(5, 100)));
        (base.role, base.run) = (EvalKind::Baseline, None);
        let cs = vec![
            candidate("failed", RunState::Failed, 10, None),
            candidate("low", RunState::Done, 10, Some(pass_fail(40, 100))),
            candidate("top", RunState::Done, 300, Some(pass_fail(80, 100))),
            base,
            candidate("planned", RunState::Planned, 10, None),
            candidate("near", RunState::Done, 100, Some(pass_fail(76, 100))),
        ];
        let s = standings(&cs, &EXACT);
        assert_eq!(
            labels(&cs, &s),
            [
                (Some(1), "top".into(), true),
                (Some(2), "near".into(), true),
                (Some(3), "low".into(), false),
                (None, "baseline".into(), false),
                (None, "planned".into(), false),
                (None, "failed".into(), false)
            ]
        );
        // "near" differs from "top" on 4 examples, all in top's favour: McNemar p = 2 / 2^4 = 0.125.
        let c = s[1].comparison.unwrap();
        assert_eq!(c.test, "mcnemar_exact");
        assert!((c.p_value - 0.125).abs() < 1e-12);
        // Wilson interval of 80/100.
        let (lo, hi) = s[0].interval.unwrap();
        assert!((lo - 0.711_1).abs() < 1e-3 && (hi - 0.866_7).abs() < 1e-3, "{lo} {hi}");
        assert!(s[0].is_leader && s[0].comparison.is_none());

        // Not significantly different is not as good: 4 of 100 examples against it bound its shortfall at 0.086.
        assert!(!s[1].within_margin && s[0].within_margin);
        let b = s[1].shortfall.unwrap();
        assert_eq!(b.method, "tango_score");
        assert!((b.diff - 0.04).abs() < 1e-12 && b.upper > 0.08, "{b:?}");
        let cheapest = pick(&cs, &s, Strategy::Cheapest).unwrap();
        assert_eq!(cs[s[cheapest.chosen].index].label(), "top", "nothing cheaper is within the margin");
        assert_eq!((cheapest.within, cheapest.cheaper), (vec![0], vec![1, 2]), "the closest cheaper run first");
        let strict = pick(&cs, &s, Strategy::Strict).unwrap();
        assert_eq!(cs[s[strict.chosen].index].label(), "top");
    }

    #[test]
    fn no_pick_without_a_finished_run() {
        let cs = vec![candidate("a", RunState::Failed, 1, None), candidate("b", RunState::Trained, 1, Some(vec![1.0]))];
        let s = standings(&cs, &EXACT);
        assert!(s.iter().all(|s| s.rank.is_none()));
        assert!(pick(&cs, &s, Strategy::Cheapest).is_none());
    }

    #[test]
    fn equal_scores_fall_back_to_loss_and_a_nan_loss_never_wins() {
        let mut nan = candidate("nan", RunState::Done, 5, Some(pass_fail(9, 10)));
        nan.valid_loss = Some(f64::NAN);
        let mut ok = candidate("ok", RunState::Done, 5, Some(pass_fail(9, 10)));
        ok.valid_loss = Some(5.0);
        let cs = vec![nan, ok];
        let s = standings(&cs, &EXACT);
        assert_eq!(cs[s[0].index].label(), "ok");
        // Identical scores are tied (p = 1) but 10 examples cannot show them within 0.02; the leader stays.
        assert!(s[1].tied_with_best && !s[1].within_margin);
        let p = pick(&cs, &s, Strategy::Cheapest).unwrap();
        assert_eq!(cs[s[p.chosen].index].label(), "ok");
    }

    #[test]
    fn inference_price_breaks_a_tie_in_tokens() {
        // Identical on 2,000 examples: within the margin; b is as cheap to train and cheaper to run.
        let mut a = candidate("a", RunState::Done, 100, Some(pass_fail(1600, 2000)));
        let mut b = candidate("b", RunState::Done, 100, Some(pass_fail(1600, 2000)));
        a.inference_price = Some(5.0);
        b.inference_price = Some(2.0);
        let cs = vec![a, b];
        let s = standings(&cs, &EXACT);
        let p = pick(&cs, &s, Strategy::Cheapest).unwrap();
        assert_eq!(cs[s[p.chosen].index].label(), "b");
        assert_eq!(p.within, [0, 1]);
    }

    /// `n` examples; the leader right on the first `passes`; the cheaper run
    /// loses `lost` of those and gains `gained` of the others.
    fn leader_and_cheaper(n: usize, passes: usize, lost: usize, gained: usize) -> Vec<Candidate> {
        let leader = pass_fail(passes, n);
        let mut cheap = leader.clone();
        cheap.iter_mut().take(lost).for_each(|x| *x = 0.0);
        cheap.iter_mut().skip(passes).take(gained).for_each(|x| *x = 1.0);
        // A lower validation loss keeps the leader first when the scores are equal.
        let mut first = candidate("leader", RunState::Done, 300, Some(leader));
        first.valid_loss = Some(1.0);
        vec![first, candidate("cheap", RunState::Done, 100, Some(cheap))]
    }

    #[test]
    fn a_cheaper_run_is_picked_only_when_shown_to_be_within_the_margin() {
        // (what, examples, leader's passes, lost, gained, not significantly different, picked)
        let cases = [
            // The case: 0.767 against 0.533 on 30, McNemar p = 0.118 cannot reject; bound 0.424.
            ("far below on 30", 30, 23, 11, 4, true, false),
            ("identical on 30: 30 examples resolve 0.083 at best", 30, 23, 0, 0, true, false),
            ("identical on 184: the bound is 0.0145", 184, 140, 0, 0, true, true),
            ("5 lost and 5 gained of 184: the bound is 0.031", 184, 140, 5, 5, true, false),
            ("3 lost and 1 gained of 2,000: the bound is 0.0033", 2000, 1500, 3, 1, true, true),
            ("60 lost and 20 gained of 2,000: 0.02 below", 2000, 1500, 60, 20, false, false),
            ("30 lost and 20 gained of 2,000: p = 0.2, the bound is 0.0111", 2000, 1500, 30, 20, true, true),
        ];
        for (what, n, passes, lost, gained, not_different, picked) in cases {
            let cs = leader_and_cheaper(n, passes, lost, gained);
            let s = standings(&cs, &EXACT);
            assert_eq!(cs[s[0].index].label(), "leader", "{what}");
            assert_eq!(s[1].tied_with_best, not_different, "{what}: {:?}", s[1].comparison);
            let b = s[1].shortfall.unwrap();
            assert_eq!(s[1].within_margin, b.upper < 0.02, "{what}");
            let p = pick(&cs, &s, Strategy::Cheapest).unwrap();
            let chosen = cs[s[p.chosen].index].label();
            assert_eq!(chosen, if picked { "cheap" } else { "leader" }, "{what}: bound {:.4}", b.upper);
            assert_eq!(cs[s[pick(&cs, &s, Strategy::Strict).unwrap().chosen].index].label(), "leader", "{what}");
        }
        // A margin of 0.05 lets the 5-lost-5-gained run through; a margin of 0 never lets one through.
        let cs = leader_and_cheaper(184, 140, 5, 5);
        let wide = standings(&cs, &Settings { margin: 0.05, ..EXACT });
        assert_eq!(cs[wide[pick(&cs, &wide, Strategy::Cheapest).unwrap().chosen].index].label(), "cheap");
        let cs = leader_and_cheaper(2000, 1500, 0, 0);
        let zero = standings(&cs, &Settings { margin: 0.0, ..EXACT });
        assert_eq!(cs[zero[pick(&cs, &zero, Strategy::Cheapest).unwrap().chosen].index].label(), "leader");
    }

    #[test]
    fn graded_metrics_use_the_bootstrap() {
        let graded = |v: f64| Some(vec![v, v + 0.1, v - 0.1, v, v + 0.05, v - 0.05, v, v, v + 0.1, v - 0.1]);
        let cs = vec![
            candidate("a", RunState::Done, 1, graded(0.5)),
            candidate("b", RunState::Done, 1, graded(0.5).map(|x| x.iter().map(|s| s - 0.3).collect())),
        ];
        let s = standings(&cs, &Settings { pass_fail: false, ..EXACT });
        let (lo, hi) = s[0].interval.unwrap();
        assert!(lo < 0.5 && 0.5 < hi && hi - lo < 0.15, "{lo} {hi}");
        let c = s[1].comparison.unwrap();
        assert_eq!(c.test, "paired_bootstrap");
        assert!(!c.tied && !s[1].tied_with_best);
    }

    #[test]
    fn overfitting_is_a_rise_after_the_lowest_validation_loss() {
        assert_eq!(overfitting(&[(1, 1.32), (2, 1.08), (3, 1.13), (4, 1.25)]).map(|o| o.best_epoch), Some(2));
        assert!(overfitting(&[(1, 1.32), (2, 1.08), (3, 1.13)]).is_none(), "4.6 % is within noise");
        assert!(overfitting(&[(1, 2.0), (2, 1.0)]).is_none());
        assert!(overfitting(&[(1, 1.0)]).is_none());
        assert!(overfitting(&[]).is_none());
        assert!(overfitting(&[(1, f64::NAN), (2, 1.0)]).is_none());
    }
}
