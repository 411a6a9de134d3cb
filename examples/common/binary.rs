//! Shared by the benchmarks that drive the release binary as a separate process.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The release `ftsweep` binary beside the running example, built if missing.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the example's path");
    let release = exe.parent().and_then(Path::parent).expect("target/release");
    let bin = release.join("ftsweep");
    if !bin.exists() {
        let status = Command::new("cargo").args(["build", "--release", "--bin", "ftsweep"]).status();
        assert!(status.is_ok_and(|s| s.success()), "cannot build the ftsweep binary");
    }
    bin
}
