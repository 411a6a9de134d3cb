//! The local model family's output directory by Hugging Face Trainer conventions, written by
//! `ftsweep train` and read by `ftsweep serve`'s adapter endpoints (and by anything that reads a
//! TRL or Axolotl run): `metrics.jsonl` (one `log_history` entry a line, flushed as it is
//! written), `checkpoint-<step>/` at each epoch end (an adapter and its `trainer_state.json`,
//! written under a temporary name and renamed into place), and at the end the final adapter and
//! `trainer_state.json` in the directory itself.
//!
//! An adapter directory holds `adapter_config.json` (`{"peft_type": "FTSWEEP_LOCAL",
//! "base_model_name_or_path": "local/ngram", "format": 1}`) and `adapter_model.ftsweep` (the
//! weights, `ReplyModel::encode` exactly).

use std::fmt;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::trainer::{self, Embedding, ReplyModel, TrainError, TrainEvent};
use super::{BASE_MODEL, VALIDATIONS_PER_EPOCH, example, resolve};
use crate::data::{DataError, read_chat_file};
use crate::files::write_atomically;
use crate::run::RunConfig;

/// The `peft_type` of this family's adapters.
pub const PEFT_TYPE: &str = "FTSWEEP_LOCAL";
/// The version of the adapter directory's layout.
pub const FORMAT: u64 = 1;
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.ftsweep";
pub const TRAINER_STATE: &str = "trainer_state.json";
pub const METRICS: &str = "metrics.jsonl";
/// A checkpoint's directory is `checkpoint-<step>`; it is written as `tmp-checkpoint-<step>`.
pub const CHECKPOINT_PREFIX: &str = "checkpoint-";
const TMP_PREFIX: &str = "tmp-";

/// A directory that is not an adapter of this family, or that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{}`: {message}", path.display())]
pub struct AdapterError {
    /// The directory, or the file in it at fault.
    pub path: PathBuf,
    pub message: String,
}

impl AdapterError {
    fn new(path: &Path, message: impl Into<String>) -> AdapterError {
        AdapterError { path: path.to_path_buf(), message: message.into() }
    }
}

/// `adapter_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub peft_type: String,
    pub base_model_name_or_path: String,
    pub format: u64,
}

/// Writes `model` as an adapter into `dir` (made if missing): the weights first, then
/// `adapter_config.json`, each under a temporary name renamed into place.
pub fn write_adapter(dir: &Path, model: &ReplyModel) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_atomically(&dir.join(ADAPTER_WEIGHTS), &model.encode(Embedding::Exact))?;
    let config =
        AdapterConfig { peft_type: PEFT_TYPE.into(), base_model_name_or_path: BASE_MODEL.into(), format: FORMAT };
    write_atomically(&dir.join(ADAPTER_CONFIG), &pretty(&config))
}

/// Reads the adapter in `dir`: an existing directory holding this family's `adapter_config.json`
/// and `adapter_model.ftsweep`.
pub fn read_adapter(dir: &Path) -> Result<ReplyModel, AdapterError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(AdapterError::new(dir, "not a directory (an adapter is a directory)")),
        Err(e) => return Err(AdapterError::new(dir, format!("cannot read the directory: {e}"))),
    }
    let config_path = dir.join(ADAPTER_CONFIG);
    let text = match std::fs::read(&config_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(AdapterError::new(dir, format!("no {ADAPTER_CONFIG} in the directory: not an adapter")));
        }
        Err(e) => return Err(AdapterError::new(&config_path, format!("cannot read it: {e}"))),
    };
    let config: Value =
        serde_json::from_slice(&text).map_err(|e| AdapterError::new(&config_path, format!("not valid JSON: {e}")))?;
    let peft_type = config.get("peft_type").and_then(Value::as_str);
    if peft_type != Some(PEFT_TYPE) {
        let found = peft_type.map_or("none".to_string(), |t| format!("`{t}`"));
        return Err(AdapterError::new(
            &config_path,
            format!("peft_type is {found}: this server loads only the local model family's adapters ({PEFT_TYPE})"),
        ));
    }
    match config.get("format").and_then(Value::as_u64) {
        Some(FORMAT) => {}
        other => {
            let found = other.map_or("missing".to_string(), |f| f.to_string());
            return Err(AdapterError::new(&config_path, format!("format {found}: this ftsweep reads format {FORMAT}")));
        }
    }
    let base = config.get("base_model_name_or_path").and_then(Value::as_str);
    if base != Some(BASE_MODEL) {
        let found = base.map_or("none".to_string(), |b| format!("`{b}`"));
        return Err(AdapterError::new(&config_path, format!("base_model_name_or_path is {found}, not `{BASE_MODEL}`")));
    }
    let weights_path = dir.join(ADAPTER_WEIGHTS);
    let bytes = match std::fs::read(&weights_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(AdapterError::new(
                dir,
                format!("no {ADAPTER_WEIGHTS} in the directory (the adapter's weights)"),
            ));
        }
        Err(e) => return Err(AdapterError::new(&weights_path, format!("cannot read it: {e}"))),
    };
    ReplyModel::from_bytes(&bytes).map_err(|e| AdapterError::new(&weights_path, e.to_string()))
}

