//! ftsweep: hyperparameter sweeps of model fine-tunes, and picking the model
//! to deploy.
//!
//! Layout, in reading order:
//! - [`spec`]: the sweep file (TOML), parsed and validated; pure.
//! - [`plan`]: a sweep expanded into runs with stable ids, checkpoint sharing,
//!   halving rungs and replicates; pure.
//! - [`stopping`]: early stopping rules over validation metrics; pure.
//! - [`data`]: chat JSONL files, hashes and token counts.
//! - [`pricing`]: the dated price table and cost arithmetic; pure.
//! - [`store`]: the SQLite database; the only module with SQL.
//! - [`provider`]: who trains and answers (the local CPU trainer).
//! - [`sweep`]: the scheduler and the run state machine.
//! - [`eval`]: graders, the evaluation runner and its caches.
//! - [`stats`]: intervals and paired tests; pure.
//! - [`rank`] and [`report`]: ordering, ties, the best pick, rendering; pure.
//! - [`html`]: the sweep report as one self-contained HTML page with SVG plots; pure.
//! - [`files`]: files written whole or not at all.
//! - [`serve`]: the OpenAI protocol served over the local provider.
//! - [`cli`]: the command line; the only module that prints.

pub mod bayes;
pub mod cli;
pub mod data;
pub mod eval;
pub mod files;
pub mod html;
pub mod plan;
pub mod pricing;
pub mod provider;
pub mod rank;
pub mod report;
pub mod run;
pub mod serve;
pub mod space;
pub mod spec;
pub mod stats;
pub mod stopping;
pub mod store;
pub mod sweep;
pub mod template;
pub mod wire;
