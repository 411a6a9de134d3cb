//! `ftsweep plan`: check a sweep and its data, and print the runs it expands
//! to with their estimated tokens and cost. Writes nothing.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use anyhow::Result;

use super::out::{errln, outln};
use super::sweepfile::{self, LoadedSweep};
use super::{Cli, ExitStatus};
use crate::pricing::{self, DataFigures, PRICES_AS_OF};
use crate::provider::local::labels::{self, Coverage};
use crate::report::{self, PlanRow};
use crate::run::{PlannedRun, RunRecord, SweepRole};
use crate::spec::{CommandSettings, Engine, ProviderKind, Sweep, TogetherInference};
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sweep file.
    pub sweep: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The data figures a sweep's cost depends on.
pub fn figures(loaded: &LoadedSweep) -> DataFigures {
    let v = &loaded.validation_report;
    let total: u64 = v.total_tokens.iter().map(|&t| u64::from(t)).sum();
    let output: u64 = v.assistant_tokens.iter().map(|&t| u64::from(t)).sum();
    DataFigures {
        examples: loaded.training_report.examples as u64,
        billing_tokens: loaded.training_report.billing_tokens,
        eval_examples: v.examples as u64,
        eval_input_tokens: total.saturating_sub(output),
        eval_output_tokens: output,
    }
}

/// The plan's rows, with each run's recorded state when the database exists. The database is
/// only read, never created, migrated or written.
pub fn rows(cli: &Cli, loaded: &LoadedSweep) -> Result<Vec<PlanRow>> {
    let (runs, known): (Vec<PlannedRun>, HashMap<String, String>) = if let Some(store) = open_for_reading(cli)? {
        // Runs recorded under the 40-bit ids of ftsweep 0.1 show under those.
        let runs = crate::sweep::adopt_stored(&store, &loaded.sweep, &loaded.identity, loaded.runs.clone())?;
        let records = match store.sweep(&loaded.sweep.name)? {
            Some(s) => store.sweep_runs(s.id)?,
            None => Vec::new(),
        };
        let later = recorded_later(&records, &runs);
        let known = records.into_iter().map(|r| (r.run_id, r.state.as_str().to_string())).collect();
        ([runs, later].concat(), known)
    } else {
        (loaded.runs.clone(), HashMap::new())
    };
    Ok(report::plan_rows(&runs, &figures(loaded), loaded.price, loaded.sweep.provider, |id| known.get(id).cloned()))
}

/// The runs an earlier `run` added after the first rung (later rungs and
/// replicates) that still follow from `runs`, in the sweep's order: a sweep
/// file changed since would plan others.
fn recorded_later(records: &[RunRecord], runs: &[PlannedRun]) -> Vec<PlannedRun> {
    let mut ids: HashSet<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    let key = |c: &crate::run::RunConfig| c.key(true);
    let configs: HashSet<_> = runs.iter().map(|r| key(&r.config)).collect();
    let mut later = Vec::new();
    for r in records {
        if ids.contains(r.run_id.as_str()) || !(r.role == SweepRole::Replicate || r.rung.is_some_and(|x| x > 0)) {
            continue;
        }
        let follows = match r.origin.source() {
            Some(source) => ids.contains(source),
            // A replicate's own job: a planned configuration with another seed.
            None => configs.contains(&key(&r.config)),
        };
        if follows {
            ids.insert(&r.run_id);
            later.push(r.planned());
        }
    }
    later
}

/// The database, opened only to read (an older schema through an upgraded copy in memory), or
/// `None` when it does not exist.
fn open_for_reading(cli: &Cli) -> Result<Option<Store>> {
    match cli.db.exists() {
        true => Ok(Some(Store::open_read_only(&cli.db)?)),
        false => Ok(None),
    }
}

/// A rung of successive halving after the first: planned once the scores
/// of the rung before are in, so only its size and cost are known now.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LaterRung {
    pub rung: u32,
    /// The epochs each configuration has seen at the end of the rung.
    pub epochs: u32,
    pub configurations: usize,
    pub estimated_trained_tokens: u64,
    pub estimated_training_cost_usd: Option<f64>,
    /// Decided as results land (Bayesian search, asynchronous halving): at
    /// most `configurations`, each at most `epochs` (an upper bound).
    pub proposed: bool,
}