/// `trainer_state.json`, with the Hugging Face Trainer's keys (`TrainerState`); reading one
/// needs only `epoch`, `global_step` and `log_history`, so a Trainer's own file reads too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    #[serde(default)]
    pub best_global_step: Option<u64>,
    #[serde(default)]
    pub best_metric: Option<f64>,
    #[serde(default)]
    pub best_model_checkpoint: Option<String>,
    pub epoch: f64,
    #[serde(default)]
    pub eval_steps: Option<u64>,
    pub global_step: u64,
    #[serde(default)]
    pub is_hyper_param_search: bool,
    #[serde(default = "yes")]
    pub is_local_process_zero: bool,
    #[serde(default = "yes")]
    pub is_world_process_zero: bool,
    pub log_history: Vec<Map<String, Value>>,
    #[serde(default)]
    pub logging_steps: u64,
    #[serde(default)]
    pub max_steps: u64,
    #[serde(default)]
    pub num_train_epochs: u64,
    #[serde(default)]
    pub save_steps: u64,
    #[serde(default)]
    pub train_batch_size: Option<u64>,
}

impl TrainerState {
    /// The state before the first step of a training with `config`.
    fn starting(config: &trainer::TrainConfig) -> TrainerState {
        TrainerState {
            best_global_step: None,
            best_metric: None,
            best_model_checkpoint: None,
            epoch: 0.0,
            eval_steps: None,
            global_step: 0,
            is_hyper_param_search: false,
            is_local_process_zero: true,
            is_world_process_zero: true,
            log_history: Vec::new(),
            logging_steps: 1,
            max_steps: 0,
            num_train_epochs: u64::from(config.n_epochs),
            save_steps: 0,
            train_batch_size: Some(u64::from(config.batch_size)),
        }
    }
}

fn yes() -> bool {
    true
}

/// Reads `dir/trainer_state.json`; `None` when there is none or it does not parse (a checkpoint
/// being written, or broken): such a directory is no checkpoint.
pub fn read_trainer_state(dir: &Path) -> Option<TrainerState> {
    let bytes = std::fs::read(dir.join(TRAINER_STATE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The checkpoints in an output directory, by step: the `checkpoint-<step>` directories whose
/// `trainer_state.json` parses.
pub fn checkpoints(output_dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(output_dir) else { return Vec::new() };
    let mut found: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step = name.strip_prefix(CHECKPOINT_PREFIX)?.parse::<u64>().ok()?;
            let path = e.path();
            (path.is_dir() && read_trainer_state(&path).is_some()).then_some((step, path))
        })
        .collect();
    found.sort();
    found
}

/// What `ftsweep train` trains.
#[derive(Debug, Clone)]
pub struct Training {
    pub base_model: String,
    pub training_file: PathBuf,
    pub validation_file: PathBuf,
    /// `n_epochs`, `batch_size`, `learning_rate_multiplier` (each `auto` when unset) and `seed`.
    pub hyperparameters: RunConfig,
    pub output_dir: PathBuf,
    /// An adapter directory whose training continues.
    pub init_from: Option<PathBuf>,
    /// A pause after each step.
    pub step_delay: Duration,
}

/// Why training could not be done. All but `Write` are bad input.
#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    #[error("this trainer trains only the local model family (`{BASE_MODEL}`), not `{0}`")]
    Model(String),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("--init-from {0}")]
    InitFrom(AdapterError),
    #[error("{0}")]
    Config(TrainError),
    #[error("cannot write `{}`: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

