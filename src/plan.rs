//! Expands a sweep into runs: grid or seeded random search, each run with a
//! stable id derived from everything that defines it. Pure: no I/O.

use std::collections::BTreeSet;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use crate::run::{BATCH_SIZE, Definition, LEARNING_RATE_MULTIPLIER, Origin, PlannedRun, RunConfig, Value, show};
use crate::space::{Axis, Domain, Kind, N_EPOCHS, SEED, draw, round_significant};
use crate::spec::{Halving, Search, Sweep};

/// What a run is trained on and where: part of the run id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataIdentity {
    pub training_sha256: String,
    pub validation_sha256: String,
    /// The server's base URL for a hosted provider (a model trained on one
    /// server is not on another); empty for the local provider.
    pub server: String,
}

/// How many epoch checkpoints a job keeps as usable models, the final one
/// included (OpenAI keeps the last three; so does the local provider).
pub const CHECKPOINT_WINDOW: u32 = 3;

/// Expands `sweep` into its runs, in a stable order (grid: the order the
/// values are written, last key fastest; random: the order drawn). Points
/// that coincide are planned once. Successive halving plans its first rung
/// here; [`promote`] plans the next ones from the scores.
pub fn expand(sweep: &Sweep, data: &DataIdentity) -> Vec<PlannedRun> {
    let axes: Vec<&Axis> = sweep.hyperparameters.iter().collect();
    let c = sweep.limits.max_concurrent.max(1) as usize;
    let (configs, rung): (Vec<RunConfig>, Option<u32>) = match &sweep.search {
        Search::Grid => (grid(sweep, &axes, None), None),
        Search::SuccessiveHalving(h) => (first_rung(sweep, &axes, h), Some(0)),
        Search::Random { runs } => (draws(sweep, &axes, *runs), None),
        // The proposals that need no result yet: as many as there are slots.
        Search::Bayes { runs, startup } => {
            let first = bayes_proposals(sweep, data, &[], Some(c), *runs, *startup, c, None);
            return first;
        }
        Search::Asha { halving: h, bayes_startup: Some(startup) } => {
            let runs = h.draws.unwrap_or(1);
            return bayes_proposals(sweep, data, &[], None, runs, *startup, c, Some(0));
        }
        Search::Asha { halving: h, bayes_startup: None } => {
            (first_rung(sweep, &axes, h).into_iter().take(c).collect(), Some(0))
        }
    };
    let mut seen = BTreeSet::new();
    let runs: Vec<PlannedRun> = configs
        .into_iter()
        .filter_map(|config| {
            let run_id = run_id(sweep, data, &config, &Origin::Job);
            seen.insert(run_id.clone()).then_some(PlannedRun { run_id, config, origin: Origin::Job, rung })
        })
        .collect();
    if sweep.epochs_from_checkpoints { share_checkpoints(sweep, data, runs) } else { runs }
}

/// The configurations of successive halving's first rung (synchronous or
/// asynchronous): the grid at `min_epochs`, or `runs` seeded draws.
fn first_rung(sweep: &Sweep, axes: &[&Axis], h: &Halving) -> Vec<RunConfig> {
    match h.draws {
        // The parser fixed `n_epochs` to `min_epochs`: the draws take it.
        Some(runs) => draws(sweep, axes, runs),
        None => grid(sweep, axes, Some(h.min_epochs)),
    }
}

/// Every configuration asynchronous successive halving may start at its
/// first rung (the grid or the draws), in order; `None` with the Bayesian
/// sampler, whose configurations are proposed from the results.
pub fn asha_configurations(sweep: &Sweep, data: &DataIdentity) -> Option<Vec<PlannedRun>> {
    let Search::Asha { halving: h, bayes_startup: None } = &sweep.search else { return None };
    let axes: Vec<&Axis> = sweep.hyperparameters.iter().collect();
    let mut seen = BTreeSet::new();
    let runs = first_rung(sweep, &axes, h).into_iter().filter_map(|config| {
        let run_id = run_id(sweep, data, &config, &Origin::Job);
        seen.insert(run_id.clone()).then_some(PlannedRun { run_id, config, origin: Origin::Job, rung: Some(0) })
    });
    Some(runs.collect())
}

/// `runs` seeded draws from the axes, in order.
fn draws(sweep: &Sweep, axes: &[&Axis], runs: u32) -> Vec<RunConfig> {
    let mut rng = ChaCha8Rng::seed_from_u64(sweep.seed);
    (0..runs)
        .map(|_| {
            let mut config = base_config(sweep);
            for axis in axes {
                set(&mut config, axis, draw(&mut rng, &axis.domain, axis.kind == Kind::Int), sweep.seed);
            }
            config
        })
        .collect()
}

/// A configuration's value on each axis of `axes` (`None`: auto), as the
/// Bayesian model sees it.
pub fn point(axes: &[&Axis], c: &RunConfig) -> Vec<Option<f64>> {
    axes.iter()
        .map(|axis| match axis.name.as_str() {
            N_EPOCHS => c.n_epochs.map(f64::from),
            SEED => Some(c.seed as f64),
            name => c.get(name).map(|v| match v {
                Value::Int(i) => i as f64,
                Value::Float(x) => x,
            }),
        })
        .collect()
}