/// The rungs successive halving adds after the first (none for other
/// searches) that `rows` (from [`rows`]) do not hold yet; for Bayesian search
/// and asynchronous halving, the runs they decide as results land, at most.
pub fn later_rungs(loaded: &LoadedSweep, rows: &[PlanRow]) -> Vec<LaterRung> {
    if let Some(later) = proposed_later(loaded, rows) {
        return later;
    }
    let crate::spec::Search::SuccessiveHalving(h) = &loaded.sweep.search else { return Vec::new() };
    let epochs = crate::plan::rung_epochs(h);
    let sizes = crate::plan::rung_sizes(h, loaded.runs.len());
    let data = figures(loaded);
    (1..epochs.len())
        .map(|i| {
            let added = epochs[i] - epochs[i - 1];
            let one = pricing::estimate(Some(added), &data, loaded.price);
            LaterRung {
                rung: i as u32,
                epochs: epochs[i],
                configurations: sizes[i],
                estimated_trained_tokens: one.trained_tokens * sizes[i] as u64,
                estimated_training_cost_usd: one.training_usd.map(|u| u * sizes[i] as f64),
                proposed: false,
            }
        })
        .filter(|later| !rows.iter().any(|r| r.rung == Some(later.rung)))
        .collect()
}

/// What a Bayesian or asynchronous-halving search adds beyond `rows`, at
/// most: Bayesian search, `runs` less the rows, each of the space's most
/// epochs; ASHA, the first rung's configurations not planned yet, and each
/// later rung at most ceil(1/eta) of the one before (the rule promotes
/// floor(n/eta)), each training its rung's added epochs. `None` for the
/// other strategies.
fn proposed_later(loaded: &LoadedSweep, rows: &[PlanRow]) -> Option<Vec<LaterRung>> {
    let data = figures(loaded);
    let later = |rung: u32, epochs: Option<u32>, added: Option<u32>, n: usize| {
        let one = pricing::estimate(added, &data, loaded.price);
        LaterRung {
            rung,
            epochs: epochs.unwrap_or(one.epochs),
            configurations: n,
            estimated_trained_tokens: one.trained_tokens * n as u64,
            estimated_training_cost_usd: one.training_usd.map(|u| u * n as f64),
            proposed: true,
        }
    };
    match &loaded.sweep.search {
        crate::spec::Search::Bayes { runs, .. } => {
            let n = (*runs as usize).saturating_sub(rows.iter().filter(|r| r.rung.is_none()).count());
            // The most epochs a proposal may train: `auto` is the cookbook's estimate.
            let axis = loaded.sweep.hyperparameters.iter().find(|a| a.name == crate::space::N_EPOCHS);
            let most = |x: Option<f64>| pricing::estimate(x.map(|x| x as u32), &data, loaded.price).epochs;
            let epochs = match axis.map(|a| &a.domain) {
                Some(crate::space::Domain::Values(v)) => v.iter().map(|&x| most(x)).max(),
                Some(crate::space::Domain::Uniform(_, hi) | crate::space::Domain::LogUniform(_, hi)) => {
                    Some(*hi as u32)
                }
                None => None,
            };
            Some(if n == 0 { Vec::new() } else { vec![later(0, epochs, epochs, n)] })
        }
        crate::spec::Search::Asha { halving: h, .. } => {
            let configurations = crate::plan::asha_configurations(&loaded.sweep, &loaded.identity);
            let total = configurations.map_or(h.draws.unwrap_or(1) as usize, |c| c.len());
            let epochs = crate::plan::rung_epochs(h);
            let sizes = crate::plan::rung_sizes(h, total);
            let out = (0..epochs.len())
                .map(|i| {
                    let planned = rows.iter().filter(|r| r.rung == Some(i as u32)).count();
                    let added = epochs[i] - if i == 0 { 0 } else { epochs[i - 1] };
                    later(i as u32, Some(epochs[i]), Some(added), sizes[i].saturating_sub(planned))
                })
                .filter(|l| l.configurations > 0)
                .collect();
            Some(out)
        }
        _ => None,
    }
}

/// The seed replicates planned after the search, at most: (runs, trained
/// tokens, training USD). A replicate trains its run's whole chain again (the
/// job a checkpoint comes from, the rungs a continuation continues): its
/// runs count each, and its tokens are those of one job of the sweep's most
/// epochs. `None` without replicates, or when `rows` hold them already.
pub fn replicates_estimate(loaded: &LoadedSweep, rows: &[PlanRow]) -> Option<(usize, u64, Option<f64>)> {
    let r = loaded.sweep.replicates.as_ref()?;
    // Rows after the first rung's are later rungs (with a rung) or replicates.
    if rows.iter().skip(loaded.runs.len()).any(|row| row.rung.is_none()) {
        return None;
    }
    let epochs = match &loaded.sweep.search {
        crate::spec::Search::SuccessiveHalving(h) => Some(h.max_epochs),
        _ => loaded.runs.iter().filter_map(|r| r.config.n_epochs).max(),
    };
    // The chains' lengths, longest first: a leader of rung i has i + 1 runs,
    // a checkpoint run 2 (its job's and its own), a run with its own job 1.
    let mut lengths: Vec<usize> = match &loaded.sweep.search {
        crate::spec::Search::SuccessiveHalving(h) => crate::plan::rung_sizes(h, loaded.runs.len())
            .into_iter()
            .enumerate()
            .flat_map(|(rung, size)| std::iter::repeat_n(rung + 1, size))
            .collect(),
        _ => loaded.runs.iter().map(|r| if r.origin.source().is_some() { 2 } else { 1 }).collect(),
    };
    lengths.sort_unstable_by(|a, b| b.cmp(a));
    let leaders = lengths.len().min(r.top as usize);
    let chains = leaders * r.seeds.len();
    let n = lengths.iter().take(leaders).sum::<usize>() * r.seeds.len();
    let one = pricing::estimate(epochs, &figures(loaded), loaded.price);
    Some((n, one.trained_tokens * chains as u64, one.training_usd.map(|u| u * chains as f64)))
}

