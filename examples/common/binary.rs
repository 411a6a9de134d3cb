//! Shared by the benchmarks that drive the release binary as a separate process.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `ftsweep` binary to measure: `FTSWEEP_BIN` when set (another build, such as an older
/// commit's), else this build's ([`own_binary`]).
#[allow(dead_code)]
pub fn binary() -> PathBuf {
    match std::env::var_os("FTSWEEP_BIN") {
        Some(bin) if !bin.is_empty() => PathBuf::from(bin),
        _ => own_binary(),
    }
}

/// The release `ftsweep` binary beside the running example, built if missing.
pub fn own_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the example's path");
    let release = exe.parent().and_then(Path::parent).expect("target/release");
    let bin = release.join("ftsweep");
    if !bin.exists() {
        let status = Command::new("cargo").args(["build", "--release", "--bin", "ftsweep"]).status();
        assert!(status.is_ok_and(|s| s.success()), "cannot build the ftsweep binary");
    }
    bin
}
