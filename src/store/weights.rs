//! The local provider's weights in the sweep's database (`local_models`): saved per epoch with
//! the job's last epochs kept, a final model that refers to its last checkpoint instead of
//! holding a copy, and weights dropped by `ftsweep prune` (the row stays, empty, with why).

use rusqlite::{OptionalExtension, params};

use super::{Doing, Result, Store, now};

/// One model's row of weights, as `ftsweep prune` sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightsRow {
    pub model: String,
    pub job_id: String,
    pub epoch: u32,
    /// The model whose weights these are, when they are not stored in this row.
    pub same_as: Option<String>,
    /// The size of the row's own blob.
    pub bytes: u64,
    /// Why the weights are gone, when they are.
    pub dropped: Option<String>,
}

/// What `Store::missing_weights` says of a checkpoint whose job did not keep it.
pub const CHECKPOINT_NOT_KEPT: &str = "its job did not keep this checkpoint's weights: a local job keeps its final \
     model, and the checkpoints of its last three epochs only when the sweep uses them (`[evaluation] checkpoints = \
     true`, `epochs_from_checkpoints` or `[early_stopping]`)";

impl Store {
    /// Saves a local model's weights and keeps only the job's last `keep`
    /// epochs, as OpenAI keeps the last three checkpoints.
    pub fn save_local_model(&mut self, model: &str, job_id: &str, epoch: u32, weights: &[u8], keep: u32) -> Result<()> {
        self.save_local_row(model, job_id, epoch, weights, None, keep)
    }

    /// Saves `model` as having the weights of `same_as`, a model of the same job saved before (a
    /// job's final model is its last epoch's checkpoint); keeps the job's last `keep` epochs.
    pub fn save_local_model_same_as(
        &mut self,
        model: &str,
        job_id: &str,
        epoch: u32,
        same_as: &str,
        keep: u32,
    ) -> Result<()> {
        self.save_local_row(model, job_id, epoch, &[], Some(same_as), keep)
    }

    fn save_local_row(
        &mut self,
        model: &str,
        job_id: &str,
        epoch: u32,
        weights: &[u8],
        same_as: Option<&str>,
        keep: u32,
    ) -> Result<()> {
        let tx = self.conn.transaction().doing("saving a local model")?;
        tx.execute(
            "INSERT OR REPLACE INTO local_models (model, job_id, epoch, weights, same_as, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![model, job_id, epoch, weights, same_as, now()],
        )
        .doing("saving a local model")?;
        tx.execute(
            "DELETE FROM local_models WHERE job_id = ?1 AND epoch <= ?2",
            params![job_id, i64::from(epoch) - i64::from(keep)],
        )
        .doing("pruning old checkpoints")?;
        tx.commit().doing("saving a local model")
    }

