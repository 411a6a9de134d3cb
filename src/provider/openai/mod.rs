//! The OpenAI fine-tuning protocol: wire types, and (soon) the client.

pub mod wire;