/// What a finished training did.
#[derive(Debug, Clone, PartialEq)]
pub struct Trained {
    pub steps: u64,
    pub epochs: u32,
    /// The checkpoints written, by step.
    pub checkpoints: Vec<u64>,
}

/// One log entry as it is written (a line of `metrics.jsonl`), or a checkpoint saved.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    Log(&'a Map<String, Value>),
    Checkpoint { epoch: u32, step: u64, dir: &'a Path },
}

/// Trains the local model into `t.output_dir` by the Trainer's conventions (see the module's
/// comment), validating `VALIDATIONS_PER_EPOCH` times an epoch, as the local provider does for
/// `ftsweep serve`'s jobs. Nothing is written before the inputs are read and checked.
pub fn train(t: &Training, on_progress: &mut dyn FnMut(Progress<'_>)) -> Result<Trained, TrainingError> {
    if t.base_model != BASE_MODEL {
        return Err(TrainingError::Model(t.base_model.clone()));
    }
    let training = read_chat_file(&t.training_file)?;
    let validation = read_chat_file(&t.validation_file)?;
    let init = match &t.init_from {
        Some(dir) => Some(read_adapter(dir).map_err(TrainingError::InitFrom)?),
        None => None,
    };
    let train_examples: Vec<_> = training.conversations.iter().map(example).collect();
    let valid_examples: Vec<_> = validation.conversations.iter().map(example).collect();
    let config = trainer::TrainConfig {
        validations_per_epoch: VALIDATIONS_PER_EPOCH,
        ..resolve(&t.hyperparameters, train_examples.len() as u64)
    };
    trainer::check_config(&train_examples, &config).map_err(TrainingError::Config)?;

    let out = &t.output_dir;
    let write_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrainingError::Write { path, source }
    };
    std::fs::create_dir_all(out).map_err(write_error(out))?;
    clear_earlier_output(out)?;
    let metrics_path = out.join(METRICS);
    let mut metrics = std::fs::File::create(&metrics_path).map_err(write_error(&metrics_path))?;
    let started = Instant::now();
    let mut state = TrainerState::starting(&config);
    let mut failure: Option<TrainingError> = None;
    let mut written = Vec::new();
    let mut loss_sum = 0f64;
    let mut on_event = |event: TrainEvent<'_>| {
        let mut log = |state: &mut TrainerState, entry: Value| -> Result<(), TrainingError> {
            let Value::Object(entry) = entry else { unreachable!("a log entry is an object") };
            let mut line = serde_json::to_string(&entry).expect("a map of numbers serialises");
            line.push('\n');
            // One write a line: a reader never sees half of one, even if the process is killed.
            metrics.write_all(line.as_bytes()).map_err(write_error(&metrics_path))?;
            on_progress(Progress::Log(&entry));
            state.log_history.push(entry);
            Ok(())
        };
        let result = match event {
            TrainEvent::Step { step, total_steps, epoch: _, train_loss, train_accuracy } => {
                if !t.step_delay.is_zero() {
                    std::thread::sleep(t.step_delay);
                }
                let per_epoch = total_steps / u64::from(config.n_epochs).max(1);
                (state.global_step, state.max_steps) = (step, total_steps);
                state.epoch = step as f64 / per_epoch.max(1) as f64;
                state.eval_steps = Some((per_epoch / u64::from(VALIDATIONS_PER_EPOCH)).max(1));
                state.save_steps = per_epoch;
                loss_sum += train_loss;
                let entry = json!({
                    "step": step,
                    "epoch": state.epoch,
                    "loss": finite(train_loss),
                    "learning_rate": config.learning_rate,
                    "mean_token_accuracy": train_accuracy,
                    "max_steps": total_steps,
                });
                log(&mut state, entry)
            }
            TrainEvent::Validation { step, epoch: _, valid_loss, valid_accuracy } => match valid_loss {
                Some(loss) => {
                    let entry = eval_entry(&state, step, loss, valid_accuracy);
                    log(&mut state, entry)
                }
                None => Ok(()),
            },
            TrainEvent::Epoch { epoch, step, valid_loss, valid_accuracy, model, .. } => {
                state.epoch = f64::from(epoch);
                let logged = match valid_loss {
                    Some(loss) => {
                        let entry = eval_entry(&state, step, loss, valid_accuracy);
                        log(&mut state, entry)
                    }
                    None => Ok(()),
                };
                logged.and_then(|()| {
                    let dir = save_checkpoint(out, step, model, &state)?;
                    written.push(step);
                    on_progress(Progress::Checkpoint { epoch, step, dir: &dir });
                    Ok(())
                })
            }
        };
        match result {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failure = Some(e);
                ControlFlow::Break(())
            }
        }
    };
    let summary = trainer::train(&train_examples, &valid_examples, &config, init.as_ref(), &mut on_event)
        .map_err(TrainingError::Config)?;
    if let Some(e) = failure {
        return Err(e);
    }
    // The Trainer's closing entry of `log_history` (not a line of metrics.jsonl).
    let end = closing_entry(state.epoch, summary.steps, loss_sum, started.elapsed().as_secs_f64());
    state.log_history.push(end);
    write_adapter(out, &summary.model).map_err(write_error(out))?;
    let state_path = out.join(TRAINER_STATE);
    write_atomically(&state_path, &pretty(&state)).map_err(write_error(&state_path))?;
    Ok(Trained { steps: summary.steps, epochs: summary.epochs_completed, checkpoints: written })
}

