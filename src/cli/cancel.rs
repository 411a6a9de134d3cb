//! `ftsweep cancel NAME`: cancel a sweep's running jobs at the provider and
//! mark their runs cancelled.

use std::path::Path;

use anyhow::Result;

use super::out::errln;
use super::run::{command_provider, openai_provider};
use super::{Cli, ExitStatus, UsageError, open_sweep_for_writing};
use crate::provider::Provider;
use crate::run::RunState;
use crate::spec::ProviderKind;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sweep's name.
    pub sweep: String,
}

pub fn run(cli: &Cli, args: &Args) -> Result<ExitStatus> {
    let (store, sweep) = open_sweep_for_writing(&cli.db, &args.sweep)?;
    let spec = crate::spec::parse(Path::new(&sweep.spec_path), &store.lock().sweep_text(sweep.id)?)?;
    if spec.provider == ProviderKind::Local {
        return Err(UsageError {
            message: "local jobs run inside the `ftsweep run` process that started them".into(),
            hint: "stop that process with Ctrl-C (its runs are recorded and resume later)".into(),
        }
        .into());
    }
    let provider = match spec.provider {
        ProviderKind::Command => Provider::Command(command_provider(&spec, 0)?),
        ProviderKind::Together => Provider::Together(super::hosted::together_provider(&spec, store.clone())?),
        ProviderKind::Azure => Provider::Azure(super::hosted::azure_provider(&spec, store.clone())?),
        ProviderKind::Local | ProviderKind::OpenAi => Provider::OpenAi(openai_provider(&spec.openai, store.clone())?),
    };
    provider.bind_sweep(sweep.id, &crate::sweep::owner_id());
    let runs = store.lock().sweep_runs(sweep.id)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut cancelled = 0;
    let mut failed = 0;
    for r in runs.iter().filter(|r| matches!(r.state, RunState::Launching | RunState::Training)) {
        // A run still launching may have a job the database does not know yet.
        let job = match &r.job_id {
            Some(id) => Some(id.clone()),
            None => runtime.block_on(provider.find_job(&crate::sweep::job_tags(&sweep.name, &r.run_id, r.attempt)))?,
        };
        match job {
            Some(job_id) => match runtime.block_on(provider.cancel_job(&job_id)) {
                Ok(()) => {
                    store.lock().set_cancelled(&r.run_id, "cancelled by `ftsweep cancel`", None)?;
                    errln!("{}: job {job_id} cancelled", r.run_id)?;
                    cancelled += 1;
                }
                Err(e) => {
                    errln!("{}: cancelling job {job_id} failed: {e}", r.run_id)?;
                    failed += 1;
                }
            },
            None => {
                store.lock().set_cancelled(&r.run_id, "cancelled by `ftsweep cancel` before its job existed", None)?;
                cancelled += 1;
            }
        }
    }
    // A deployment left by the process that was evaluating is billed while it exists.
    match runtime.block_on(provider.clean_up()) {
        Ok(0) => {}
        Ok(n) => errln!("sweep `{}`: {n} deployment(s) deleted", sweep.name)?,
        Err(e) => {
            errln!("sweep `{}`: deleting its deployments failed: {e}", sweep.name)?;
            failed += 1;
        }
    }
    errln!("sweep `{}`: {cancelled} run(s) cancelled, {failed} could not be", sweep.name)?;
    Ok(if failed > 0 { ExitStatus::Failure } else { ExitStatus::Success })
}
