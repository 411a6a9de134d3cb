//! Statistics of a checked data file: distributions of messages and tokens, billing tokens,
//! label balance, and the cookbook's estimate of the default number of epochs.

use serde::Serialize;

use super::check::{Encoding, FileReport, LABEL_MAX_CHARS};

/// Replies form a label set only if there are at most this many distinct ones.
pub const MAX_LABELS: usize = 50;

/// A distribution of per-example counts. Percentiles use the nearest-rank method.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Distribution {
    pub min: u32,
    pub mean: f64,
    pub max: u32,
    pub p5: u32,
    pub p10: u32,
    pub p50: u32,
    pub p90: u32,
    pub p95: u32,
}

impl Distribution {
    /// The distribution of `values`, or `None` if there are none.
    pub fn of(values: &[u32]) -> Option<Distribution> {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        let p = |pct| percentile(&sorted, pct);
        Some(Distribution {
            min: *sorted.first()?,
            mean: sorted.iter().map(|&v| f64::from(v)).sum::<f64>() / sorted.len() as f64,
            max: *sorted.last()?,
            p5: p(5)?,
            p10: p(10)?,
            p50: p(50)?,
            p90: p(90)?,
            p95: p(95)?,
        })
    }
}

/// The `pct`-th percentile (1..=100) of ascending `sorted` values by the nearest-rank method:
/// the value at 1-based rank ⌈pct/100 × n⌉. It is always one of the values; `None` if empty.
pub fn percentile(sorted: &[u32], pct: u32) -> Option<u32> {
    let n = sorted.len();
    let rank = (pct.clamp(1, 100) as usize * n).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// One class label and its share of the examples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelShare {
    pub label: String,
    pub count: usize,
    pub share: f64,
}

/// What a data file holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataStats {
    pub examples: usize,
    pub messages: Option<Distribution>,
    pub total_tokens: Option<Distribution>,
    pub assistant_tokens: Option<Distribution>,
    /// Σ min(token_limit, tokens): what one epoch bills.
    pub billing_tokens: u64,
    /// The tokenizer the counts used.
    pub encoding: Encoding,
    pub token_limit: u64,
    pub over_limit: usize,
    pub distinct_replies: usize,
    /// The label balance, when the last replies form a small label set (see [`label_set`]).
    pub labels: Option<Vec<LabelShare>>,
    /// The cookbook's estimate of the epochs "auto" picks.
    pub default_epochs: u32,
}

/// The statistics of the valid examples of a checked file.
pub fn stats(report: &FileReport) -> DataStats {
    DataStats {
        examples: report.examples,
        messages: Distribution::of(&report.messages_per_example),
        total_tokens: Distribution::of(&report.total_tokens),
        assistant_tokens: Distribution::of(&report.assistant_tokens),
        billing_tokens: report.billing_tokens,
        encoding: report.encoding,
        token_limit: report.token_limit,
        over_limit: report.over_limit,
        distinct_replies: report.distinct_replies,
        labels: label_set(report),
        default_epochs: default_epochs(report.examples as u64),
    }
}

/// The labels, most frequent first, if the last replies form a label set: at most 50 distinct
/// replies, none with a text longer than 40 characters (tool calls are not counted), and at most
/// one distinct reply per two examples.
pub fn label_set(report: &FileReport) -> Option<Vec<LabelShare>> {
    let distinct = report.reply_labels.len();
    let is_labels = !report.replies_not_labels
        && report.examples > 0
        && distinct == report.distinct_replies
        && distinct <= MAX_LABELS
        && distinct * 2 <= report.examples
        && report.longest_reply_chars <= LABEL_MAX_CHARS;
    if !is_labels {
        return None;
    }
    let mut labels: Vec<LabelShare> = report
        .reply_labels
        .iter()
        .map(|(label, count)| LabelShare {
            label: label.clone(),
            count: *count,
            share: *count as f64 / report.examples as f64,
        })
        .collect();
    labels.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.label.cmp(&b.label)));
    Some(labels)
}