/// The configuration of a proposed point: integers rounded, floats of a
/// range to 3 significant digits (as random search's draws), each value
/// kept inside its axis's domain.
fn config_of(sweep: &Sweep, axes: &[&Axis], point: &[Option<f64>]) -> RunConfig {
    let mut config = base_config(sweep);
    for (axis, x) in axes.iter().zip(point) {
        let x = x.map(|x| {
            let x = match axis.domain {
                Domain::Uniform(lo, hi) | Domain::LogUniform(lo, hi) => x.clamp(lo, hi),
                Domain::Values(_) => x,
            };
            if axis.kind == Kind::Int { x.round() } else { round_significant(x, 3) }
        });
        set(&mut config, axis, x, sweep.seed);
    }
    config
}

/// A configuration tried by a Bayesian search, in the order proposed:
/// its point and, once its run has ended, what became of it.
pub type Tried = (Vec<Option<f64>>, Option<crate::bayes::Outcome>);

/// How many other indices a proposal tries when the model proposes a
/// configuration already tried; after that the space is taken as exhausted.
const PROPOSAL_ATTEMPTS: u64 = 16;

/// The next proposals of a Bayesian search (at most `slots`, up to `runs`
/// in all), after the configurations `tried` so far, each a run of `rung`.
///
/// The basis of proposal `i` with `lag = Some(c)`: the outcomes of trials
/// `0..i-c`, every one of which must have ended (else no proposal is made
/// now), and trials `i-c..i` as pending whatever their state. It is then the
/// same whatever order the runs end in, so a sweep proposes the same points
/// with `c` runs at a time on every run and after a restart. With `lag =
/// None` (BOHB-style ASHA, which depends on the order anyway), every ended
/// trial's outcome, the others pending. A proposal that would repeat a
/// configuration tried is made again with another index, a few times, and
/// then the search ends (the space is exhausted).
#[allow(clippy::too_many_arguments)]
pub fn bayes_proposals(
    sweep: &Sweep,
    data: &DataIdentity,
    tried: &[Tried],
    lag: Option<usize>,
    runs: u32,
    startup: u32,
    slots: usize,
    rung: Option<u32>,
) -> Vec<PlannedRun> {
    let axes: Vec<&Axis> = sweep.hyperparameters.iter().collect();
    let mut tried = tried.to_vec();
    let mut out = Vec::new();
    while out.len() < slots && tried.len() < runs as usize {
        let i = tried.len();
        let known = lag.map_or(i, |c| i.saturating_sub(c));
        if lag.is_some() && tried[..known].iter().any(|t| t.1.is_none()) {
            break;
        }
        let history: Vec<crate::bayes::Trial> = tried
            .iter()
            .enumerate()
            .map(|(j, (point, outcome))| crate::bayes::Trial {
                point: point.clone(),
                outcome: match outcome {
                    Some(o) if j < known => *o,
                    _ => crate::bayes::Outcome::Pending,
                },
            })
            .collect();
        let fresh = (0..PROPOSAL_ATTEMPTS).find_map(|k| {
            let index = i as u64 + k * 1_000_000;
            let proposed = crate::bayes::propose(&axes, &history, startup as usize, sweep.seed, index);
            let config = config_of(sweep, &axes, &proposed);
            let p = point(&axes, &config);
            (!tried.iter().any(|t| t.0 == p)).then_some((config, p))
        });
        let Some((config, p)) = fresh else { break };
        let run_id = run_id(sweep, data, &config, &Origin::Job);
        out.push(PlannedRun { run_id, config, origin: Origin::Job, rung });
        tried.push((p, None));
    }
    out
}

/// Asynchronous successive halving's next promotion, if any (Li et al.
/// 2018): from the top rung down, the best configuration of rung k that is
/// in the top floor(n/eta) of the n runs of rung k that have ended (by
/// score, ties by the lower validation loss, then the run id; a run without
/// a score ranks last) and has not continued yet, continues from its own
/// model to the next rung's epochs. `members`: every run of the search so
/// far, with its score, validation loss, and whether it has ended.
pub fn asha_promotion(
    sweep: &Sweep,
    data: &DataIdentity,
    h: &Halving,
    members: &[(PlannedRun, Option<f64>, Option<f64>, bool)],
) -> Option<PlannedRun> {
    let epochs = rung_epochs(h);
    let continued: BTreeSet<&str> = members.iter().filter_map(|(r, ..)| r.origin.source()).collect();
    for k in (0..epochs.len().saturating_sub(1)).rev() {
        let ended: Vec<(PlannedRun, Option<f64>, Option<f64>)> = members
            .iter()
            .filter(|(r, _, _, ended)| *ended && r.rung == Some(k as u32))
            .map(|(r, score, loss, _)| (r.clone(), *score, *loss))
            .collect();
        let keep = ended.len() / h.eta.max(2) as usize;
        if keep == 0 {
            continue;
        }
        let ranked = rank(&ended);
        if let Some((parent, ..)) = ranked.into_iter().take(keep).find(|(r, ..)| !continued.contains(r.run_id.as_str()))
        {
            return Some(continuation(sweep, data, parent, epochs[k], epochs[k + 1], k as u32 + 1));
        }
    }
    None
}

