//! Deterministic train/validation split of a chat JSONL file: exact duplicate conversations stay
//! on one side, classification data is stratified by label, and outputs are written atomically.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::check::{CheckOptions, Line, Severity, check_file, for_each_line};
use super::stats::label_set;

/// Why a split failed; nothing is left half-written.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("the validation fraction must be between 0 and 1 (exclusive), not {0}")]
    BadFraction(f64),
    #[error("the training and validation outputs must be different files")]
    SameOutputs,
    #[error("`{0}` is the input file; a split does not overwrite its input")]
    OutputIsInput(PathBuf),
    #[error("{} already exist{}; nothing was written", list(.0), if .0.len() == 1 { "s" } else { "" })]
    OutputsExist(Vec<PathBuf>),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{first} ({errors} error(s) in all); fix the file before splitting it")]
    HasErrors { first: String, errors: usize },
    #[error("{0}: a split needs at least 2 distinct conversations")]
    TooFewConversations(PathBuf),
}

/// Paths as "`a` and `b`", for messages.
fn list(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| format!("`{}`", p.display())).collect::<Vec<_>>().join(" and ")
}

impl SplitError {
    /// What to do about the error.
    pub fn hint(&self) -> &'static str {
        match self {
            SplitError::BadFraction(_) => "pass --valid as the share of examples for validation, e.g. --valid 0.2",
            SplitError::SameOutputs => "give --out-train and --out-valid different paths",
            SplitError::OutputIsInput(_) => "choose other paths with --out-train and --out-valid",
            SplitError::OutputsExist(_) => {
                "pass --force to replace them, or choose other paths with --out-train and --out-valid"
            }
            SplitError::Io { .. } => "check the paths and that their folders exist and are writable",
            SplitError::HasErrors { .. } => "`ftsweep data check FILE` lists every problem",
            SplitError::TooFewConversations(_) => "a split needs a file with at least 2 different conversations",
        }
    }
}

/// How one label was split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabelSplit {
    pub label: String,
    pub train: usize,
    pub valid: usize,
}

/// What a split wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SplitSummary {
    pub train: usize,
    pub valid: usize,
    /// Distinct conversations (groups of exact duplicates).
    pub groups: usize,
    /// Whether the split was stratified by label; then `labels` holds each label's split.
    pub stratified: bool,
    pub labels: Vec<LabelSplit>,
    /// Outputs that existed and were replaced (only with `overwrite`).
    pub overwritten: Vec<PathBuf>,
}

/// A set of examples with the same conversation.
struct Group {
    examples: Vec<usize>,
    label: u32,
}

