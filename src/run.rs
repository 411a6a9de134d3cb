//! The run's vocabulary: which provider trains it, what defines it, the
//! states it goes through, where its model comes from. Pure: no I/O; the
//! database binds these types (`store/`), the pure modules read them.

/// Which provider trains the runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// The embedded CPU trainer.
    Local,
    /// A server that speaks the OpenAI fine-tuning protocol.
    OpenAi,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::OpenAi => "openai",
        }
    }
}

/// The one base model the local provider fine-tunes.
pub const LOCAL_BASE_MODEL: &str = "local/ngram";
