//! The one integration-test binary: runs the real `ftsweep` binary in
//! temporary folders against the example data, and checks its outputs and
//! the SQLite database it writes.

mod adapters;
mod asha;
mod azure;
mod bayes;
mod board_scale;
mod board_width;
mod command;
mod command_spec;
mod data;
mod dpo;
mod durability;
mod errors;
mod eval;
mod evalstore;
mod honest;
mod hosted_spec;
mod ids;
mod input;
mod owner;
mod pick;
mod progress;
mod protocol;
mod ray;
mod rayhead;
mod report;
mod search;
mod security;
mod serve;
mod serve_azure;
mod serve_together;
mod space;
mod sweep;
mod tidy;
mod together;
mod toolcalls;
mod tools;
mod util;
mod wall;
mod weights;
