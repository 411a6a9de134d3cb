//! Per-example scores kept with their evaluation (`eval_scores`): for an evaluation and a grader
//! (its grade-cache key), the scores of its examples in file order, compact (a bitset when every
//! score is exactly 0 or 1, else the f64s themselves, so that what is read back is bit for bit
//! what was graded). The leaderboard reads these instead of grading every stored reply again.

use std::collections::HashMap;

use rusqlite::{Connection, params};

use super::{Doing, MetricRow, Result, Store};
use crate::store::EvaluationRecord;

/// The tag of a bitset of pass/fail scores.
const BITS: u8 = 0;
/// The tag of little-endian f64 scores.
const FLOATS: u8 = 1;

/// `scores` as stored: `BITS`, the count (u32, little-endian) and the bits (example `i` is bit
/// `i % 8` of byte `i / 8`) when every score is exactly 0.0 or 1.0 (not -0.0); else `FLOATS` and
/// each score's little-endian bytes.
pub fn encode_scores(scores: &[f64]) -> Vec<u8> {
    let (zero, one) = (0.0f64.to_bits(), 1.0f64.to_bits());
    if scores.iter().all(|s| s.to_bits() == zero || s.to_bits() == one) && scores.len() <= u32::MAX as usize {
        let mut out = vec![BITS];
        out.extend((scores.len() as u32).to_le_bytes());
        out.extend(
            scores.chunks(8).map(|c| c.iter().enumerate().fold(0u8, |b, (i, &s)| b | (u8::from(s == 1.0) << i))),
        );
        return out;
    }
    let mut out = Vec::with_capacity(1 + 8 * scores.len());
    out.push(FLOATS);
    for s in scores {
        out.extend(s.to_le_bytes());
    }
    out
}

/// The scores [`encode_scores`] stored; `None` for bytes it cannot have written.
pub fn decode_scores(blob: &[u8]) -> Option<Vec<f64>> {
    let (&tag, rest) = blob.split_first()?;
    match tag {
        BITS => {
            let (count, bits) = rest.split_at_checked(4)?;
            let n = u32::from_le_bytes(count.try_into().ok()?) as usize;
            if bits.len() != n.div_ceil(8) {
                return None;
            }
            Some((0..n).map(|i| if bits[i / 8] >> (i % 8) & 1 == 1 { 1.0 } else { 0.0 }).collect())
        }
        FLOATS if rest.len() % 8 == 0 => {
            Some(rest.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default())).collect())
        }
        _ => None,
    }
}

/// Replaces the stored scores of an evaluation by graders' (by key); within the caller's transaction.
pub(super) fn insert_scores(conn: &Connection, evaluation_id: i64, scores: &[(String, Vec<f64>)]) -> Result<()> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT OR REPLACE INTO eval_scores (grader, evaluation_id, n, sum, scores) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .doing("storing scores")?;
    for (key, s) in scores {
        stmt.execute(params![key, evaluation_id, s.len() as i64, s.iter().sum::<f64>(), encode_scores(s)])
            .doing("storing scores")?;
    }
    Ok(())
}