/// Splits the examples of `path` into `out_train` and `out_valid`, about `valid_fraction` of them
/// going to validation.
///
/// The result depends only on the file's bytes, the fraction and the seed. Exact duplicates are
/// grouped and go to one side. When the last replies form a label set, each label is split on its
/// own: its groups, in order of first line, are shuffled with ChaCha8 seeded by `seed`, and groups
/// are taken for validation while they fit in round(fraction × the label's examples), with at
/// least one group taken and one left when the label has two or more. Otherwise all groups are
/// split that way at once. Lines are copied byte for byte, each ending with `\n`, in their original
/// order; blank lines and a leading BOM are dropped. The file must not change during the split.
///
/// Existing outputs are refused unless `overwrite` is set; the input is never overwritten.
pub fn split(
    path: &Path,
    valid_fraction: f64,
    seed: u64,
    out_train: &Path,
    out_valid: &Path,
    overwrite: bool,
) -> Result<SplitSummary, SplitError> {
    if !(valid_fraction > 0.0 && valid_fraction < 1.0) {
        return Err(SplitError::BadFraction(valid_fraction));
    }
    let same = |a: &Path, b: &Path| a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
    if same(out_train, out_valid) {
        return Err(SplitError::SameOutputs);
    }
    if let Some(out) = [out_train, out_valid].into_iter().find(|o| same(o, path)) {
        return Err(SplitError::OutputIsInput(out.to_path_buf()));
    }
    let existing: Vec<PathBuf> =
        [out_train, out_valid].into_iter().filter(|o| o.exists()).map(Path::to_path_buf).collect();
    if !existing.is_empty() && !overwrite {
        return Err(SplitError::OutputsExist(existing));
    }
    let opts = CheckOptions { count_tokens: false, max_per_kind: 1, ..CheckOptions::default() };
    let report = check_file(path, &opts).map_err(|source| SplitError::Io { path: path.to_path_buf(), source })?;
    if report.has_errors() {
        let first = report.problems.iter().find(|p| p.severity == Severity::Error);
        return Err(SplitError::HasErrors {
            first: first.map(|p| report.describe(p)).unwrap_or_default(),
            errors: report.total(Severity::Error),
        });
    }

    let mut index: HashMap<[u8; 16], usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    for (i, hash) in report.hashes.iter().enumerate() {
        let g = *index.entry(*hash).or_insert_with(|| {
            groups.push(Group { examples: Vec::new(), label: report.reply_ids[i] });
            groups.len() - 1
        });
        groups[g].examples.push(i);
    }
    if groups.len() < 2 {
        return Err(SplitError::TooFewConversations(path.to_path_buf()));
    }

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut valid = vec![false; report.examples];
    let mut take = |members: &mut Vec<usize>, rng: &mut ChaCha8Rng| -> usize {
        let examples: usize = members.iter().map(|&g| groups[g].examples.len()).sum();
        let target = (valid_fraction * examples as f64).round() as usize;
        members.shuffle(rng);
        let (mut taken, mut chosen) = (0, Vec::new());
        for &g in members.iter() {
            if chosen.len() + 1 >= members.len() {
                break;
            }
            if taken + groups[g].examples.len() <= target {
                taken += groups[g].examples.len();
                chosen.push(g);
            }
        }
        if chosen.is_empty() && members.len() >= 2 {
            chosen.push(members[0]);
            taken = groups[members[0]].examples.len();
        }
        for g in chosen {
            for &e in &groups[g].examples {
                valid[e] = true;
            }
        }
        taken
    };

    let mut labels = Vec::new();
    let stratified = label_set(&report).is_some();
    if stratified {
        let mut by_label: Vec<(&str, u32)> =
            report.reply_labels.iter().enumerate().map(|(id, (label, _))| (label.as_str(), id as u32)).collect();
        by_label.sort();
        for (label, id) in by_label {
            let mut members: Vec<usize> = (0..groups.len()).filter(|&g| groups[g].label == id).collect();
            let total: usize = members.iter().map(|&g| groups[g].examples.len()).sum();
            let taken = take(&mut members, &mut rng);
            labels.push(LabelSplit { label: label.to_owned(), train: total - taken, valid: taken });
        }
    } else {
        let mut members: Vec<usize> = (0..groups.len()).collect();
        take(&mut members, &mut rng);
    }

    let n_valid = valid.iter().filter(|&&v| v).count();
    write_split(path, &report.example_lines, &valid, out_train, out_valid)?;
    Ok(SplitSummary {
        train: report.examples - n_valid,
        valid: n_valid,
        groups: groups.len(),
        stratified,
        labels,
        overwritten: existing,
    })
}