/// The models a sweep deploys for their evaluation (Azure's deployments,
/// Together's dedicated endpoints) and what they cost while they exist.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Deployments {
    /// `deployment` (Azure) or `dedicated endpoint` (Together).
    pub kind: &'static str,
    /// Whether `count` is at most what is made (Together's `inference =
    /// "auto"` makes an endpoint only for a model serverless does not serve;
    /// checkpoints: the most that can be kept).
    pub upper_bound: bool,
    /// Models of the whole sweep: runs, checkpoints evaluated besides, the baseline.
    pub runs: u64,
    pub checkpoints: u64,
    pub baseline: u64,
    pub count: u64,
    /// The same, of the runs still to train (and the baseline).
    pub to_train_count: u64,
    pub minutes_each: f64,
    /// The hosting fee of a fine-tuned model's deployment or endpoint, per
    /// hour; `None`: unknown.
    pub usd_per_hour: Option<f64>,
    /// The base model's deployment bills tokens only (Azure), so it adds no fee.
    pub baseline_usd_per_hour: Option<f64>,
    pub estimated_cost_usd: Option<f64>,
    pub to_train_estimated_cost_usd: Option<f64>,
    /// Azure: the SKU and capacity of a fine-tuned model's deployment, the
    /// baseline's SKU or the existing deployment it uses.
    pub sku: Option<String>,
    pub capacity: Option<u32>,
    pub baseline_sku: Option<String>,
    pub baseline_deployment: Option<String>,
    /// Together: the inference mode and the endpoints' hardware.
    pub inference: Option<&'static str>,
    pub hardware: Option<String>,
}

/// The earlier checkpoints a job's evaluation adds, at most: Azure keeps
/// the last three epochs' (one is the final model); Together saves
/// `n_checkpoints` (default 1, the final model).
fn extra_checkpoints(sweep: &Sweep, row: &PlanRow) -> u64 {
    if !sweep.evaluation.checkpoints || row.origin == "checkpoint" {
        return 0;
    }
    match sweep.provider {
        ProviderKind::Azure => u64::from(row.n_epochs.unwrap_or(3).min(3)).saturating_sub(1),
        ProviderKind::Together => row.config.get("n_checkpoints").map_or(1, |v| v.as_f64() as u64).saturating_sub(1),
        _ => 0,
    }
}

