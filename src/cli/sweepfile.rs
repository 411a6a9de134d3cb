//! Loading a sweep for `plan` and `run`: the file, its data, its runs. All
//! checks happen here, before anything is written.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;

use super::UsageError;
use crate::data::{self, ChatFile, DataError};
use crate::plan::{self, DataIdentity, PlannedRun};
use crate::spec::{self, Sweep};

/// A sweep file with its data read and its runs expanded.
pub struct LoadedSweep {
    pub path: PathBuf,
    pub text: String,
    pub sweep: Sweep,
    pub training: Arc<ChatFile>,
    pub validation: Arc<ChatFile>,
    pub runs: Vec<PlannedRun>,
}

pub fn load(path: &Path) -> Result<LoadedSweep> {
    let text = std::fs::read_to_string(path).map_err(|e| UsageError {
        message: format!("cannot read the sweep file `{}`: {e}", path.display()),
        hint: "give the path of a sweep TOML file, e.g. sweeps/quickstart.toml".into(),
    })?;
    let sweep = spec::parse(path, &text)?;
    let training = read(&sweep.training_file, "training_file")?;
    let validation = read(&sweep.validation_file, "validation_file")?;
    let identity =
        DataIdentity { training_sha256: training.sha256.clone(), validation_sha256: validation.sha256.clone() };
    let runs = plan::expand(&sweep, &identity);
    Ok(LoadedSweep {
        path: path.to_path_buf(),
        text,
        sweep,
        training: Arc::new(training),
        validation: Arc::new(validation),
        runs,
    })
}

fn read(path: &Path, key: &str) -> Result<ChatFile> {
    if !path.is_file() {
        return Err(DataError {
            path: path.to_path_buf(),
            line: None,
            message: format!("the file named by `{key}` does not exist"),
            hint: format!("check `{key}` in the sweep file: the path is relative to the sweep file's folder"),
        }
        .into());
    }
    Ok(data::read_chat_file(path)?)
}