    /// A local model's weights (those of the model it is the same as, if any); `None` when it
    /// has none here (see `missing_weights` for why).
    pub fn load_local_model(&self, model: &str) -> Result<Option<Vec<u8>>> {
        let mut name = model.to_string();
        // A reference names a model with weights of its own; a few steps guard against a loop.
        for _ in 0..4 {
            let row: Option<(Vec<u8>, Option<String>, Option<String>)> = self
                .conn
                .query_row("SELECT weights, same_as, dropped FROM local_models WHERE model = ?1", [&name], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()
                .doing("loading a local model")?;
            match row {
                Some((weights, None, None)) => return Ok(Some(weights)),
                Some((_, Some(target), None)) => name = target,
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Why a local model has no weights here: dropped by `ftsweep prune`, or a checkpoint its
    /// job did not keep. `None`: the model is unknown (or has its weights).
    pub fn missing_weights(&self, model: &str) -> Result<Option<String>> {
        let mut name = model.to_string();
        for _ in 0..4 {
            let row: Option<(Option<String>, Option<String>)> = self
                .conn
                .query_row("SELECT same_as, dropped FROM local_models WHERE model = ?1", [&name], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .doing("looking up a local model")?;
            match row {
                Some((_, Some(why))) => return Ok(Some(why)),
                Some((Some(target), None)) => name = target,
                Some((None, None)) => return Ok(None),
                None if name != model => return Ok(Some(format!("its weights were those of `{name}`, which is gone"))),
                None => {
                    // A checkpoint's id is its job's model id with `:ckpt-step-N` appended.
                    let Some((job_model, _)) = model.rsplit_once(":ckpt-step-") else { return Ok(None) };
                    let known: bool = self
                        .conn
                        .query_row("SELECT EXISTS (SELECT 1 FROM local_models WHERE model = ?1)", [job_model], |r| {
                            r.get(0)
                        })
                        .doing("looking up a local model")?;
                    return Ok(known.then(|| CHECKPOINT_NOT_KEPT.to_string()));
                }
            }
        }
        Ok(None)
    }

    /// The weights rows of these jobs, by job and epoch.
    pub fn job_weights(&self, job_ids: &[String]) -> Result<Vec<WeightsRow>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT model, job_id, epoch, same_as, length(weights), dropped FROM local_models
                 WHERE job_id = ?1 ORDER BY epoch, model",
            )
            .doing("listing weights")?;
        let mut out = Vec::new();
        for job in job_ids {
            let rows = stmt
                .query_map([job], |r| {
                    Ok(WeightsRow {
                        model: r.get(0)?,
                        job_id: r.get(1)?,
                        epoch: r.get(2)?,
                        same_as: r.get(3)?,
                        bytes: r.get::<_, i64>(4)?.max(0) as u64,
                        dropped: r.get(5)?,
                    })
                })
                .doing("listing weights")?;
            out.extend(rows.collect::<rusqlite::Result<Vec<_>>>().doing("listing weights")?);
        }
        Ok(out)
    }

    /// Drops the weights of `models` in one transaction, keeping their rows with `reason`;
    /// returns the bytes of blobs emptied. Models already dropped are left as they are.
    pub fn drop_weights(&mut self, models: &[String], reason: &str) -> Result<u64> {
        let tx = self.conn.transaction().doing("dropping weights")?;
        let mut freed = 0u64;
        for model in models {
            let bytes: Option<i64> = tx
                .query_row(
                    "SELECT length(weights) FROM local_models WHERE model = ?1 AND dropped IS NULL",
                    [model],
                    |r| r.get(0),
                )
                .optional()
                .doing("dropping weights")?;
            if let Some(bytes) = bytes {
                tx.execute(
                    "UPDATE local_models SET weights = x'', same_as = NULL, dropped = ?2 WHERE model = ?1",
                    params![model, reason],
                )
                .doing("dropping weights")?;
                freed += bytes.max(0) as u64;
            }
        }
        tx.commit().doing("dropping weights")?;
        Ok(freed)
    }

    /// Rewrites the database file without its free pages (`VACUUM`), and empties the WAL, so
    /// that the file shrinks by what was dropped.
    pub fn vacuum(&mut self) -> Result<()> {
        self.conn.execute_batch("VACUUM").doing("compacting the database")?;
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).doing("checkpointing the database")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_final_model_refers_to_its_checkpoint_and_follows_the_window() {
        let mut s = Store::open_in_memory().unwrap();
        for epoch in 1..=4 {
            s.save_local_model(&format!("m:ckpt-step-{epoch}"), "j", epoch, &[epoch as u8; 3], 3).unwrap();
        }
        s.save_local_model_same_as("m", "j", 4, "m:ckpt-step-4", 3).unwrap();
        assert_eq!(s.load_local_model("m").unwrap(), Some(vec![4; 3]));
        assert_eq!(s.load_local_model("m:ckpt-step-2").unwrap(), Some(vec![2; 3]));
        // The window dropped epoch 1; the final model's row holds no copy.
        assert_eq!(s.load_local_model("m:ckpt-step-1").unwrap(), None);
        assert_eq!(s.missing_weights("m:ckpt-step-1").unwrap().as_deref(), Some(CHECKPOINT_NOT_KEPT));
        assert_eq!(s.missing_weights("other:ckpt-step-1").unwrap(), None, "an unknown job's checkpoint is unknown");
        assert_eq!(s.missing_weights("nope").unwrap(), None);
        let rows = s.job_weights(&["j".into()]).unwrap();
        let sizes: Vec<(&str, u64, Option<&str>)> =
            rows.iter().map(|w| (w.model.as_str(), w.bytes, w.same_as.as_deref())).collect();
        assert_eq!(
            sizes,
            [
                ("m:ckpt-step-2", 3, None),
                ("m:ckpt-step-3", 3, None),
                ("m", 0, Some("m:ckpt-step-4")),
                ("m:ckpt-step-4", 3, None)
            ]
        );
    }

    #[test]
    fn dropped_weights_leave_the_row_and_the_reason() {
        let mut s = Store::open_in_memory().unwrap();
        s.save_local_model("m:ckpt-step-1", "j", 1, &[1; 10], 3).unwrap();
        s.save_local_model_same_as("m", "j", 1, "m:ckpt-step-1", 3).unwrap();
        s.save_local_model("k", "i", 1, &[2; 5], 3).unwrap();
        let freed = s.drop_weights(&["m:ckpt-step-1".into(), "nope".into()], "pruned").unwrap();
        assert_eq!(freed, 10);
        assert_eq!(s.load_local_model("m:ckpt-step-1").unwrap(), None);
        assert_eq!(s.load_local_model("m").unwrap(), None, "a reference to dropped weights has none");
        assert_eq!(s.missing_weights("m:ckpt-step-1").unwrap().as_deref(), Some("pruned"));
        assert_eq!(s.missing_weights("m").unwrap().as_deref(), Some("pruned"));
        assert_eq!(s.drop_weights(&["m:ckpt-step-1".into()], "again").unwrap(), 0, "dropped once");
        assert_eq!(s.missing_weights("m:ckpt-step-1").unwrap().as_deref(), Some("pruned"));
        assert_eq!(s.load_local_model("k").unwrap(), Some(vec![2; 5]));
        s.vacuum().unwrap();
        assert_eq!(s.load_local_model("k").unwrap(), Some(vec![2; 5]));
    }
}