/// The deployments of an Azure sweep, or the dedicated endpoints of a
/// Together sweep that makes them; `None` for other sweeps and Together's
/// serverless inference.
pub fn deployments(sweep: &Sweep, rows: &[PlanRow], later_runs: usize) -> Option<Deployments> {
    let (kind, upper, minutes, rate, baseline, baseline_rate) = match (&sweep.azure, &sweep.together) {
        (Some(a), _) => {
            let baseline = u64::from(sweep.evaluation.baseline && a.baseline_deployment.is_none());
            (
                "deployment",
                sweep.evaluation.checkpoints,
                a.deployment_minutes,
                a.deployment_usd_per_hour,
                baseline,
                Some(0.0),
            )
        }
        (None, Some(t)) => match t.inference {
            TogetherInference::Serverless => return None,
            // The base model answers serverless by its name.
            TogetherInference::Dedicated => (
                "dedicated endpoint",
                sweep.evaluation.checkpoints,
                t.endpoint_minutes,
                t.endpoint_usd_per_hour,
                0,
                None,
            ),
            TogetherInference::Auto => {
                ("dedicated endpoint", true, t.endpoint_minutes, t.endpoint_usd_per_hour, 0, None)
            }
        },
        _ => return None,
    };
    let count = |rows: &[&PlanRow], later: usize| -> (u64, u64) {
        (rows.len() as u64 + later as u64, rows.iter().map(|r| extra_checkpoints(sweep, r)).sum())
    };
    let all: Vec<&PlanRow> = rows.iter().collect();
    let pending: Vec<&PlanRow> = rows.iter().filter(|r| r.to_train).collect();
    let (runs, checkpoints) = count(&all, later_runs);
    let (pending_runs, pending_checkpoints) = count(&pending, later_runs);
    let baseline_cost =
        if baseline == 0 { Some(0.0) } else { pricing::deployment_cost(baseline, minutes, baseline_rate) };
    let cost = |models: u64| pricing::total([pricing::deployment_cost(models, minutes, rate), baseline_cost]);
    Some(Deployments {
        kind,
        upper_bound: upper,
        runs,
        checkpoints,
        baseline,
        count: runs + checkpoints + baseline,
        to_train_count: pending_runs + pending_checkpoints + baseline,
        minutes_each: minutes,
        usd_per_hour: rate,
        baseline_usd_per_hour: sweep.azure.as_ref().map(|_| 0.0),
        estimated_cost_usd: cost(runs + checkpoints),
        to_train_estimated_cost_usd: cost(pending_runs + pending_checkpoints),
        sku: sweep.azure.as_ref().map(|a| a.deployment_sku.clone()),
        capacity: sweep.azure.as_ref().map(|a| a.deployment_capacity),
        baseline_sku: sweep.azure.as_ref().filter(|a| a.baseline_deployment.is_none()).map(|a| a.baseline_sku.clone()),
        baseline_deployment: sweep.azure.as_ref().and_then(|a| a.baseline_deployment.clone()),
        inference: sweep.together.as_ref().map(|t| match t.inference {
            TogetherInference::Auto => "auto",
            TogetherInference::Serverless => "serverless",
            TogetherInference::Dedicated => "dedicated",
        }),
        hardware: sweep.together.as_ref().map(|t| t.endpoint_hardware.clone()),
    })
}

/// The `request_fields` of `plan --json`: each written hyperparameter and
/// the field it becomes with each hosted provider (`null`: not taken).
fn request_fields_json(sweep: &Sweep) -> serde_json::Value {
    let fields: Vec<serde_json::Value> = sweep
        .hyperparameters
        .written()
        .map(|name| {
            let mut o = serde_json::Map::new();
            o.insert("name".into(), name.into());
            let field = |p| crate::space::request_field_for(p, sweep.method, name);
            o.insert("field".into(), field(sweep.provider).into());
            for p in report::HOSTED {
                o.insert(p.as_str().into(), field(p).into());
            }
            serde_json::Value::Object(o)
        })
        .collect();
    fields.into()
}

/// Whether `plan` compares the request fields: a sweep on a hosted provider.
fn hosted(provider: ProviderKind) -> bool {
    report::HOSTED.contains(&provider)
}

/// Σ of `f` over the rows, `None` when any is unknown.
fn sum(rows: &[&PlanRow], f: impl Fn(&PlanRow) -> Option<f64>) -> Option<f64> {
    pricing::total(rows.iter().map(|r| f(r)))
}

pub fn run(cli: &Cli, args: &Args) -> Result<ExitStatus> {
    let loaded = sweepfile::load(&args.sweep)?;
    note_missing_key(&loaded)?;
    warn_local_coverage(&loaded)?;
    let rows = rows(cli, &loaded)?;
    let totals = totals(&loaded, &rows);
    if args.json {
        print_json(&loaded, &rows, &totals)?;
        return Ok(ExitStatus::Success);
    }
    print_table(&loaded, &rows, &totals)?;
    Ok(ExitStatus::Success)
}

/// How many validation references a local sweep's classifier can give (`None` for other providers).
pub fn local_coverage(loaded: &LoadedSweep) -> Option<Coverage> {
    (loaded.sweep.provider == ProviderKind::Local)
        .then(|| labels::coverage(&loaded.training.conversations, &loaded.validation.conversations))
}

/// Warns on stderr when the local provider cannot give some validation references (`plan`, `run`
/// and `resume`).
pub fn warn_local_coverage(loaded: &LoadedSweep) -> Result<()> {
    if let Some(warning) = local_coverage(loaded).and_then(|c| c.warning()) {
        errln!("warning: {warning}")?;
    }
    Ok(())
}

/// Refuses a key that `run` would refuse, and notes its absence: no key yet is fine for a plan.
fn note_missing_key(loaded: &LoadedSweep) -> Result<()> {
    let var = match (&loaded.sweep.provider, &loaded.sweep.command) {
        (ProviderKind::OpenAi, _) => &loaded.sweep.openai.api_key_env,
        (ProviderKind::Command, Some(CommandSettings { inference_api_key_env: Some(var), .. })) => var,
        (ProviderKind::Together | ProviderKind::Azure, _) => match super::hosted::key_variable(&loaded.sweep) {
            Some(var) => var,
            None => return Ok(()),
        },
        _ => return Ok(()),
    };
    if super::run::read_api_key(var)?.is_none() {
        errln!("note: the environment variable `{var}` is not set: `ftsweep run` will need it")?;
    }
    Ok(())
}