impl Store {
    /// The stored scores by grader `key` of every evaluation on the data file with this hash, by
    /// evaluation id.
    pub fn stored_scores(&self, key: &str, data_sha256: &str) -> Result<HashMap<i64, Vec<f64>>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT s.evaluation_id, s.scores FROM eval_scores s JOIN evaluations e ON e.id = s.evaluation_id
                 WHERE s.grader = ?1 AND e.data_sha256 = ?2",
            )
            .doing("reading stored scores")?;
        let rows = stmt
            .query_map(params![key, data_sha256], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .doing("reading stored scores")?;
        let mut out = HashMap::new();
        for row in rows {
            let (id, blob) = row.doing("reading stored scores")?;
            // Bytes this code did not write are left out: graded again, and stored anew.
            if let Some(scores) = decode_scores(&blob) {
                out.insert(id, scores);
            }
        }
        Ok(out)
    }

    /// Stores an evaluation's scores by graders (by key), replacing those it had by the same keys.
    pub fn put_scores(&self, evaluation_id: i64, scores: &[(String, Vec<f64>)]) -> Result<()> {
        insert_scores(&self.conn, evaluation_id, scores)
    }

    /// Whether this connection can write (not a read-only file).
    pub fn writable(&self) -> Result<bool> {
        Ok(!self.conn.is_readonly(rusqlite::MAIN_DB).doing("checking the database's access")?)
    }

    /// Runs `f` in a write transaction taken at once (`BEGIN IMMEDIATE`), committed when `f`
    /// succeeds and rolled back otherwise: what `f` reads stays as it is until it has written.
    pub fn write_transaction<T, E: From<super::StoreError>>(
        &mut self,
        f: impl FnOnce(&Store) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        self.conn.execute_batch("BEGIN IMMEDIATE").doing("starting a write transaction")?;
        match f(self) {
            Ok(t) => {
                self.conn.execute_batch("COMMIT").doing("committing stored scores")?;
                Ok(t)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Every evaluation on the data file with this hash, the latest of each model first.
    pub fn evaluations_on(&self, data_sha256: &str) -> Result<Vec<EvaluationRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {} FROM evaluations WHERE data_sha256 = ?1 ORDER BY created_at DESC, id DESC",
                super::eval::EVALUATION_COLUMNS
            ))
            .doing("listing evaluations")?;
        let rows = stmt.query_map([data_sha256], super::eval::evaluation_row).doing("listing evaluations")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().doing("listing evaluations")
    }

    /// The end-of-epoch metrics of the current attempt of every run the sweep plans, by run id, in
    /// the order [`Store::run_metrics`] gives them.
    pub fn sweep_epoch_metrics(&self, sweep_id: i64) -> Result<HashMap<String, Vec<MetricRow>>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT m.run_id, m.step, m.epoch, m.train_loss, m.train_accuracy, m.valid_loss, m.valid_accuracy
                 FROM sweep_runs s
                 JOIN runs r ON r.run_id = s.run_id
                 JOIN metrics m ON m.run_id = r.run_id AND m.attempt = r.attempt AND m.kind = 'epoch'
                 WHERE s.sweep_id = ?1 AND s.active = 1
                 ORDER BY m.run_id, m.step, m.seq",
            )
            .doing("reading a sweep's metrics")?;
        let rows = stmt
            .query_map([sweep_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    MetricRow {
                        step: r.get::<_, i64>(1)? as u64,
                        epoch: r.get(2)?,
                        epoch_end: true,
                        train_loss: r.get(3)?,
                        train_accuracy: r.get(4)?,
                        valid_loss: r.get(5)?,
                        valid_accuracy: r.get(6)?,
                    },
                ))
            })
            .doing("reading a sweep's metrics")?;
        let mut out: HashMap<String, Vec<MetricRow>> = HashMap::new();
        for row in rows {
            let (run, m) = row.doing("reading a sweep's metrics")?;
            out.entry(run).or_default().push(m);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_round_trip_bit_for_bit() {
        let cases: Vec<Vec<f64>> = vec![
            vec![],
            vec![1.0],
            vec![0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0],
            (0..184).map(|i| f64::from(i % 3 == 0)).collect(),
            vec![0.5, 0.1 + 0.2, 1.0, 0.0],
            vec![-0.0, 1.0],
            vec![f64::NAN, 0.25],
        ];
        for scores in cases {
            let back = decode_scores(&encode_scores(&scores)).unwrap();
            let bits = |v: &[f64]| v.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&back), bits(&scores), "{scores:?}");
        }
        // Pass/fail scores take a bit each: 184 examples in 5 + 23 bytes.
        assert_eq!(encode_scores(&[1.0; 184]).len(), 28);
        assert_eq!(encode_scores(&[0.5; 3]).len(), 25);
        assert_eq!(encode_scores(&[-0.0])[0], FLOATS, "-0.0 is kept as it is");
    }

    fn evaluation(model: &str) -> EvaluationRecord {
        EvaluationRecord {
            id: 0,
            model: model.into(),
            data_sha256: "d".into(),
            data_file: "v.jsonl".into(),
            decoding: "local".into(),
            kind: crate::run::EvalKind::Model,
            run_id: None,
            epoch: None,
            sweep_id: None,
            n_examples: 0,
            calls: 0,
            cached: 0,
            input_tokens: 0,
            output_tokens: 0,
            seconds: 0.0,
            created_at: 0.0,
        }
    }

    fn examples(predictions: &[&str]) -> Vec<crate::store::EvalExample> {
        (predictions.iter().enumerate())
            .map(|(i, p)| crate::store::EvalExample {
                example: i,
                line: i + 1,
                conversation_sha256: format!("c{i}"),
                prompt: vec![crate::data::Message::text("user", "q")],
                reference: "a".into(),
                prediction: p.to_string(),
                probability: None,
            })
            .collect()
    }

    #[test]
    fn scores_go_with_their_evaluation_and_a_grade_cached_drops_its_graders() {
        let mut s = Store::open_in_memory().unwrap();
        let scored = |k: &str, v: &[f64]| (k.to_string(), v.to_vec());
        let id = s
            .record_scored_evaluation(
                &evaluation("m"),
                &examples(&["a", "b"]),
                &[scored("exact", &[1.0, 0.0]), scored("judge:j", &[0.5, 0.25])],
            )
            .unwrap();
        let other =
            s.record_scored_evaluation(&evaluation("m2"), &examples(&["a"]), &[scored("exact", &[1.0])]).unwrap();
        assert_eq!(s.stored_scores("exact", "d").unwrap(), HashMap::from([(id, vec![1.0, 0.0]), (other, vec![1.0])]));
        assert!(s.stored_scores("exact", "other data").unwrap().is_empty());
        let sums = s.conn.query_row("SELECT sum(sum), sum(n) FROM eval_scores", [], |r| Ok((r.get(0)?, r.get(1)?)));
        assert_eq!(sums.unwrap(), (2.75f64, 5i64));
        // Evaluated again (other replies): the scores it had go in the same transaction.
        assert_eq!(s.record_evaluation(&evaluation("m"), &examples(&["b", "b"])).unwrap(), id);
        assert_eq!(s.stored_scores("exact", "d").unwrap(), HashMap::from([(other, vec![1.0])]));
        assert!(s.stored_scores("judge:j", "d").unwrap().is_empty());
        // A grade cached again may change what a judge's stored scores read: they go.
        s.put_scores(id, &[scored("judge:j", &[0.5, 0.5]), scored("exact", &[0.0, 0.0])]).unwrap();
        s.put_grade("judge:j", "input", 0.75, "7.5").unwrap();
        assert!(s.stored_scores("judge:j", "d").unwrap().is_empty());
        assert_eq!(s.stored_scores("exact", "d").unwrap().len(), 2);
    }

    #[test]
    fn a_write_transaction_commits_or_rolls_back_what_it_wrote() {
        let mut s = Store::open_in_memory().unwrap();
        let id = s.record_evaluation(&evaluation("m"), &examples(&["a"])).unwrap();
        let failed: std::result::Result<(), super::super::StoreError> = s.write_transaction(|s| {
            s.put_scores(id, &[("exact".into(), vec![1.0])])?;
            Err(super::super::StoreError::Sql { doing: "failing", source: rusqlite::Error::QueryReturnedNoRows })
        });
        assert!(failed.is_err());
        assert!(s.stored_scores("exact", "d").unwrap().is_empty(), "rolled back");
        s.write_transaction(|s| s.put_scores(id, &[("exact".into(), vec![1.0])])).unwrap();
        assert_eq!(s.stored_scores("exact", "d").unwrap()[&id], [1.0]);
        assert!(s.writable().unwrap());
    }

    #[test]
    fn bytes_not_written_by_encode_are_refused() {
        for blob in [&[][..], &[7, 0], &[BITS, 9, 0, 0, 0, 0xff], &[BITS, 1, 0], &[FLOATS, 1, 2, 3]] {
            assert_eq!(decode_scores(blob), None, "{blob:?}");
        }
    }
}
