//! A job's result file (`result_files`): a CSV of its training curve, one row a step, read by
//! its header names with the `csv` crate (quoted fields, any column order, extra columns). Some
//! servers send it base64-encoded; that is decoded first.

use base64::Engine;

/// One row of a job's result file.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    pub step: u64,
    pub train_loss: Option<f64>,
    pub train_accuracy: Option<f64>,
    pub valid_loss: Option<f64>,
    pub valid_accuracy: Option<f64>,
}

/// A result file that cannot be read, with its file id and the line at fault (0: the file as a
/// whole).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("result file {file}{}: {reason}", if *line > 0 { format!(", line {line}") } else { String::new() })]
pub struct ResultFileError {
    pub file: String,
    pub line: u64,
    pub reason: String,
}

/// The metric columns, each by the names servers give it.
const COLUMNS: [&[&str]; 4] = [
    &["train_loss"],
    &["train_accuracy", "train_mean_token_accuracy"],
    &["valid_loss"],
    &["valid_mean_token_accuracy", "valid_accuracy"],
];

/// Parses the result file `file` (its id, for errors) by its header names: `step` and any of
/// `train_loss`, `train_accuracy`, `valid_loss`, `valid_mean_token_accuracy`; other columns are
/// ignored and an empty cell is a missing value. A body whose header has no `step` column is
/// tried as base64. A row with too few or too many cells, or a cell that is not a number, is an
/// error naming the line.
pub fn parse_result_csv(file: &str, bytes: &[u8]) -> Result<Vec<ResultRow>, ResultFileError> {
    let error = |line: u64, reason: String| ResultFileError { file: file.to_string(), line, reason };
    if has_step_column(bytes) {
        return parse_csv(bytes).map_err(|(line, reason)| error(line, reason));
    }
    let text = String::from_utf8_lossy(bytes);
    match base64::engine::general_purpose::STANDARD.decode(text.trim()) {
        Ok(decoded) if has_step_column(&decoded) => parse_csv(&decoded).map_err(|(line, reason)| error(line, reason)),
        _ => Err(error(0, "it is not a CSV file with a `step` column (nor one in base64)".into())),
    }
}

fn has_step_column(bytes: &[u8]) -> bool {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(bytes);
    reader.headers().is_ok_and(|h| h.iter().any(|c| c == "step"))
}

/// The rows of a CSV whose header has a `step` column, or (line, reason) of the first bad row.
fn parse_csv(bytes: &[u8]) -> Result<Vec<ResultRow>, (u64, String)> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(bytes);
    let header = reader.headers().map_err(|e| (1, e.to_string()))?.clone();
    let at = |names: &[&str]| names.iter().find_map(|n| header.iter().position(|c| c == *n));
    let step = at(&["step"]).ok_or((1, "the header has no `step` column".to_string()))?;
    let metrics = COLUMNS.map(at);
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| (e.position().map_or(0, csv::Position::line), csv_reason(&e)))?;
        let line = record.position().map_or(0, csv::Position::line);
        let cell = |i: usize| record.get(i).unwrap_or_default();
        let step =
            cell(step).parse::<u64>().map_err(|_| (line, format!("`step` is `{}`, not a step number", cell(step))))?;
        let mut values = [None; 4];
        for (value, column) in values.iter_mut().zip(metrics) {
            let Some(i) = column.filter(|i| !cell(*i).is_empty()) else { continue };
            let number = cell(i)
                .parse::<f64>()
                .map_err(|_| (line, format!("`{}` is `{}`, not a number", &header[i], cell(i))))?;
            *value = Some(number);
        }
        let [train_loss, train_accuracy, valid_loss, valid_accuracy] = values;
        rows.push(ResultRow { step, train_loss, train_accuracy, valid_loss, valid_accuracy });
    }
    Ok(rows)
}

fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("the row has {len} cells where the header has {expected_len}")
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str =
        "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n1,2.5,0.1,,\n2,1.5,0.5,1.8,0.4\n";

    #[test]
    fn result_csv_parses_by_header_with_empty_cells() {
        let rows = parse_result_csv("file-r", CSV.as_bytes()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].valid_loss, None);
        assert_eq!(rows[1].valid_accuracy, Some(0.4));
    }

    #[test]
    fn quoted_fields_reordered_and_extra_columns_are_read() {
        let text = "\"note, free text\",train_loss,extra,step,\"valid_loss\"\n\
                    \"warm-up, first step\",0.7,\"a, b, c\",9,\n\
                    plain,0.5,x,10,\"0.25\"\n";
        let rows = parse_result_csv("file-r", text.as_bytes()).unwrap();
        let step = |step, train_loss, valid_loss| ResultRow {
            step,
            train_loss: Some(train_loss),
            train_accuracy: None,
            valid_loss,
            valid_accuracy: None,
        };
        assert_eq!(rows, [step(9, 0.7, None), step(10, 0.5, Some(0.25))]);
    }

    #[test]
    fn a_malformed_row_is_an_error_naming_the_file_and_line() {
        let cases = [
            ("step,train_loss\n1,0.5\n2\n", "result file file-r, line 3: the row has 1 cells where the header has 2"),
            ("step,train_loss\n1,0.5,7\n", "result file file-r, line 2: the row has 3 cells where the header has 2"),
            ("step,train_loss\n1,0.5\n2,\"0,4\"\n", "result file file-r, line 3: `train_loss` is `0,4`, not a number"),
            ("step,train_loss\nfirst,0.5\n", "result file file-r, line 2: `step` is `first`, not a step number"),
            ("<html>nope</html>", "result file file-r: it is not a CSV file with a `step` column (nor one in base64)"),
        ];
        for (text, message) in cases {
            let e = parse_result_csv("file-r", text.as_bytes()).unwrap_err();
            assert_eq!(e.to_string(), message, "{text}");
        }
    }

    #[test]
    fn result_csv_tolerates_a_base64_body() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(CSV);
        assert_eq!(parse_result_csv("f", b64.as_bytes()), parse_result_csv("f", CSV.as_bytes()));
    }
}