/// Results by score (best first; ties by the lower validation loss, then the
/// run id), without the runs that have no finite score.
fn rank(results: &[(PlannedRun, Option<f64>, Option<f64>)]) -> Vec<&(PlannedRun, Option<f64>, Option<f64>)> {
    let mut ranked: Vec<&(PlannedRun, Option<f64>, Option<f64>)> =
        results.iter().filter(|(_, score, _)| score.is_some_and(f64::is_finite)).collect();
    ranked.sort_by(|a, b| {
        let loss = |x: &Option<f64>| x.filter(|l| l.is_finite()).unwrap_or(f64::INFINITY);
        (b.1.unwrap_or(f64::NEG_INFINITY).total_cmp(&a.1.unwrap_or(f64::NEG_INFINITY)))
            .then(loss(&a.2).total_cmp(&loss(&b.2)))
            .then(a.0.run_id.cmp(&b.0.run_id))
    });
    ranked
}

/// `parent` continued from its own model (`from` epochs) to `to` epochs, at `rung`.
fn continuation(sweep: &Sweep, data: &DataIdentity, parent: &PlannedRun, from: u32, to: u32, rung: u32) -> PlannedRun {
    let config = RunConfig { n_epochs: Some(to), ..parent.config.clone() };
    let origin = Origin::Continue { parent: parent.run_id.clone(), parent_epochs: from };
    PlannedRun { run_id: run_id(sweep, data, &config, &origin), config, origin, rung: Some(rung) }
}

/// A configuration before any hyperparameter is set: epochs `auto`, the
/// sweep's seed.
fn base_config(sweep: &Sweep) -> RunConfig {
    RunConfig { n_epochs: None, seed: sweep.seed, ..RunConfig::default() }
}

/// Sets `axis`'s hyperparameter of `config` to `x` (`None`: auto; for the
/// seed, the sweep's).
fn set(config: &mut RunConfig, axis: &Axis, x: Option<f64>, sweep_seed: u64) {
    match axis.name.as_str() {
        N_EPOCHS => config.n_epochs = x.map(|x| x as u32),
        SEED => config.seed = x.map_or(sweep_seed, |x| x as u64),
        name => config.set(
            name,
            x.map(|x| match axis.kind {
                Kind::Int => Value::Int(x as i64),
                Kind::Float => Value::Float(x),
            }),
        ),
    }
}

/// Every combination of the axes' values, the first axis outermost (the
/// provider's order, that of ftsweep 0.1); with `epochs` (successive
/// halving's first rung) `n_epochs` takes that one value.
fn grid(sweep: &Sweep, axes: &[&Axis], epochs: Option<u32>) -> Vec<RunConfig> {
    let fixed = [epochs.map(f64::from)];
    let mut configs = vec![base_config(sweep)];
    for axis in axes {
        let values = match epochs {
            Some(_) if axis.name == N_EPOCHS => &fixed[..],
            _ => values(&axis.domain),
        };
        configs = configs
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |&x| {
                    let mut c = c.clone();
                    set(&mut c, axis, x, sweep.seed);
                    c
                })
            })
            .collect();
    }
    configs
}

/// Makes runs that differ only in `n_epochs` share one job: per group, the
/// largest value keeps its job, and the values within the provider's
/// checkpoint window below it become its checkpoints; a value further down
/// starts the next job. `auto` epochs keep their own jobs.
fn share_checkpoints(sweep: &Sweep, data: &DataIdentity, runs: Vec<PlannedRun>) -> Vec<PlannedRun> {
    // Runs that differ only in `n_epochs` share a key.
    type Key = (crate::run::ConfigKey, u64);
    let key = |c: &RunConfig| -> Key { (c.key(false), c.seed) };
    let mut source_of: std::collections::HashMap<(Key, u32), String> = std::collections::HashMap::new();
    let mut groups: std::collections::BTreeMap<Key, Vec<&PlannedRun>> = std::collections::BTreeMap::new();
    for r in runs.iter().filter(|r| r.config.n_epochs.is_some()) {
        groups.entry(key(&r.config)).or_default().push(r);
    }
    for (k, members) in &groups {
        let mut epochs: Vec<(u32, &str)> =
            members.iter().map(|r| (r.config.n_epochs.unwrap_or(0), r.run_id.as_str())).collect();
        epochs.sort_by_key(|e| std::cmp::Reverse(e.0));
        let mut job: Option<(u32, &str)> = None;
        for (e, id) in epochs {
            match job {
                Some((top, source)) if e + CHECKPOINT_WINDOW > top => {
                    source_of.insert((k.clone(), e), source.to_string());
                }
                _ => job = Some((e, id)),
            }
        }
    }
    runs.into_iter()
        .map(|r| match source_of.get(&(key(&r.config), r.config.n_epochs.unwrap_or(0))) {
            Some(source) => {
                let origin = Origin::Checkpoint { source: source.clone() };
                PlannedRun { run_id: run_id(sweep, data, &r.config, &origin), origin, ..r }
            }
            None => r,
        })
        .collect()
}

/// The total epochs at each rung of successive halving: `min_epochs`, then
/// × eta, capped at `max_epochs`.
pub fn rung_epochs(h: &Halving) -> Vec<u32> {
    let mut epochs = vec![h.min_epochs.max(1)];
    while let Some(&last) = epochs.last()
        && last < h.max_epochs
    {
        epochs.push(last.saturating_mul(h.eta.max(2)).min(h.max_epochs));
    }
    epochs
}