/// The `engine` object of `plan --json`.
fn engine_json(engine: &Engine) -> serde_json::Value {
    match engine {
        Engine::Local(l) => serde_json::json!({ "type": "local", "gpus": l.gpus }),
        Engine::Ray(r) => serde_json::json!({
            "type": "ray",
            "address": r.address,
            "num_gpus": r.num_gpus,
            "num_cpus": r.num_cpus,
            "runtime_env": r.runtime_env,
        }),
    }
}

/// The engine in a sentence, for the plan's table.
fn engine_line(engine: &Engine) -> String {
    match engine {
        Engine::Local(l) if l.gpus.is_empty() => {
            "engine: local (a detached process per run attempt), no GPU: the jobs are given none".to_string()
        }
        Engine::Local(l) => {
            let gpus: Vec<String> = l.gpus.iter().map(u32::to_string).collect();
            format!(
                "engine: local (a detached process per run attempt), GPUs {}: one job on each at a time \
                 (CUDA_VISIBLE_DEVICES)",
                gpus.join(", ")
            )
        }
        Engine::Ray(r) => {
            let gpus = if r.num_gpus == 0.0 {
                "num_gpus 0: the jobs get no GPU (set `num_gpus` under [engine] to ask for one)".to_string()
            } else {
                format!("{} GPU(s) per job", r.num_gpus)
            };
            format!(
                "engine: Ray jobs at {}, {gpus}; {} CPU(s) per job{}",
                r.address,
                r.num_cpus,
                if r.runtime_env.is_some() { "; with the file's runtime_env" } else { "" }
            )
        }
    }
}

/// What a command sweep runs, where it writes and what evaluates it.
fn print_command(name: &str, c: &CommandSettings) -> Result<()> {
    outln!("{}", engine_line(&c.engine))?;
    outln!("output: each run attempt trains into {}/{name}/<run id>/attempt-<n>", c.output_root.display())?;
    outln!(
        "inference: {} loads each model as a LoRA adapter{}",
        c.inference_url,
        match &c.inference_api_key_env {
            Some(var) => format!(" (key from `{var}`)"),
            None => String::new(),
        }
    )?;
    outln!(
        "no price: a trainer command trains on your own hardware; the estimates are trained tokens, and USD \
         limits (`budget_usd`, `confirm_above_usd`) do not apply"
    )?;
    Ok(())
}

/// The plan's figures over its rows and the rungs and replicates planned later.
struct Totals {
    data: DataFigures,
    /// How many rows are still to train.
    to_train: usize,
    baseline_eval: Option<f64>,
    later: Vec<LaterRung>,
    /// The runs of the later rungs and the replicates.
    later_runs: usize,
    replicates: Option<(usize, u64, Option<f64>)>,
    total_tokens: u64,
    pending_tokens: u64,
    total_cost: Option<f64>,
    pending_cost: Option<f64>,
    eval_calls: u64,
    jobs: usize,
    /// What the same runs would train with a job each, from the base model.
    unshared_tokens: u64,
    /// The deployments or dedicated endpoints the evaluations make (in the costs above).
    deployments: Option<Deployments>,
}

