//! `provider = "command"`: the user's own trainer (TRL, Axolotl, Unsloth,
//! LLaMA-Factory, or `ftsweep train`) run by an engine (a detached local
//! process, or a Ray job), its output read by HF Trainer conventions, its
//! models answered by an OpenAI-compatible inference server with vLLM's
//! runtime LoRA endpoints.

pub mod engine;
pub mod ray;