/// `name.tmp` next to `path`.
fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Copies the example lines to temporary files and renames them over the outputs.
fn write_split(
    path: &Path,
    example_lines: &[usize],
    valid: &[bool],
    out_train: &Path,
    out_valid: &Path,
) -> Result<(), SplitError> {
    let (tmp_train, tmp_valid) = (tmp_path(out_train), tmp_path(out_valid));
    let result = (|| {
        let create = |p: &Path| {
            File::create(p).map(BufWriter::new).map_err(|source| SplitError::Io { path: p.to_path_buf(), source })
        };
        let (mut train, mut valid_out) = (create(&tmp_train)?, create(&tmp_valid)?);
        let input = File::open(path).map_err(|source| SplitError::Io { path: path.to_path_buf(), source })?;
        let (mut next, mut write_error) = (0, None);
        let read = for_each_line(BufReader::with_capacity(1 << 16, input), |line, item| {
            let (Line::Bytes(bytes), true) = (item, example_lines.get(next) == Some(&line)) else {
                return Ok(());
            };
            let (out, out_path) = if valid[next] { (&mut valid_out, &tmp_valid) } else { (&mut train, &tmp_train) };
            next += 1;
            // A write error is kept with its path, and stops the reading.
            out.write_all(bytes).and_then(|()| out.write_all(b"\n")).map_err(|source| {
                write_error = Some(SplitError::Io { path: out_path.clone(), source });
                io::Error::other("write failed")
            })
        });
        if let Some(e) = write_error {
            return Err(e);
        }
        read.map_err(|(_, source)| SplitError::Io { path: path.to_path_buf(), source })?;
        if next != example_lines.len() {
            let source = io::Error::other("the file changed during the split");
            return Err(SplitError::Io { path: path.to_path_buf(), source });
        }
        for (w, p) in [(train, &tmp_train), (valid_out, &tmp_valid)] {
            let file = w.into_inner().map_err(|e| SplitError::Io { path: p.clone(), source: e.into_error() })?;
            file.sync_all().map_err(|source| SplitError::Io { path: p.clone(), source })?;
        }
        std::fs::rename(&tmp_train, out_train).map_err(|source| SplitError::Io { path: out_train.into(), source })?;
        std::fs::rename(&tmp_valid, out_valid).map_err(|source| {
            // Without its validation half, the new training file is removed too.
            let _ = std::fs::remove_file(out_train);
            SplitError::Io { path: out_valid.into(), source }
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp_train);
        let _ = std::fs::remove_file(&tmp_valid);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn line(user: &str, reply: &str) -> String {
        format!(
            r#"{{"messages":[{{"role":"system","content":"s"}},{{"role":"user","content":"{user}"}},{{"role":"assistant","content":"{reply}"}}]}}"#
        )
    }

    /// 40 "a", 20 "b" and 11 "c" examples; "a 0" appears three times and "b 1" twice.
    fn labelled() -> String {
        let mut lines = Vec::new();
        for (label, n) in [("a", 40), ("b", 20), ("c", 11)] {
            lines.extend((0..n).map(|i| line(&format!("{label} {i}"), label)));
        }
        lines.insert(5, line("a 0", "a"));
        lines.insert(50, line("a 0", "a"));
        lines.insert(30, line("b 1", "b"));
        lines.join("\r\n") + "\r\n\r\n"
    }

    struct Run {
        dir: tempfile::TempDir,
        summary: SplitSummary,
    }

    impl Run {
        fn new(input: &str, fraction: f64, seed: u64) -> Run {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("in.jsonl"), input).unwrap();
            let summary = split(
                &dir.path().join("in.jsonl"),
                fraction,
                seed,
                &dir.path().join("t.jsonl"),
                &dir.path().join("v.jsonl"),
                false,
            )
            .unwrap();
            Run { dir, summary }
        }

        fn read(&self, name: &str) -> String {
            std::fs::read_to_string(self.dir.path().join(name)).unwrap()
        }
    }

    fn label_of(line: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["messages"][2]["content"].as_str().unwrap().to_owned()
    }

    #[test]
    fn stratified_deterministic_and_duplicate_safe() {
        let input = labelled();
        let run = Run::new(&input, 0.2, 7);
        let (train, valid) = (run.read("t.jsonl"), run.read("v.jsonl"));
        assert_eq!(run.summary.train + run.summary.valid, 74);
        assert_eq!(run.summary.groups, 71);
        assert!(run.summary.stratified);
        // Each label's validation share is within one example of the fraction.
        for l in &run.summary.labels {
            let total = (l.train + l.valid) as f64;
            assert!((l.valid as f64 - 0.2 * total).abs() <= 1.0, "{l:?}");
            let in_file = valid.lines().filter(|x| label_of(x) == l.label).count();
            assert_eq!(in_file, l.valid);
        }
        // Lines are copied byte for byte, in order, and each line goes to one side only.
        let input_lines: Vec<&str> = input.split_terminator('\n').filter(|l| l.trim() != "").collect();
        let mut expected_train = input_lines.clone();
        expected_train.retain(|l| !valid.split_terminator('\n').any(|v| v == *l));
        assert_eq!(train.split_terminator('\n').collect::<Vec<_>>(), expected_train);
        assert!(train.ends_with("\r\n") && valid.ends_with("\r\n"));
        let train_set: HashSet<&str> = train.lines().collect();
        assert!(valid.lines().all(|l| !train_set.contains(l)), "a duplicate went to both sides");
        assert_eq!(train.lines().count() + valid.lines().count(), 74);

        // The same inputs give the same bytes; another seed gives another split.
        let again = Run::new(&input, 0.2, 7);
        assert_eq!((again.read("t.jsonl"), again.read("v.jsonl")), (train.clone(), valid.clone()));
        let other = Run::new(&input, 0.2, 8);
        assert_ne!(other.read("v.jsonl"), valid);
    }

    #[test]
    fn unstratified_split_takes_the_fraction() {
        let input: String =
            (0..50).map(|i| line(&format!("q{i}"), &format!("a long free-text answer number {i}")) + "\n").collect();
        let run = Run::new(&format!("\u{feff}{input}"), 0.1, 1);
        assert!(!run.summary.stratified);
        assert_eq!((run.summary.train, run.summary.valid), (45, 5));
        assert!(!run.read("t.jsonl").contains('\u{feff}'));
        // A tiny fraction still yields one validation example.
        let run = Run::new(&input, 0.001, 1);
        assert_eq!((run.summary.train, run.summary.valid), (49, 1));
        let run = Run::new(&input, 0.999, 1);
        assert_eq!((run.summary.train, run.summary.valid), (1, 49));
    }

    #[test]
    fn refusals_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (input, train, valid) =
            (dir.path().join("in.jsonl"), dir.path().join("t.jsonl"), dir.path().join("v.jsonl"));
        std::fs::write(&input, labelled()).unwrap();
        for f in [0.0, 1.0, -0.5, f64::NAN] {
            assert!(matches!(split(&input, f, 1, &train, &valid, false), Err(SplitError::BadFraction(_))));
        }
        assert!(matches!(split(&input, 0.2, 1, &train, &train, false), Err(SplitError::SameOutputs)));

        // An output in a missing directory fails, and no output or temporary file remains.
        let missing = dir.path().join("nope").join("v.jsonl");
        assert!(matches!(split(&input, 0.2, 1, &train, &missing, false), Err(SplitError::Io { .. })));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["in.jsonl"]);

        // A file with errors is refused with its first error.
        std::fs::write(&input, labelled().replacen("\"role\":\"user\"", "\"role\":\"bot\"", 2)).unwrap();
        let err = split(&input, 0.2, 1, &train, &valid, false).unwrap_err().to_string();
        assert!(err.ends_with("in.jsonl:1: error: message 2 has an unknown role `bot` [unknown_role] (2 error(s) in all); fix the file before splitting it"), "{err}");
        std::fs::write(&input, (line("x", "y") + "\n").repeat(12)).unwrap();
        assert!(matches!(split(&input, 0.2, 1, &train, &valid, false), Err(SplitError::TooFewConversations(_))));
        assert!(!train.exists() && !valid.exists());
    }
}
