//! What a trainer writes, read by HF Trainer conventions: `metrics.jsonl`
//! (one `log_history` object a line), `checkpoint-<step>/` directories (each
//! counted once its `trainer_state.json` parses) and the final adapter. The
//! parsing is pure; [`OutputReader`] reads what is new in a run attempt's
//! output directory since its last look.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::provider::JobEvent;

/// The metrics file, in the output directory.
pub const METRICS: &str = "metrics.jsonl";
/// The trainer's state, in the output directory and in each checkpoint.
pub const TRAINER_STATE: &str = "trainer_state.json";
/// What makes a directory an adapter.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";

/// One line of `metrics.jsonl` (or one entry of `log_history`); unknown keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct LogEntry {
    #[serde(default)]
    pub step: Option<u64>,
    #[serde(default)]
    pub epoch: Option<f64>,
    #[serde(default)]
    pub loss: Option<f64>,
    #[serde(default)]
    pub eval_loss: Option<f64>,
    #[serde(default)]
    pub mean_token_accuracy: Option<f64>,
    #[serde(default)]
    pub eval_mean_token_accuracy: Option<f64>,
    #[serde(default)]
    pub max_steps: Option<u64>,
}

/// A checkpoint's (or the final) `trainer_state.json`: HF's keys.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct TrainerState {
    #[serde(default)]
    pub epoch: Option<f64>,
    #[serde(default)]
    pub global_step: u64,
    #[serde(default)]
    pub max_steps: Option<u64>,
    #[serde(default)]
    pub num_input_tokens_seen: Option<u64>,
    #[serde(default)]
    pub log_history: Vec<LogEntry>,
}

/// The epoch (1-based) a fractional HF epoch falls in: 0.25 and 1.0 are in epoch 1.
pub fn epoch_number(epoch: Option<f64>) -> u32 {
    epoch.filter(|e| e.is_finite() && *e > 0.0).map_or(1, |e| ((e - 1e-9).ceil() as u32).max(1))
}

/// The events of one metrics line: a training step (a line with `loss`), a
/// validation (a line with `eval_loss`), or nothing (other lines, say a summary).
/// `max_steps` is the largest the trainer has said so far.
pub fn line_events(line: &LogEntry, max_steps: u64) -> Vec<JobEvent> {
    let Some(step) = line.step else { return Vec::new() };
    let epoch = epoch_number(line.epoch);
    let mut events = Vec::new();
    if let Some(train_loss) = line.loss {
        events.push(JobEvent::Step {
            step,
            total_steps: line.max_steps.unwrap_or(max_steps),
            epoch,
            train_loss,
            train_accuracy: line.mean_token_accuracy.unwrap_or(f64::NAN),
        });
    }
    if let Some(valid_loss) = line.eval_loss {
        events.push(JobEvent::Validation { step, epoch, valid_loss, valid_accuracy: line.eval_mean_token_accuracy });
    }
    events
}

/// A checkpoint's event from its `trainer_state.json`: its epoch and step, the
/// last training loss and evaluation in its history; `model` is its directory.
pub fn checkpoint_event(model: &str, state: &TrainerState) -> JobEvent {
    let last_train = state.log_history.iter().rev().find(|e| e.loss.is_some());
    let last_eval = state.log_history.iter().rev().find(|e| e.eval_loss.is_some());
    JobEvent::Checkpoint {
        epoch: state.epoch.filter(|e| e.is_finite() && *e > 0.0).map_or(1, |e| (e.round() as u32).max(1)),
        step: state.global_step,
        model: model.to_string(),
        train_loss: last_train.and_then(|e| e.loss).unwrap_or(f64::NAN),
        train_accuracy: last_train.and_then(|e| e.mean_token_accuracy).unwrap_or(f64::NAN),
        valid_loss: last_eval.and_then(|e| e.eval_loss),
        valid_accuracy: last_eval.and_then(|e| e.eval_mean_token_accuracy),
    }
}

/// The step of a `checkpoint-<step>` directory name.
pub fn checkpoint_step(name: &str) -> Option<u64> {
    name.strip_prefix("checkpoint-")?.parse().ok()
}

/// Reads a run attempt's output directory as the trainer writes it: the
/// metrics lines added since the last look (a line without its newline yet
/// waits), and the checkpoints completed since.
#[derive(Debug)]
pub struct OutputReader {
    dir: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    seen: BTreeSet<u64>,
    max_steps: u64,
    /// The furthest epoch (fractional) a line or checkpoint reported.
    pub last_epoch: f64,
}

impl OutputReader {
    pub fn new(dir: &Path) -> OutputReader {
        OutputReader {
            dir: dir.to_path_buf(),
            offset: 0,
            partial: Vec::new(),
            seen: BTreeSet::new(),
            max_steps: 0,
            last_epoch: 0.0,
        }
    }

    /// The events written since the last call: metrics lines first, then new checkpoints by step.
    pub fn poll(&mut self) -> Vec<JobEvent> {
        let mut events = self.metrics();
        events.extend(self.checkpoints());
        events
    }