/// Adds up the plan's tokens, costs, evaluation calls and jobs.
fn totals(loaded: &LoadedSweep, rows: &[PlanRow]) -> Totals {
    let data = figures(loaded);
    let all: Vec<&PlanRow> = rows.iter().collect();
    let pending: Vec<&PlanRow> = rows.iter().filter(|r| r.to_train).collect();
    let baseline_eval = loaded.price.map(|p| pricing::eval_cost(&data, p));
    let later = later_rungs(loaded, rows);
    let later_tokens: u64 = later.iter().map(|r| r.estimated_trained_tokens).sum();
    let later_usd: Option<f64> = pricing::total(
        later
            .iter()
            .map(|r| r.estimated_training_cost_usd.zip(baseline_eval).map(|(t, e)| t + e * r.configurations as f64)),
    );
    let mut later_runs: usize = later.iter().map(|r| r.configurations).sum();
    let replicates = replicates_estimate(loaded, rows);
    let (later_tokens, later_usd) = match replicates {
        Some((n, tokens, usd)) => {
            later_runs += n;
            (later_tokens + tokens, later_usd.zip(usd).zip(baseline_eval).map(|((a, b), e)| a + b + e * n as f64))
        }
        None => (later_tokens, later_usd),
    };
    let total_tokens: u64 = rows.iter().map(|r| r.estimated_trained_tokens).sum::<u64>() + later_tokens;
    let pending_tokens: u64 = pending.iter().map(|r| r.estimated_trained_tokens).sum::<u64>() + later_tokens;
    // The base model is evaluated once per sweep, as the baseline.
    let deployments = deployments(&loaded.sweep, rows, later_runs);
    let (deployed, pending_deployed) = match &deployments {
        Some(d) => (d.estimated_cost_usd, d.to_train_estimated_cost_usd),
        None => (Some(0.0), Some(0.0)),
    };
    let total_cost = sum(&all, |r| r.estimated_cost_usd)
        .zip(baseline_eval)
        .zip(later_usd)
        .zip(deployed)
        .map(|(((a, b), c), d)| a + b + c + d);
    let pending_cost =
        sum(&pending, |r| r.estimated_cost_usd).zip(later_usd).zip(pending_deployed).map(|((a, c), d)| a + c + d);
    let eval_calls = data.eval_examples * ((rows.len() + later_runs) as u64 + 1);
    // What the same runs would train with a job each, from the base model.
    let jobs = rows.iter().filter(|r| r.origin != "checkpoint").count() + later_runs;
    let unshared_tokens: u64 =
        rows.iter().map(|r| pricing::estimate(r.n_epochs, &data, loaded.price).trained_tokens).sum::<u64>()
            + later
                .iter()
                .map(|r| pricing::estimate(Some(r.epochs), &data, None).trained_tokens * r.configurations as u64)
                .sum::<u64>()
            + replicates.map_or(0, |r| r.1);
    Totals {
        data,
        to_train: pending.len(),
        baseline_eval,
        later,
        later_runs,
        replicates,
        total_tokens,
        pending_tokens,
        total_cost,
        pending_cost,
        eval_calls,
        jobs,
        unshared_tokens,
        deployments,
    }
}

/// Prints the plan as one JSON object.
fn print_json(loaded: &LoadedSweep, rows: &[PlanRow], t: &Totals) -> Result<()> {
    let data = &t.data;
    let out = serde_json::json!({
        "sweep": loaded.sweep.name,
        "provider": loaded.sweep.provider.as_str(),
        "base_model": loaded.sweep.base_model,
        "method": loaded.sweep.method.as_str(),
        "training_examples": data.examples,
        "validation_examples": data.eval_examples,
        "billing_tokens_per_epoch": data.billing_tokens,
        "price_per_million": loaded.price,
        "prices_as_of": pricing::source(loaded.sweep.provider, loaded.sweep.pricing.is_some()).filter(|_| loaded.price.is_some()),
        "estimated_trained_tokens": t.total_tokens,
        "estimated_cost_usd": t.total_cost,
        "estimated_baseline_eval_cost_usd": t.baseline_eval,
        "to_train": t.to_train,
        "to_train_estimated_trained_tokens": t.pending_tokens,
        "to_train_estimated_cost_usd": t.pending_cost,
        "evaluation_calls": t.eval_calls,
        "jobs": t.jobs,
        "estimated_trained_tokens_with_a_job_per_run": t.unshared_tokens,
        "later_rungs": t.later,
        "local_coverage": local_coverage(loaded),
        "runs": rows,
    });
    let mut out = out;
    if let Some(map) = out.as_object_mut().filter(|_| hosted(loaded.sweep.provider)) {
        map.insert("request_fields".into(), request_fields_json(&loaded.sweep));
        map.insert("deployments".into(), serde_json::to_value(&t.deployments)?);
    }
    if let (Some(c), Some(map)) = (&loaded.sweep.command, out.as_object_mut()) {
        map.insert("prices_as_of".into(), serde_json::Value::Null);
        map.insert("engine".into(), engine_json(&c.engine));
        map.insert(
            "command".into(),
            serde_json::json!({
                "train": c.train,
                "config_template": c.config_template,
                "output_root": c.output_root,
                "inference_url": c.inference_url,
                "inference_api_key_env": c.inference_api_key_env,
            }),
        );
    }
    outln!("{}", serde_json::to_string_pretty(&out)?)?;
    Ok(())
}

