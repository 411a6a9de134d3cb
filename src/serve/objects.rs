//! The job objects that both the jobs endpoints and the worker build: events (a message, a
//! step's metrics); a job's `method` is `wire::openai::Method::supervised` or `::dpo`.

use serde_json::{Map, Value};

use super::{new_id, unix_now};
use crate::wire::openai::{JobEvent, Metrics};

/// A message event.
pub fn message_event(level: &str, message: impl Into<String>) -> JobEvent {
    JobEvent {
        id: new_id("ftevent-"),
        object: "fine_tuning.job.event".into(),
        created_at: unix_now(),
        level: level.into(),
        message: message.into(),
        kind: Some("message".into()),
        data: Some(Value::Object(Map::new())),
    }
}

/// A metrics event: "Step S/T: training loss=…" with the metrics as data.
pub fn metrics_event(m: &Metrics) -> JobEvent {
    let mut message = format!(
        "Step {}/{}: training loss={:.4}",
        m.step.unwrap_or(0),
        m.total_steps.unwrap_or(0),
        m.train_loss.unwrap_or(f64::NAN)
    );
    if let Some(v) = m.valid_loss {
        message.push_str(&format!(", validation loss={v:.4}"));
    }
    if let Some(v) = m.full_valid_loss {
        message.push_str(&format!(", full validation loss={v:.4}"));
    }
    JobEvent { kind: Some("metrics".into()), data: serde_json::to_value(m).ok(), ..message_event("info", message) }
}
