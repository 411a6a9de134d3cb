//! The Azure names of the server's models: the base models it accepts, and the Azure ids of the
//! local fine-tuned models and checkpoints (`{base}.ft-{32 hex}`, `ftchkpt-{32 hex}`), derived from
//! the local names so that they are the same on every answer and after a restart; and back.

use crate::data::sha256_hex;
use crate::store::StoreError;
use crate::store::serve::ServeStore;
use crate::wire::openai::{Checkpoint, JobStatus};

/// An Azure base model: its dated id (what a job names), and the name and version a deployment
/// names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseModel {
    pub id: &'static str,
    pub name: &'static str,
    pub version: &'static str,
}

/// The base models the server fine-tunes (each trains the local classifier from scratch) and
/// deploys (the untrained classifier, which answers an empty string).
pub const BASE_MODELS: &[BaseModel] = &[
    BaseModel { id: "gpt-4.1-2025-04-14", name: "gpt-4.1", version: "2025-04-14" },
    BaseModel { id: "gpt-4.1-mini-2025-04-14", name: "gpt-4.1-mini", version: "2025-04-14" },
    BaseModel { id: "gpt-4.1-nano-2025-04-14", name: "gpt-4.1-nano", version: "2025-04-14" },
    BaseModel { id: "gpt-4o-mini-2024-07-18", name: "gpt-4o-mini", version: "2024-07-18" },
    BaseModel { id: "gpt-4o-2024-08-06", name: "gpt-4o", version: "2024-08-06" },
];

/// The base models' names whose fine-tunes the Developer tier deploys.
pub const DEVELOPER_TIER_FAMILY: &[&str] = &["gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano"];

pub fn base_model(id: &str) -> Option<BaseModel> {
    BASE_MODELS.iter().copied().find(|m| m.id == id)
}

/// The base models' ids, for messages.
pub fn base_model_ids() -> String {
    BASE_MODELS.iter().map(|m| m.id).collect::<Vec<_>>().join(", ")
}

fn hex32(local: &str) -> String {
    sha256_hex(format!("ftsweep-azure:{local}").as_bytes())[..32].to_string()
}

/// The Azure id of a local fine-tuned model whose line started from `base`.
pub fn model_name(base: &str, local: &str) -> String {
    format!("{base}.ft-{}", hex32(local))
}

/// The Azure id of a local checkpoint.
pub fn checkpoint_id(local_checkpoint: &str) -> String {
    format!("ftchkpt-{}", hex32(local_checkpoint))
}

/// The Azure name of a local model or checkpoint of a job of `base`: `{model}` for the final
/// model (`final_local`), `{model}:ckpt-step-N` for a checkpoint of it.
pub fn azure_name(base: &str, local: &str, final_local: Option<&str>) -> String {
    if Some(local) == final_local {
        return model_name(base, local);
    }
    match local.rsplit_once(":ckpt-step-") {
        Some((root, step)) => format!("{}:ckpt-step-{step}", model_name(base, root)),
        None => model_name(base, local),
    }
}

/// A job's checkpoint as Azure shows it: the newest checkpoint of a succeeded job is the final
/// model (Azure names it so), the others are `{model}:ckpt-step-N`.
pub fn checkpoint_name(base: &str, checkpoint: &Checkpoint, newest: bool, final_local: Option<&str>) -> String {
    match final_local {
        Some(model) if newest => model_name(base, model),
        _ => azure_name(base, &checkpoint.fine_tuned_model_checkpoint, final_local),
    }
}

/// A model a job or a deployment names, found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Base(BaseModel),
    /// A fine-tuned model or checkpoint: its local id, its Azure name, and the base model at the
    /// root of its line.
    Tuned {
        local: String,
        azure: String,
        base: String,
    },
}

/// Finds a fine-tuned model or checkpoint by its Azure name (a checkpoint also by its
/// `ftchkpt-…` id) among the finished Azure jobs: a succeeded job's model and checkpoints, a
/// cancelled job's checkpoints, whose weights are still here.
pub fn find_tuned(store: &ServeStore, name: &str) -> Result<Option<Found>, StoreError> {
    for job in store.jobs()? {
        let status = JobStatus::parse(&job.status);
        if !matches!(status, JobStatus::Succeeded | JobStatus::Cancelled) {
            continue;
        }
        let Some((_, base)) = store.azure_job(&job.id)? else { continue };
        let final_local = job.fine_tuned_model.as_deref().filter(|_| status == JobStatus::Succeeded);
        let mut hit = None;
        if let Some(model) = final_local
            && model_name(&base, model) == name
        {
            hit = Some((model.to_string(), name.to_string()));
        }
        for (i, c) in store.checkpoints(&job.id)?.iter().enumerate() {
            if hit.is_some() {
                break;
            }
            let azure = checkpoint_name(&base, c, i == 0, final_local);
            if azure == name || checkpoint_id(&c.fine_tuned_model_checkpoint) == name {
                hit = Some((c.fine_tuned_model_checkpoint.clone(), azure));
            }
        }
        if let Some((local, azure)) = hit
            && store.load_model(&local)?.is_some()
        {
            return Ok(Some(Found::Tuned { local, azure, base }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_names_follow_the_local_names() {
        let m = model_name("gpt-4.1-mini-2025-04-14", "ft:local/ngram:local:s:abc");
        assert!(m.starts_with("gpt-4.1-mini-2025-04-14.ft-") && m.len() == "gpt-4.1-mini-2025-04-14.ft-".len() + 32);
        assert_eq!(m, model_name("gpt-4.1-mini-2025-04-14", "ft:local/ngram:local:s:abc"), "stable");
        let c = azure_name("b", "ft:local/ngram:local:s:abc:ckpt-step-7", None);
        assert_eq!(c, format!("{}:ckpt-step-7", model_name("b", "ft:local/ngram:local:s:abc")));
        let id = checkpoint_id("ft:x:ckpt-step-7");
        assert!(id.starts_with("ftchkpt-") && id.len() == 40 && id[8..].chars().all(|c| c.is_ascii_hexdigit()));
    }
}