/// Prints the plan's table, then its later rungs, replicates, totals and prices.
fn print_table(loaded: &LoadedSweep, rows: &[PlanRow], t: &Totals) -> Result<()> {
    outln!("{}", report::plan_table(rows))?;
    let s = &loaded.sweep;
    if let Some(line) = launch_order_line(rows, s.limits.max_concurrent) {
        outln!("{line}")?;
    }
    if s.method == crate::space::Method::Dpo {
        outln!(
            "method: dpo (preference pairs; the trained tokens count both outputs, and evaluation grades against the \
             preferred output)"
        )?;
    }
    // A command sweep has no price: its amounts are not shown as unknown.
    let usd = |x: Option<f64>| match s.command {
        Some(_) => String::new(),
        None => format!(", {}", report::format_usd(x)),
    };
    match &s.search {
        crate::spec::Search::Bayes { runs, startup } => {
            let n = t.later.first().map_or(0, |l| l.configurations);
            outln!(
                "bayes: {} of {runs} runs planned now (the first {startup} are drawn at random, then the model proposes); \
                 {n} more proposed as results land, proposal i seeing the results of runs 0..i-{}",
                runs.saturating_sub(n as u32),
                s.limits.max_concurrent
            )?;
        }
        crate::spec::Search::Asha { halving: h, .. } => outln!(
            "asha: asynchronous successive halving (eta {}): whenever a slot is free, a configuration in the top 1/{} \
             of its rung's results so far continues; otherwise a new configuration starts at {} epoch(s)",
            h.eta,
            h.eta,
            h.min_epochs
        )?,
        _ => {}
    }
    for r in t.later.iter().filter(|r| r.proposed) {
        outln!(
            "{}: at most {} more configurations, each at most {} epochs (~{} trained tokens at most{})",
            if matches!(s.search, crate::spec::Search::Bayes { .. }) {
                "proposed as results land".to_string()
            } else {
                format!("rung {}", r.rung)
            },
            r.configurations,
            r.epochs,
            r.estimated_trained_tokens,
            usd(r.estimated_training_cost_usd)
        )?;
    }
    for r in t.later.iter().filter(|r| !r.proposed) {
        outln!(
            "rung {}: the best {} configurations continue from their own models to {} epochs (~{} trained tokens{})",
            r.rung,
            r.configurations,
            r.epochs,
            r.estimated_trained_tokens,
            usd(r.estimated_training_cost_usd)
        )?;
    }
    if let (Some((n, tokens, cost)), Some(r)) = (t.replicates, &s.replicates) {
        outln!(
            "replicates: after the search, the top {} configuration(s) train again with seeds {:?}: {n} more \
             runs, at most ~{tokens} trained tokens{}",
            r.top,
            r.seeds,
            if s.command.is_some() { String::new() } else { format!(" ({})", report::format_usd(cost)) }
        )?;
    }
    print_totals(rows, t, s.command.is_none())?;
    if let Some(c) = &s.command {
        return print_command(&s.name, c);
    }
    match loaded.price {
        Some(p) => outln!(
            "prices for `{}` (USD per 1M tokens): training {}, input {}, output {} ({})",
            s.base_model,
            p.training,
            p.input,
            p.output,
            if s.pricing.is_some() {
                "from the sweep file"
            } else {
                pricing::source(s.provider, false).unwrap_or(PRICES_AS_OF)
            }
        ),
        None => outln!(
            "no price is known for `{}`{}: add a [pricing] table to the sweep file to estimate the cost",
            s.base_model,
            match s.provider {
                ProviderKind::Together => " (ftsweep commits no Together rates; see together.ai/pricing)",
                _ => "",
            }
        ),
    }?;
    if hosted(s.provider) {
        print_hosted(s, t.deployments.as_ref())?;
    }
    if rows.iter().any(|r| r.epochs_estimated) {
        outln!("~ marks \"auto\" epochs, estimated with OpenAI's cookbook heuristic (not an API contract)")?;
    }
    Ok(())
}

/// The order the runs to train start in when slots are scarce: longest job
/// first (by its estimated trained tokens; ties in plan order), each with its
/// share of the tokens; `None` when at most one job trains or all fit at once.
fn launch_order_line(rows: &[PlanRow], max_concurrent: u32) -> Option<String> {
    // Each by its number in the table.
    let jobs: Vec<(usize, &PlanRow)> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.to_train && r.origin != "checkpoint")
        .map(|(i, r)| (i + 1, r))
        .collect();
    if jobs.len() <= (max_concurrent.max(1) as usize) {
        return None;
    }
    let total: u64 = jobs.iter().map(|(_, r)| r.estimated_trained_tokens).sum::<u64>().max(1);
    let order = crate::sweep::launch_order(&jobs, |(_, r)| Some(r.estimated_trained_tokens));
    const SHOWN: usize = 12;
    let mut names: Vec<String> = order
        .iter()
        .take(SHOWN)
        .map(|&i| format!("#{} {:.0}%", jobs[i].0, 100.0 * jobs[i].1.estimated_trained_tokens as f64 / total as f64))
        .collect();
    if order.len() > SHOWN {
        names.push(format!("… {} more", order.len() - SHOWN));
    }
    Some(format!(
        "launch order ({} at a time, longest job first; run # and share of the trained tokens): {}",
        max_concurrent.max(1),
        names.join(", ")
    ))
}