/// How many configurations each rung trains, from `n` at the first.
pub fn rung_sizes(h: &Halving, n: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut k = n;
    for _ in rung_epochs(h) {
        sizes.push(k);
        k = k.div_ceil(h.eta.max(2) as usize).max(1).min(k);
    }
    sizes
}

/// The next rung of successive halving: the best 1/eta (rounded up) of
/// `rung`'s runs, by score (ties broken by the lower validation loss, then the
/// run id), continue from their own models. Runs without a score (failed)
/// are never promoted. Empty after the last rung.
pub fn promote(
    sweep: &Sweep,
    data: &DataIdentity,
    h: &Halving,
    rung: u32,
    results: &[(PlannedRun, Option<f64>, Option<f64>)],
) -> Vec<PlannedRun> {
    let epochs = rung_epochs(h);
    let (Some(&from), Some(&to)) = (epochs.get(rung as usize), epochs.get(rung as usize + 1)) else {
        return Vec::new();
    };
    let keep = results.len().div_ceil(h.eta.max(2) as usize).max(1);
    rank(results)
        .into_iter()
        .take(keep)
        .map(|(parent, _, _)| continuation(sweep, data, parent, from, to, rung + 1))
        .collect()
}

/// The configuration of a run without its seed: what replicates share.
pub fn config_key(run: &PlannedRun) -> (crate::run::OriginKind, crate::run::ConfigKey) {
    (run.origin.kind(), run.config.key(true))
}

/// The top `k` configurations by score (ties: the run id), one run each:
/// the runs to replicate.
pub fn leaders(results: &[(PlannedRun, Option<f64>)], k: usize) -> Vec<&PlannedRun> {
    let mut ranked: Vec<&(PlannedRun, Option<f64>)> =
        results.iter().filter(|(_, s)| s.is_some_and(f64::is_finite)).collect();
    ranked.sort_by(|a, b| b.1.unwrap_or(0.0).total_cmp(&a.1.unwrap_or(0.0)).then(a.0.run_id.cmp(&b.0.run_id)));
    let mut seen = BTreeSet::new();
    ranked.into_iter().map(|(r, _)| r).filter(|r| seen.insert(config_key(r))).take(k).collect()
}

/// A run trained again with another seed: its whole chain (the job a
/// checkpoint comes from, the rungs a continuation continues) is planned
/// anew with `seed`. `chain` runs from the root job to the run.
pub fn replicate(sweep: &Sweep, data: &DataIdentity, chain: &[PlannedRun], seed: u64) -> Vec<PlannedRun> {
    let mut renamed: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for r in chain {
        let config = RunConfig { seed, ..r.config.clone() };
        let origin = r.origin.renamed(|id| renamed.get(id).cloned());
        let id = run_id(sweep, data, &config, &origin);
        renamed.insert(&r.run_id, id.clone());
        out.push(PlannedRun { run_id: id, config, origin, rung: None });
    }
    out
}

/// The hex digits of a run id's hash: 16, 64 bits. ftsweep 0.1 kept 10 (40
/// bits), and two runs of a grid of a million collided; its id of a
/// definition is the prefix of today's (see [`legacy_id`]).
const ID_HEX_DIGITS: usize = 16;
const LEGACY_HEX_DIGITS: usize = 10;

/// The stable id of a run: `r-` and 16 hex digits of a hash of provider (and
/// server), base model, data, hyperparameters and, for a run without its own
/// job from the base model, the id of the run its model comes from. The
/// sweep's name takes no part, so a renamed or extended sweep finds its
/// finished runs again.
pub fn run_id(sweep: &Sweep, data: &DataIdentity, c: &RunConfig, origin: &Origin) -> String {
    let digest = Sha256::digest(canonical(sweep, data, c, origin).as_bytes());
    let hex: String = digest.iter().take(ID_HEX_DIGITS / 2).map(|b| format!("{b:02x}")).collect();
    format!("r-{hex}")
}

/// The id ftsweep 0.1 gave the run of `run_id` (the same hash, 40 bits), if
/// its model comes from a run with an id of that time or from the base model.
pub fn legacy_id(run_id: &str) -> Option<&str> {
    let len = 2 + LEGACY_HEX_DIGITS;
    (run_id.len() == 2 + ID_HEX_DIGITS).then(|| &run_id[..len])
}

/// What a run id hashes. The text of ftsweep 0.1 (its four hyperparameters
/// always, `auto` without a value), then each other hyperparameter with a
/// value as `name=value`, by name: a run of OpenAI's names keeps its id;
/// then the server and, for DPO, `method=dpo`.
fn canonical(sweep: &Sweep, data: &DataIdentity, c: &RunConfig, origin: &Origin) -> String {
    let mut canonical = format!(
        "ftsweep-run-v1\nprovider={}\nbase_model={}\ntraining={}\nvalidation={}\nn_epochs={}\nbatch_size={}\nlearning_rate_multiplier={}\nseed={}\n",
        sweep.provider.as_str(),
        sweep.base_model,
        data.training_sha256,
        data.validation_sha256,
        show(c.n_epochs),
        show(c.get(BATCH_SIZE)),
        show(c.get(LEARNING_RATE_MULTIPLIER)),
        c.seed,
    );
    for (name, value) in c.params.iter().filter(|(name, _)| !crate::run::is_legacy_name(name)) {
        canonical.push_str(&format!("{name}={value}\n"));
    }
    if !data.server.is_empty() {
        canonical.push_str(&format!("server={}\n", data.server));
    }
    // SFT, the default, adds nothing: the ids of sweeps written before `method` are unchanged.
    if sweep.method != crate::space::Method::Sft {
        canonical.push_str(&format!("method={}\n", sweep.method.as_str()));
    }
    match origin {
        Origin::Job => {}
        Origin::Checkpoint { source } => canonical.push_str(&format!("origin=checkpoint\nsource={source}\n")),
        Origin::Continue { parent, parent_epochs } => {
            canonical.push_str(&format!("origin=continue\nparent={parent}\nparent_epochs={parent_epochs}\n"))
        }
    }
    canonical
}