    fn metrics(&mut self) -> Vec<JobEvent> {
        let mut bytes = Vec::new();
        let read = std::fs::File::open(self.dir.join(METRICS)).and_then(|mut f| {
            f.seek(SeekFrom::Start(self.offset))?;
            f.read_to_end(&mut bytes)
        });
        if read.is_err() || bytes.is_empty() {
            return Vec::new();
        }
        self.offset += bytes.len() as u64;
        self.partial.extend_from_slice(&bytes);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else { return Vec::new() };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        let mut events = Vec::new();
        for line in String::from_utf8_lossy(&complete).lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<LogEntry>(line) {
                Ok(entry) => {
                    self.max_steps = self.max_steps.max(entry.max_steps.unwrap_or(0));
                    if let Some(e) = entry.epoch.filter(|e| e.is_finite()) {
                        self.last_epoch = self.last_epoch.max(e);
                    }
                    events.extend(line_events(&entry, self.max_steps));
                }
                Err(e) => tracing::warn!(dir = %self.dir.display(), "a line of {METRICS} is not a metrics object: {e}"),
            }
        }
        events
    }

    fn checkpoints(&mut self) -> Vec<JobEvent> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut fresh: Vec<(u64, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((checkpoint_step(e.file_name().to_str()?)?, e.path())))
            .filter(|(step, _)| !self.seen.contains(step))
            .collect();
        fresh.sort();
        let mut events = Vec::new();
        for (step, path) in fresh {
            // HF writes the state after the weights: a checkpoint counts once it parses.
            let Some(state) = read_state(&path) else { continue };
            self.seen.insert(step);
            if let Some(e) = state.epoch.filter(|e| e.is_finite()) {
                self.last_epoch = self.last_epoch.max(e);
            }
            events.push(checkpoint_event(&path.display().to_string(), &state));
        }
        events
    }
}

/// A directory's `trainer_state.json`, if it is there and parses.
pub fn read_state(dir: &Path) -> Option<TrainerState> {
    let text = std::fs::read(dir.join(TRAINER_STATE)).ok()?;
    serde_json::from_slice(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> LogEntry {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn metrics_lines_become_steps_and_validations() {
        let step = entry(r#"{"step": 3, "epoch": 0.75, "loss": 1.5, "learning_rate": 1e-4, "max_steps": 8, "x": 1}"#);
        let JobEvent::Step { train_accuracy, epoch, total_steps, .. } = &line_events(&step, 0)[0] else { panic!() };
        assert!(train_accuracy.is_nan());
        assert_eq!((*epoch, *total_steps), (1, 8));
        let eval = entry(r#"{"step": 4, "epoch": 1.0, "eval_loss": 0.5, "eval_mean_token_accuracy": 0.9}"#);
        assert_eq!(
            line_events(&eval, 8),
            vec![JobEvent::Validation { step: 4, epoch: 1, valid_loss: 0.5, valid_accuracy: Some(0.9) }]
        );
        let with_acc = entry(r#"{"step": 5, "epoch": 1.25, "loss": 0.4, "mean_token_accuracy": 0.8}"#);
        assert_eq!(
            line_events(&with_acc, 8),
            vec![JobEvent::Step { step: 5, total_steps: 8, epoch: 2, train_loss: 0.4, train_accuracy: 0.8 }]
        );
        // A summary line without a step, or without a loss, is no event.
        assert!(line_events(&entry(r#"{"train_runtime": 3.2}"#), 8).is_empty());
        assert!(line_events(&entry(r#"{"step": 6, "learning_rate": 1e-4}"#), 8).is_empty());
    }

    #[test]
    fn a_checkpoint_takes_its_last_loss_and_evaluation() {
        let state: TrainerState = serde_json::from_str(
            r#"{"epoch": 2.0, "global_step": 8, "log_history": [
                {"step": 4, "epoch": 1.0, "loss": 1.0},
                {"step": 4, "epoch": 1.0, "eval_loss": 0.9},
                {"step": 8, "epoch": 2.0, "loss": 0.7, "mean_token_accuracy": 0.6},
                {"step": 8, "epoch": 2.0, "eval_loss": 0.65, "eval_mean_token_accuracy": 0.7}]}"#,
        )
        .unwrap();
        assert_eq!(
            checkpoint_event("/r/checkpoint-8", &state),
            JobEvent::Checkpoint {
                epoch: 2,
                step: 8,
                model: "/r/checkpoint-8".into(),
                train_loss: 0.7,
                train_accuracy: 0.6,
                valid_loss: Some(0.65),
                valid_accuracy: Some(0.7),
            }
        );
        assert_eq!(checkpoint_step("checkpoint-12"), Some(12));
        assert_eq!(checkpoint_step("checkpoint-x"), None);
        assert_eq!(checkpoint_step("runs"), None);
        assert_eq!(epoch_number(Some(2.0)), 2);
        assert_eq!(epoch_number(Some(2.01)), 3);
        assert_eq!(epoch_number(None), 1);
    }

    #[test]
    fn the_reader_waits_for_whole_lines_and_parsed_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let mut reader = OutputReader::new(dir.path());
        assert!(reader.poll().is_empty());
        std::fs::write(dir.path().join(METRICS), "{\"step\": 1, \"epoch\": 0.5, \"loss\": 2.0}\n{\"step\": 2, \"ep")
            .unwrap();
        assert_eq!(reader.poll().len(), 1);
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join(METRICS)).unwrap();
        std::io::Write::write_all(&mut f, b"och\": 1.0, \"loss\": 1.0, \"eval_loss\": 1.1}\nnot json\n").unwrap();
        assert_eq!(reader.poll().len(), 2);
        assert_eq!(reader.last_epoch, 1.0);
        let ckpt = dir.path().join("checkpoint-2");
        std::fs::create_dir(&ckpt).unwrap();
        std::fs::write(ckpt.join(TRAINER_STATE), "{\"epoch\": 1.0, \"glob").unwrap();
        assert!(reader.poll().is_empty(), "a state that does not parse yet is not a checkpoint");
        std::fs::write(ckpt.join(TRAINER_STATE), r#"{"epoch": 1.0, "global_step": 2, "log_history": []}"#).unwrap();
        let events = reader.poll();
        assert!(matches!(&events[..], [JobEvent::Checkpoint { epoch: 1, step: 2, .. }]), "{events:?}");
        assert!(reader.poll().is_empty(), "a checkpoint is reported once");
    }
}
