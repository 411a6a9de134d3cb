//! The Ray engine: a trainer command as a job of a Ray cluster, through the
//! Jobs REST API of its dashboard (`/api/jobs/`).

use crate::provider::ProviderError;

use super::engine::{JobState, Submission};

/// A Ray cluster's Jobs API, at its dashboard's address.
#[derive(Debug, Clone)]
pub struct RayEngine {
    address: String,
}

impl RayEngine {
    pub fn new(settings: &crate::spec::RayEngine) -> Result<RayEngine, ProviderError> {
        Ok(RayEngine { address: settings.address.trim_end_matches('/').to_string() })
    }

    pub async fn submit(&self, submission: &Submission) -> Result<(), ProviderError> {
        let _ = submission;
        Err(self.todo())
    }

    pub async fn find(&self, id: &str) -> Result<Option<JobState>, ProviderError> {
        let _ = id;
        Err(self.todo())
    }

    pub async fn state(&self, id: &str) -> Result<JobState, ProviderError> {
        let _ = id;
        Err(self.todo())
    }

    pub async fn stop(&self, id: &str) -> Result<(), ProviderError> {
        let _ = id;
        Err(self.todo())
    }

    pub async fn log_tail(&self, id: &str) -> Result<String, ProviderError> {
        let _ = id;
        Err(self.todo())
    }

    fn todo(&self) -> ProviderError {
        ProviderError::Engine {
            message: format!("the Ray engine ({}) is not implemented yet", self.address),
            retryable: false,
        }
    }
}