/// The definition of a planned run of `sweep`.
pub fn definition(sweep: &Sweep, data: &DataIdentity, run: &PlannedRun) -> Definition {
    Definition {
        provider: sweep.provider.as_str().to_string(),
        base_model: sweep.base_model.clone(),
        training_sha256: data.training_sha256.clone(),
        validation_sha256: data.validation_sha256.clone(),
        config: run.config.clone(),
        origin: run.origin.clone(),
    }
}

/// Finds planned runs again in a database written by ftsweep 0.1 (40-bit
/// ids): a run whose id is not stored takes its [`legacy_id`] when a stored
/// run has that id and the same definition. A stored run with another
/// definition is another configuration whose 40-bit id collided: the planned
/// run keeps its own id and trains. A run whose model comes from a renamed run
/// refers to the new name, and its id is hashed again. `stored` reads a stored
/// run's definition by id; the order of `runs` is kept.
pub fn adopt_stored<E>(
    sweep: &Sweep,
    data: &DataIdentity,
    runs: Vec<PlannedRun>,
    mut stored: impl FnMut(&str) -> Result<Option<Definition>, E>,
) -> Result<Vec<PlannedRun>, E> {
    let index: std::collections::HashMap<&str, usize> =
        runs.iter().enumerate().map(|(i, r)| (r.run_id.as_str(), i)).collect();
    let mut renamed: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut out: Vec<Option<PlannedRun>> = vec![None; runs.len()];
    // The runs a model comes from first (a checkpoint run may be listed
    // before its job): each pass takes the runs whose source is done.
    while out.iter().any(Option::is_none) {
        let before = out.iter().filter(|r| r.is_some()).count();
        for (i, planned) in runs.iter().enumerate() {
            let source_pending = planned.origin.source().and_then(|s| index.get(s)).is_some_and(|&j| out[j].is_none());
            if out[i].is_some() || source_pending {
                continue;
            }
            let mut run = planned.clone();
            if run.origin.source().is_some_and(|s| renamed.contains_key(s)) {
                run.origin = run.origin.renamed(|s| renamed.get(s).cloned());
                run.run_id = run_id(sweep, data, &run.config, &run.origin);
            }
            if let Some(old) = legacy_id(&run.run_id)
                && stored(&run.run_id)?.is_none()
                && stored(old)?.is_some_and(|d| d == definition(sweep, data, &run))
            {
                run.run_id = old.to_string();
            }
            if run.run_id != planned.run_id {
                renamed.insert(planned.run_id.clone(), run.run_id.clone());
            }
            out[i] = Some(run);
        }
        if out.iter().filter(|r| r.is_some()).count() == before {
            break;
        }
    }
    Ok(out.into_iter().zip(runs).map(|(a, planned)| a.unwrap_or(planned)).collect())
}

