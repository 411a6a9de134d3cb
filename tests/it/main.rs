//! The one integration-test binary: runs the real `ftsweep` binary in
//! temporary folders against the example data, and checks its outputs and
//! the SQLite database it writes.

mod data;
mod durability;
mod errors;
mod eval;
mod protocol;
mod search;
mod serve;
mod sweep;
mod util;
mod weights;