/// What a hosted sweep's hyperparameters become in each provider's request,
/// and how its models answer: Together's inference mode, Azure's deployments.
fn print_hosted(s: &Sweep, deployments: Option<&Deployments>) -> Result<()> {
    let names: Vec<&str> = s.hyperparameters.written().collect();
    outln!("request fields (what each hyperparameter becomes; `-`: not taken, switching `provider` would refuse it):")?;
    outln!("{}", report::request_fields_table(s.provider, s.method, &names))?;
    if let Some(t) = &s.together {
        outln!(
            "{}",
            match t.inference {
                TogetherInference::Serverless => {
                    "inference: serverless, each model by its output name (no dedicated endpoints)".to_string()
                }
                TogetherInference::Dedicated => format!(
                    "inference: a dedicated endpoint ({}) per model, created before its evaluation and deleted after",
                    t.endpoint_hardware
                ),
                TogetherInference::Auto => format!(
                    "inference: auto, serverless by the output name, else a dedicated endpoint ({}) created for \
                     the evaluation and deleted after",
                    t.endpoint_hardware
                ),
            }
        )?;
    }
    if let Some(a) = &s.azure {
        outln!(
            "inference: each model through a deployment (SKU {}, capacity {}) made for its evaluation and deleted \
             after; the baseline {}",
            a.deployment_sku,
            a.deployment_capacity,
            match &a.baseline_deployment {
                Some(d) => format!("through the existing deployment `{d}` (never deleted)"),
                None => format!("through a deployment of the base model (SKU {}, deleted after)", a.baseline_sku),
            }
        )?;
    }
    let Some(d) = deployments else { return Ok(()) };
    let mut parts = vec![format!("{} runs", d.runs)];
    if d.checkpoints > 0 {
        parts.push(format!("{} checkpoints", d.checkpoints));
    }
    if d.baseline > 0 {
        parts.push("the baseline".into());
    }
    let rate = match d.usd_per_hour {
        Some(r) => format!("${r}/h"),
        None => "an unknown hourly price".into(),
    };
    outln!(
        "{}: {}{} {}s ({}) × {} min at {rate}{}: {}",
        if d.kind == "deployment" { "deployments" } else { "dedicated endpoints" },
        if d.upper_bound { "at most " } else { "" },
        d.count,
        d.kind,
        parts.join(" + "),
        d.minutes_each,
        if d.baseline > 0 { " (the base model's deployment bills tokens only: no hosting fee)" } else { "" },
        report::format_usd(d.estimated_cost_usd)
    )?;
    if d.usd_per_hour.is_none() {
        let key = if d.kind == "deployment" {
            "`deployment_usd_per_hour` under [azure] (the SKU's hosting fee)"
        } else {
            "`endpoint_usd_per_hour` under [together] (the hardware's rate on together.ai/pricing)"
        };
        outln!("the hourly price of a {} is unknown, so is the total: set {key}", d.kind)?;
    }
    Ok(())
}

/// Prints the lines of totals: the tokens jobs share, the runs to train and their cost (`priced`:
/// unless the sweep has no price at all), the evaluation calls.
fn print_totals(rows: &[PlanRow], t: &Totals, priced: bool) -> Result<()> {
    let (jobs, total_tokens, unshared_tokens) = (t.jobs, t.total_tokens, t.unshared_tokens);
    if jobs < rows.len() + t.later_runs || !t.later.is_empty() {
        outln!(
            "{} runs from {jobs} jobs: ~{total_tokens} trained tokens, against ~{unshared_tokens} with a job per run \
             trained from the base model ({:.0}% saved)",
            rows.len() + t.later_runs,
            100.0 * (1.0 - total_tokens as f64 / unshared_tokens.max(1) as f64)
        )?;
    }
    let what = if t.deployments.is_some() { "training, evaluation and deployments" } else { "training and evaluation" };
    let cost = if !priced {
        String::new()
    } else if t.to_train < rows.len() {
        format!(
            ", estimated {} for {what} (the whole sweep: {})",
            report::format_usd(t.pending_cost),
            report::format_usd(t.total_cost)
        )
    } else {
        format!(", estimated {} for {what}", report::format_usd(t.pending_cost))
    };
    outln!(
        "{} runs ({} to train): ~{} trained tokens{cost}",
        rows.len() + t.later_runs,
        t.to_train + t.later_runs,
        t.pending_tokens,
    )?;
    outln!(
        "evaluation: {} chat completions ({} validation examples × {} runs + the base model as baseline)",
        t.eval_calls,
        t.data.eval_examples,
        rows.len() + t.later_runs
    )?;
    Ok(())
}