/// Removes what an earlier training into `out` left that this one would not overwrite before its
/// end: the final adapter (its `adapter_config.json` first) and `trainer_state.json`, and
/// checkpoints left half-written, so that a training that does not finish leaves no final adapter.
fn clear_earlier_output(out: &Path) -> Result<(), TrainingError> {
    let error = |path: PathBuf| move |source| TrainingError::Write { path, source };
    for name in [ADAPTER_CONFIG, ADAPTER_WEIGHTS, TRAINER_STATE] {
        let path = out.join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(error(path)(e)),
            _ => {}
        }
    }
    for entry in std::fs::read_dir(out).map_err(error(out.to_path_buf()))?.flatten() {
        let half_written = entry.file_name().to_str().is_some_and(|n| n.starts_with(TMP_PREFIX));
        if half_written && entry.path().is_dir() {
            std::fs::remove_dir_all(entry.path()).map_err(error(entry.path()))?;
        }
    }
    Ok(())
}

/// The Trainer's last `log_history` entry: the training's summary.
fn closing_entry(epoch: f64, steps: u64, loss_sum: f64, runtime: f64) -> Map<String, Value> {
    let mut end = Map::new();
    end.insert("epoch".into(), json!(epoch));
    end.insert("step".into(), json!(steps));
    end.insert("train_loss".into(), json!(finite(loss_sum / steps.max(1) as f64)));
    end.insert("train_runtime".into(), json!(runtime));
    end.insert("train_steps_per_second".into(), json!(steps as f64 / runtime.max(1e-9)));
    end.insert("total_flos".into(), json!(0));
    end
}

fn eval_entry(state: &TrainerState, step: u64, loss: f64, accuracy: Option<f64>) -> Value {
    let mut entry = json!({
        "step": step,
        "epoch": state.epoch,
        "eval_loss": finite(loss),
        "max_steps": state.max_steps,
    });
    if let Some(a) = accuracy {
        entry["eval_mean_token_accuracy"] = json!(a);
    }
    entry
}

/// A loss for JSON, which has no infinity: the largest finite number stands for it.
fn finite(x: f64) -> f64 {
    if x.is_finite() { x } else { f64::MAX }
}

/// Writes `checkpoint-<step>` as `tmp-checkpoint-<step>` (the adapter, then `trainer_state.json`)
/// and renames it into place.
fn save_checkpoint(out: &Path, step: u64, model: &ReplyModel, state: &TrainerState) -> Result<PathBuf, TrainingError> {
    let name = format!("{CHECKPOINT_PREFIX}{step}");
    let (tmp, dir) = (out.join(format!("{TMP_PREFIX}{name}")), out.join(&name));
    let error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrainingError::Write { path, source }
    };
    for stale in [&tmp, &dir] {
        if stale.exists() {
            std::fs::remove_dir_all(stale).map_err(error(stale))?;
        }
    }
    write_adapter(&tmp, model).map_err(error(&tmp))?;
    std::fs::write(tmp.join(TRAINER_STATE), pretty(state)).map_err(error(&tmp))?;
    std::fs::rename(&tmp, &dir).map_err(error(&dir))?;
    Ok(dir)
}

