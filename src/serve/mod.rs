//! `ftsweep serve`: the OpenAI fine-tuning protocol over the local provider.