fn values(d: &Domain) -> &[Option<f64>] {
    match d {
        Domain::Values(v) => v,
        // The parser only allows distributions where the space is drawn from.
        Domain::Uniform(..) | Domain::LogUniform(..) => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec;
    use std::path::Path;

    fn sweep(extra: &str, hp: &str) -> Sweep {
        let text = format!(
            "name = \"t\"\nbase_model = \"local/ngram\"\ntraining_file = \"a.jsonl\"\nvalidation_file = \"b.jsonl\"\nseed = 7\n{extra}\n[hyperparameters]\n{hp}\n"
        );
        spec::parse(Path::new("s.toml"), &text).unwrap()
    }

    fn data() -> DataIdentity {
        DataIdentity { training_sha256: "aa".into(), validation_sha256: "bb".into(), server: String::new() }
    }

    const HP: &str = "n_epochs = [1, 3]\nlearning_rate_multiplier = [0.1, 1.0, 10.0]\nbatch_size = [4, 32]";

    #[test]
    fn grid_is_the_cartesian_product_in_written_order() {
        let runs = expand(&sweep("", HP), &data());
        assert_eq!(runs.len(), 12);
        assert_eq!(runs[0].config, RunConfig::supervised(Some(1), Some(4), Some(0.1), 7));
        assert_eq!(runs[1].config.batch_size(), Some(32));
        assert_eq!(runs[11].config, RunConfig::supervised(Some(3), Some(32), Some(10.0), 7));
        let ids: BTreeSet<_> = runs.iter().map(|r| r.run_id.clone()).collect();
        assert_eq!(ids.len(), 12, "ids are distinct");
    }

    #[test]
    fn ids_are_stable_and_extension_keeps_them() {
        let a = expand(&sweep("", HP), &data());
        let b = expand(&sweep("", &HP.replace("[1, 3]", "[1, 3, 8]")), &data());
        assert_eq!(b.len(), 18);
        for run in &a {
            assert!(b.contains(run), "{} survives the extension", run.run_id);
        }
        assert_eq!(a[0].run_id.len(), 18, "r- and 64 bits in hex");
        assert_eq!(a, expand(&sweep("", HP), &data()));
    }

    #[test]
    fn ids_depend_on_data_and_seed_but_not_on_the_name() {
        let s = sweep("", HP);
        let c = expand(&s, &data())[0].config.clone();
        let other_data = DataIdentity { training_sha256: "ab".into(), ..data() };
        assert_ne!(run_id(&s, &data(), &c, &Origin::Job), run_id(&s, &other_data, &c, &Origin::Job));
        let other_server = DataIdentity { server: "https://example.com/v1".into(), ..data() };
        assert_ne!(run_id(&s, &data(), &c, &Origin::Job), run_id(&s, &other_server, &c, &Origin::Job));
        assert_ne!(
            run_id(&s, &data(), &c, &Origin::Job),
            run_id(&s, &data(), &RunConfig { seed: 8, ..c.clone() }, &Origin::Job)
        );
        let renamed = Sweep { name: "other".into(), ..s.clone() };
        assert_eq!(run_id(&s, &data(), &c, &Origin::Job), run_id(&renamed, &data(), &c, &Origin::Job));
    }

    #[test]
    fn a_dpo_sweep_has_its_own_ids_and_its_beta_is_an_axis() {
        let sft = expand(&sweep("", HP), &data());
        let dpo = expand(&sweep("method = \"dpo\"", HP), &data());
        assert_eq!(sft.len(), dpo.len());
        assert!(sft.iter().zip(&dpo).all(|(a, b)| a.config == b.config && a.run_id != b.run_id));
        // An SFT sweep's ids do not change with `method = "sft"` written.
        assert_eq!(sft, expand(&sweep("method = \"sft\"", HP), &data()));
        let betas = expand(
            &sweep(
                "method = \"dpo\"",
                "n_epochs = 1\nlearning_rate_multiplier = 1.0\nbatch_size = 4\nbeta = [0.1, 1.0]",
            ),
            &data(),
        );
        let values: Vec<_> = betas.iter().map(|r| r.config.float(crate::space::BETA)).collect();
        assert_eq!(values, [Some(0.1), Some(1.0)]);
    }

    #[test]
    fn random_search_is_seeded_and_within_bounds() {
        let hp = "n_epochs = { uniform = [1, 10] }\nlearning_rate_multiplier = { log_uniform = [0.05, 20] }\nbatch_size = [4, 8, 16]";
        let s = sweep("[search]\nstrategy = \"random\"\nruns = 20", hp);
        let a = expand(&s, &data());
        assert_eq!(a, expand(&s, &data()), "same seed, same runs");
        assert!(a.len() >= 18, "20 draws rarely coincide: {}", a.len());
        for r in &a {
            assert!((1..=10).contains(&r.config.n_epochs.unwrap()));
            assert!((0.05..=20.0).contains(&r.config.learning_rate_multiplier().unwrap()));
            assert!([4, 8, 16].contains(&r.config.batch_size().unwrap()));
        }
        let reseeded = Sweep { seed: 8, ..s };
        assert_ne!(a, expand(&reseeded, &data()), "another seed, other runs");
    }

    #[test]
    fn auto_takes_part_in_the_grid_and_the_id() {
        let runs = expand(&sweep("", &HP.replace("[1, 3]", "[\"auto\", 3]")), &data());
        assert_eq!(runs[0].config.n_epochs, None);
        let fixed = expand(&sweep("", HP), &data());
        assert_ne!(runs[0].run_id, fixed[0].run_id, "auto is not 1");
        assert_eq!(runs[6].run_id, fixed[6].run_id, "the 3-epoch runs are the same");
    }

    #[test]
    fn checkpoint_epochs_share_a_job_within_the_window() {
        let hp = "n_epochs = [1, 2, 3, 8]\nlearning_rate_multiplier = [1.0]\nbatch_size = [4, 32]";
        let plain = expand(&sweep("", hp), &data());
        let mut shared_sweep = sweep("", hp);
        shared_sweep.epochs_from_checkpoints = true;
        let runs = expand(&shared_sweep, &data());
        assert_eq!(runs.len(), 8, "the same points");
        let jobs: Vec<&PlannedRun> = runs.iter().filter(|r| r.origin == Origin::Job).collect();
        // Per batch size: 8 epochs (keeps 6..8, so 1, 2, 3 are out of its window) and 3 (gives 1 and 2).
        assert_eq!(jobs.iter().map(|r| r.config.n_epochs.unwrap()).collect::<Vec<_>>(), vec![3, 3, 8, 8]);
        for r in &runs {
            match &r.origin {
                Origin::Job => assert!(plain.contains(r), "a job keeps its id"),
                Origin::Checkpoint { source } => {
                    let s = runs.iter().find(|x| &x.run_id == source).unwrap();
                    assert_eq!(s.config.n_epochs, Some(3));
                    assert_eq!(s.config.batch_size(), r.config.batch_size());
                    assert!(r.config.n_epochs < Some(3));
                    assert_eq!(r.job_epochs(), Some(0));
                    assert!(!plain.iter().any(|p| p.run_id == r.run_id), "a checkpoint run has an id of its own");
                }
                Origin::Continue { .. } => panic!("no continuation in a grid"),
            }
        }
        let total: u32 = runs.iter().filter_map(|r| r.job_epochs()).sum();
        assert_eq!(total, 22, "2 × (8 + 3) epochs instead of 2 × 14");
    }

    #[test]
    fn halving_rungs_multiply_epochs_and_divide_configurations() {
        let h = Halving { eta: 3, min_epochs: 1, max_epochs: 3, draws: None };
        assert_eq!(rung_epochs(&h), vec![1, 3]);
        assert_eq!(rung_sizes(&h, 9), vec![9, 3]);
        let h = Halving { eta: 2, min_epochs: 1, max_epochs: 5, draws: None };
        assert_eq!(rung_epochs(&h), vec![1, 2, 4, 5]);
        assert_eq!(rung_sizes(&h, 9), vec![9, 5, 3, 2]);
    }

    #[test]
    fn promotion_keeps_the_best_third_and_continues_their_models() {
        let h = Halving { eta: 3, min_epochs: 1, max_epochs: 3, draws: None };
        let hp = "n_epochs = [1]\nlearning_rate_multiplier = [0.1, 1.0, 10.0]\nbatch_size = [4, 16, 64]";
        let mut s = sweep("", hp);
        s.search = Search::SuccessiveHalving(h);
        let first = expand(&s, &data());
        assert_eq!(first.len(), 9);
        assert!(first.iter().all(|r| r.config.n_epochs == Some(1) && r.rung == Some(0)));
        let scores = [0.5, 0.7, 0.1, 0.7, 0.9, f64::NAN, 0.2, 0.3, 0.4];
        let results: Vec<(PlannedRun, Option<f64>, Option<f64>)> = first
            .iter()
            .zip(scores)
            .enumerate()
            .map(|(i, (r, sc))| (r.clone(), (!sc.is_nan()).then_some(sc), Some(if i == 3 { 1.0 } else { 2.0 })))
            .collect();
        let next = promote(&s, &data(), &h, 0, &results);
        let parents: Vec<&str> = next
            .iter()
            .map(|r| match &r.origin {
                Origin::Continue { parent, parent_epochs: 1 } => parent.as_str(),
                o => panic!("{o:?}"),
            })
            .collect();
        // 0.9, then the two 0.7s with the lower valid loss first.
        assert_eq!(parents, vec![first[4].run_id.as_str(), first[3].run_id.as_str(), first[1].run_id.as_str()]);
        assert!(next.iter().all(|r| r.config.n_epochs == Some(3) && r.rung == Some(1) && r.job_epochs() == Some(2)));
        assert_eq!(next, promote(&s, &data(), &h, 0, &results), "deterministic");
        assert!(promote(&s, &data(), &h, 1, &results).is_empty(), "the last rung promotes nothing");
    }

    #[test]
    fn replicates_rebuild_the_chain_with_another_seed() {
        let h = Halving { eta: 3, min_epochs: 1, max_epochs: 3, draws: None };
        let mut s = sweep("", "n_epochs = [1]\nlearning_rate_multiplier = [1.0]\nbatch_size = [4]");
        s.search = Search::SuccessiveHalving(h);
        let root = expand(&s, &data()).remove(0);
        let leaf = promote(&s, &data(), &h, 0, &[(root.clone(), Some(0.5), None)]).remove(0);
        let copy = replicate(&s, &data(), &[root.clone(), leaf.clone()], 99);
        assert_eq!(copy.len(), 2);
        assert_eq!(copy[0].config, RunConfig { seed: 99, ..root.config.clone() });
        assert_eq!(copy[1].origin, Origin::Continue { parent: copy[0].run_id.clone(), parent_epochs: 1 });
        assert_ne!(copy[1].run_id, leaf.run_id);
        let results = vec![(leaf.clone(), Some(0.5)), (copy[1].clone(), Some(0.6)), (root.clone(), Some(0.4))];
        let top: Vec<&str> = leaders(&results, 2).iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(top, vec![copy[1].run_id.as_str(), root.run_id.as_str()], "one run per configuration");
    }

    #[test]
    fn rounding_keeps_three_significant_digits() {
        assert_eq!(round_significant(0.123456, 3), 0.123);
        assert_eq!(round_significant(12.3456, 3), 12.3);
        assert_eq!(round_significant(0.30000000000000004, 3), 0.3);
    }

    /// The data of tests/data/ids-v1, whose database ftsweep 0.1 wrote.
    fn fixture_data() -> DataIdentity {
        DataIdentity {
            training_sha256: "2a0212798d9584e27019fe0caac1e1e8cb1eb06df4706d85ab0bdd5df7ffcb3a".into(),
            validation_sha256: "4ab114d975db29b0ab35b1a3fc737c6c16835753b5747844cb209f34f4b845bb".into(),
            server: String::new(),
        }
    }

    /// A sweep of the fixture's seed, 42.
    fn fixture_sweep(extra: &str, hp: &str) -> Sweep {
        let mut s = sweep(extra, &format!("{hp}\nseed = [42]"));
        s.seed = 42;
        s
    }

    fn config(n_epochs: u32, lr: f64, batch_size: u32) -> RunConfig {
        RunConfig::supervised(Some(n_epochs), Some(batch_size), Some(lr), 42)
    }

    #[test]
    fn ids_are_64_bits_and_begin_with_the_40_bit_id_of_the_same_run() {
        // A known value pins the id scheme: changing it orphans every stored
        // run. ftsweep 0.1 stored this run as r-8bc21d377c (tests/data/ids-v1).
        let s = fixture_sweep("", HP);
        let id = run_id(&s, &fixture_data(), &config(1, 0.1, 4), &Origin::Job);
        assert_eq!(id, "r-8bc21d377cd9ccda");
        assert_eq!(legacy_id(&id), Some("r-8bc21d377c"));
        assert_eq!(legacy_id("r-8bc21d377c"), None, "an old id has no older one");
    }

    #[test]
    fn definitions_that_collided_in_40_bits_have_distinct_ids() {
        // Found in a 10^6 grid over the fixture's data: ftsweep 0.1 gave both
        // r-b5465147df, and planned the grid with one run fewer.
        let s = fixture_sweep("", "n_epochs = [9, 42]\nlearning_rate_multiplier = [0.32, 0.51]\nbatch_size = [164]");
        let a = run_id(&s, &fixture_data(), &config(42, 0.32, 164), &Origin::Job);
        let b = run_id(&s, &fixture_data(), &config(9, 0.51, 164), &Origin::Job);
        assert_eq!(legacy_id(&a), Some("r-b5465147df"));
        assert_eq!(legacy_id(&a), legacy_id(&b), "the 40-bit ids collide");
        assert_ne!(a, b);
        assert_eq!(expand(&s, &fixture_data()).len(), 4, "no point of the grid is dropped");
    }

    /// A database of ftsweep 0.1, as `adopt_stored` reads it.
    fn stored_by(
        s: &Sweep,
        runs: &[(&str, RunConfig, Origin)],
    ) -> impl FnMut(&str) -> Result<Option<Definition>, ()> + use<> {
        let rows: std::collections::HashMap<String, Definition> = runs
            .iter()
            .map(|(id, config, origin)| {
                let run =
                    PlannedRun { run_id: id.to_string(), config: config.clone(), origin: origin.clone(), rung: None };
                (id.to_string(), definition(s, &fixture_data(), &run))
            })
            .collect();
        move |id| Ok(rows.get(id).cloned())
    }

    #[test]
    fn runs_stored_under_40_bit_ids_are_found_again_with_their_chains() {
        // What ftsweep 0.1 stored for tests/data/ids-v1/checkpoints.toml: a
        // 2-epoch job, and the 1-epoch run as its checkpoint.
        let hp = "n_epochs = [1, 2]\nlearning_rate_multiplier = [1.0]\nbatch_size = [4]";
        let s = fixture_sweep("[search]\nepochs_from_checkpoints = true", hp);
        let source = Origin::Checkpoint { source: "r-206403f9d5".into() };
        let mut stored = stored_by(
            &s,
            &[("r-206403f9d5", config(2, 1.0, 4), Origin::Job), ("r-941ff13c38", config(1, 1.0, 4), source)],
        );
        let planned = expand(&s, &fixture_data());
        assert_eq!(planned[0].origin.kind(), crate::run::OriginKind::Checkpoint, "listed before its job");
        let adopted = adopt_stored(&s, &fixture_data(), planned.clone(), &mut stored).unwrap();
        let ids: Vec<&str> = adopted.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["r-941ff13c38", "r-206403f9d5"]);
        assert_eq!(adopted[0].origin, Origin::Checkpoint { source: "r-206403f9d5".into() });
        // A new database changes nothing.
        let fresh = adopt_stored(&s, &fixture_data(), planned.clone(), |_| Ok::<_, ()>(None)).unwrap();
        assert_eq!(fresh, planned);

        // A continuation of an old run hashes the old id: its 40-bit id is its prefix.
        let h = Halving { eta: 2, min_epochs: 1, max_epochs: 2, draws: None };
        let parent =
            PlannedRun { run_id: "r-8bc21d377c".into(), config: config(1, 0.1, 4), origin: Origin::Job, rung: Some(0) };
        let next = promote(&s, &fixture_data(), &h, 0, &[(parent, Some(0.5), None)]);
        assert_eq!(legacy_id(&next[0].run_id), Some("r-25ad00e31a"));
    }

    #[test]
    fn a_stored_run_with_another_definition_under_the_40_bit_id_is_not_reused() {
        let s = fixture_sweep("", "n_epochs = [9, 42]\nlearning_rate_multiplier = [0.32, 0.51]\nbatch_size = [164]");
        // The database holds (9, 0.51, 164) under the id both had in 40 bits.
        let mut stored = stored_by(&s, &[("r-b5465147df", config(9, 0.51, 164), Origin::Job)]);
        let adopted = adopt_stored(&s, &fixture_data(), expand(&s, &fixture_data()), &mut stored).unwrap();
        let find = |c: RunConfig| adopted.iter().find(|r| r.config == c).unwrap().run_id.clone();
        assert_eq!(find(config(9, 0.51, 164)), "r-b5465147df", "its own run, found again");
        assert_eq!(find(config(42, 0.32, 164)), run_id(&s, &fixture_data(), &config(42, 0.32, 164), &Origin::Job));
        assert_eq!(find(config(42, 0.32, 164)).len(), 18, "the other configuration is a new run");
    }
}