/// The cookbook's estimate of the default epochs for `n_examples` training examples: 3, raised
/// so that at least 100 examples are seen (at most 25 epochs), or lowered so that at most 25,000
/// are (at least 1 epoch).
pub fn default_epochs(n_examples: u64) -> u32 {
    const TARGET_EPOCHS: u64 = 3;
    const MIN_TARGET_EXAMPLES: u64 = 100;
    const MAX_TARGET_EXAMPLES: u64 = 25_000;
    const MIN_DEFAULT_EPOCHS: u64 = 1;
    const MAX_DEFAULT_EPOCHS: u64 = 25;
    let n = n_examples;
    let epochs = if n == 0 {
        TARGET_EPOCHS
    } else if TARGET_EPOCHS * n < MIN_TARGET_EXAMPLES {
        MAX_DEFAULT_EPOCHS.min(MIN_TARGET_EXAMPLES / n)
    } else if TARGET_EPOCHS.saturating_mul(n) > MAX_TARGET_EXAMPLES {
        MIN_DEFAULT_EPOCHS.max(MAX_TARGET_EXAMPLES / n)
    } else {
        TARGET_EPOCHS
    };
    epochs as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::check::{CheckOptions, check_reader};
    use std::path::Path;

    #[test]
    fn nearest_rank_percentiles() {
        let one_to_ten: Vec<u32> = (1..=10).collect();
        let p = |pct| percentile(&one_to_ten, pct).unwrap();
        assert_eq!((p(5), p(10), p(50), p(90), p(95), p(100)), (1, 1, 5, 9, 10, 10));
        let twenty: Vec<u32> = (1..=20).collect();
        let p = |pct| percentile(&twenty, pct).unwrap();
        // Ranks ⌈0.05×20⌉=1, ⌈0.1×20⌉=2, 10, 18, 19.
        assert_eq!((p(5), p(10), p(50), p(90), p(95)), (1, 2, 10, 18, 19));
        assert_eq!(percentile(&[7], 5), Some(7));
        assert_eq!(percentile(&[7], 95), Some(7));
        assert_eq!(percentile(&[], 50), None);
        let d = Distribution::of(&[3, 1, 2, 10]).unwrap();
        assert_eq!((d.min, d.mean, d.max, d.p10, d.p50, d.p90), (1, 4.0, 10, 1, 2, 10));
        assert_eq!(Distribution::of(&[]), None);
    }

    fn lines(replies: &[(&str, usize)]) -> String {
        let mut out = String::new();
        for (reply, n) in replies {
            for i in 0..*n {
                out += &format!(
                    r#"{{"messages":[{{"role":"system","content":"s"}},{{"role":"user","content":"{reply} {i}"}},{{"role":"assistant","content":"{reply}"}}]}}"#
                );
                out.push('\n');
            }
        }
        out
    }

    #[test]
    fn label_balance() {
        let report =
            check_reader(Path::new("t"), lines(&[("b", 3), ("a", 6), ("c", 1)]).as_bytes(), &CheckOptions::default());
        let s = stats(&report);
        assert_eq!((s.examples, s.distinct_replies, s.default_epochs), (10, 3, 10));
        let labels: Vec<_> = s.labels.unwrap().into_iter().map(|l| (l.label, l.count, l.share)).collect();
        assert_eq!(labels, [("a".to_owned(), 6, 0.6), ("b".to_owned(), 3, 0.3), ("c".to_owned(), 1, 0.1)]);
        assert_eq!(s.messages.unwrap().p50, 3);
        assert_eq!(s.billing_tokens, report.total_tokens.iter().map(|&t| u64::from(t)).sum::<u64>());

        // Too many distinct replies for the examples, or a reply too long to be a label.
        let report = check_reader(
            Path::new("t"),
            lines(&[("a", 5), ("b", 1), ("c", 1), ("d", 1), ("e", 1), ("f", 1)]).as_bytes(),
            &CheckOptions::default(),
        );
        assert_eq!(report.distinct_replies, 6);
        assert!(stats(&report).labels.is_none());
        let long = "x".repeat(41);
        let report =
            check_reader(Path::new("t"), lines(&[("a", 10), (&long, 10)]).as_bytes(), &CheckOptions::default());
        assert!(stats(&report).labels.is_none());
        let ok40 = "x".repeat(40);
        let report =
            check_reader(Path::new("t"), lines(&[("a", 10), (&ok40, 10)]).as_bytes(), &CheckOptions::default());
        assert_eq!(stats(&report).labels.unwrap().len(), 2);
    }

    #[test]
    fn tracked_replies_are_bounded() {
        let many: Vec<(String, usize)> = (0..1500).map(|i| (format!("r{i}"), 2)).collect();
        let many: Vec<(&str, usize)> = many.iter().map(|(r, n)| (r.as_str(), *n)).collect();
        let report = check_reader(Path::new("t"), lines(&many).as_bytes(), &CheckOptions::default());
        assert_eq!(report.reply_labels.len(), crate::data::check::MAX_TRACKED_REPLIES);
        assert_eq!(report.distinct_replies, 1500);
        assert!(report.replies_not_labels);
        assert!(label_set(&report).is_none());
    }

    #[test]
    fn cookbook_default_epochs() {
        for (n, epochs) in [
            (0, 3),
            (1, 25),
            (3, 25),
            (4, 25),
            (5, 20),
            (10, 10),
            (20, 5),
            (33, 3),
            (34, 3),
            (50, 3),
            (8333, 3),
            (8334, 2),
            (10_000, 2),
            (12_501, 1),
            (1_000_000, 1),
        ] {
            assert_eq!(default_epochs(n), epochs, "{n} examples");
        }
    }
}