/// JSON with two-space indents and a final newline, as the Trainer writes its files.
fn pretty<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("the state serialises");
    bytes.push(b'\n');
    bytes
}

impl fmt::Display for Progress<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::Log(entry) => write!(f, "{}", Value::Object((*entry).clone())),
            Progress::Checkpoint { epoch, step, dir } => {
                write!(f, "epoch {epoch}: saved {} (step {step})", dir.display())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data")
    }

    fn training(out: &Path, epochs: u32) -> Training {
        Training {
            base_model: BASE_MODEL.into(),
            training_file: examples_dir().join("topics-train.jsonl"),
            validation_file: examples_dir().join("topics-valid.jsonl"),
            hyperparameters: RunConfig::supervised(Some(epochs), Some(64), Some(1.0), 7),
            output_dir: out.to_path_buf(),
            init_from: None,
            step_delay: Duration::ZERO,
        }
    }

    #[test]
    fn an_adapter_directory_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let trained = train(&training(&out, 1), &mut |_| {}).unwrap();
        let model = read_adapter(&out).unwrap();
        let copy = dir.path().join("copy");
        write_adapter(&copy, &model).unwrap();
        assert_eq!(
            std::fs::read(copy.join(ADAPTER_WEIGHTS)).unwrap(),
            std::fs::read(out.join(ADAPTER_WEIGHTS)).unwrap()
        );
        let again = read_adapter(&copy).unwrap();
        let context = [("user".to_string(), "Who won the world cup in 2018?".to_string())];
        assert_eq!(again.top(&context), model.top(&context));
        let config: Value = serde_json::from_slice(&std::fs::read(copy.join(ADAPTER_CONFIG)).unwrap()).unwrap();
        assert_eq!(config, json!({"peft_type": PEFT_TYPE, "base_model_name_or_path": BASE_MODEL, "format": 1}));
        assert_eq!(checkpoints(&out).iter().map(|c| c.0).collect::<Vec<_>>(), trained.checkpoints);
    }

    #[test]
    fn directories_that_are_not_adapters_say_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_adapter(&dir.path().join("nope")).unwrap_err();
        assert!(e.message.contains("cannot read the directory"), "{e}");
        let e = read_adapter(dir.path()).unwrap_err();
        assert!(e.to_string().contains(ADAPTER_CONFIG) && e.path == dir.path(), "{e}");
        std::fs::write(dir.path().join(ADAPTER_CONFIG), r#"{"peft_type": "LORA", "format": 1}"#).unwrap();
        assert!(read_adapter(dir.path()).unwrap_err().message.contains("peft_type is `LORA`"));
        let config = json!({"peft_type": PEFT_TYPE, "base_model_name_or_path": BASE_MODEL, "format": 1});
        std::fs::write(dir.path().join(ADAPTER_CONFIG), config.to_string()).unwrap();
        assert!(read_adapter(dir.path()).unwrap_err().message.contains(ADAPTER_WEIGHTS));
        std::fs::write(dir.path().join(ADAPTER_WEIGHTS), b"not weights").unwrap();
        let e = read_adapter(dir.path()).unwrap_err();
        assert!(e.path.ends_with(ADAPTER_WEIGHTS) && e.message.contains("invalid model"), "{e}");
    }

    #[test]
    fn a_checkpoint_counts_once_its_trainer_state_parses() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let model = {
            let run = out.join("run");
            train(&training(&run, 1), &mut |_| {}).unwrap();
            read_adapter(&run).unwrap()
        };
        let half = out.join("checkpoint-5");
        write_adapter(&half, &model).unwrap();
        assert!(read_trainer_state(&half).is_none());
        assert!(checkpoints(out).is_empty(), "no trainer_state.json: not a checkpoint");
        std::fs::write(half.join(TRAINER_STATE), "{\"epoch\": 1.0, \"global").unwrap();
        assert!(checkpoints(out).is_empty(), "a trainer_state.json cut short: not a checkpoint");
        let hf = r#"{"epoch": 1.0, "global_step": 5, "log_history": [{"loss": 1.5, "step": 5}], "total_flos": 0}"#;
        std::fs::write(half.join(TRAINER_STATE), hf).unwrap();
        assert_eq!(checkpoints(out), [(5, half.clone())]);
        assert_eq!(read_trainer_state(&half).unwrap().global_step, 5);
    }
}
