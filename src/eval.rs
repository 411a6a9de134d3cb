//! Evaluation: ask a model for each validation conversation's reply through
//! the provider's chat completion, and grade it against the reference.

use crate::data::ChatFile;
use crate::provider::{Provider, ProviderError};
use crate::spec::Metric;
use crate::store::EvalRow;

/// Grades one reply; the grader functions are pure.
pub fn grade(metric: Metric, prediction: &str, reference: &str) -> f64 {
    match metric {
        Metric::ExactMatch => f64::from(u8::from(prediction.trim() == reference.trim())),
    }
}

/// Evaluates `model` on every conversation of `file`, in file order.
pub async fn evaluate(
    provider: &Provider,
    model: &str,
    file: &ChatFile,
    metric: Metric,
) -> Result<Vec<EvalRow>, ProviderError> {
    let mut rows = Vec::with_capacity(file.conversations.len());
    for (example, c) in file.conversations.iter().enumerate() {
        let reference = c.reference().unwrap_or_default();
        let completion = provider.complete(model, c.prompt()).await?;
        rows.push(EvalRow {
            example,
            line: c.line,
            reference: reference.to_string(),
            score: grade(metric, &completion.content, reference),
            prediction: completion.content,
            probability: completion.probability,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_match_trims_white_space_only() {
        assert_eq!(grade(Metric::ExactMatch, " food\n", "food"), 1.0);
        assert_eq!(grade(Metric::ExactMatch, "Food", "food"), 0.0);
        assert_eq!(grade(Metric::ExactMatch, "foods", "food"), 0.0);
    }
}
