//! Durability in the store: leases that let several processes share a
//! database without training a run twice, the budget checked and committed
//! in the same transaction as a run's launch, queued runs, and costs.

use rusqlite::{TransactionBehavior, params};

use super::{Doing, Result, RunState, Store, now};

/// What a process learns when it asks for a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The run is this process's; for a new training attempt, its number.
    Claimed { attempt: Option<i64> },
    /// Another live process owns the run.
    Taken { owner: String },
    /// Launching it would take the sweep over its budget.
    OverBudget { reason: String },
}

/// A sweep's spending limits.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Budget {
    pub usd: Option<f64>,
    pub tokens: Option<u64>,
}

/// What a sweep has spent and committed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BudgetState {
    /// Reconciled from the trained tokens of finished jobs.
    pub spent_usd: f64,
    pub spent_tokens: u64,
    /// Estimates of the runs launched and not finished.
    pub running_usd: f64,
    pub running_tokens: u64,
}

/// The control columns of a run: its owner, lease, queue and costs.
#[derive(Debug, Clone, PartialEq)]
pub struct RunControl {
    pub run_id: String,
    pub owner: Option<String>,
    pub lease_until: Option<f64>,
    pub not_before: Option<f64>,
    pub note: Option<String>,
    pub estimated_tokens: Option<i64>,
    pub estimated_cost_usd: Option<f64>,
    pub cost_usd: Option<f64>,
    pub updated_at: f64,
}

impl Store {
    /// Claims a run for this process: granted when no live process holds
    /// it. `alive` tells whether another owner still runs (its lease may not
    /// have expired yet after a crash). With `launch`, a new training attempt
    /// begins in the same transaction, after checking the budget: the run
    /// becomes `launching` with its estimate counted as committed spend.
    pub fn claim(
        &mut self,
        run_id: &str,
        owner: &str,
        lease_secs: f64,
        alive: &dyn Fn(&str) -> bool,
        // The budget, the run's estimated tokens and USD, and its sweep.
        launch: Option<(Budget, u64, f64, i64)>,
    ) -> Result<Claim> {
        let t = now();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).doing("claiming a run")?;
        let (holder, lease_until): (Option<String>, Option<f64>) = tx
            .query_row("SELECT owner, lease_until FROM runs WHERE run_id = ?1", [run_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .doing("reading a run's owner")?;
        if let Some(h) = holder.filter(|h| h != owner)
            && lease_until.is_some_and(|l| l > t)
            && alive(&h)
        {
            return Ok(Claim::Taken { owner: h });
        }
        let mut attempt = None;
        if let Some((budget, tokens, usd, sweep_id)) = launch {
            let state = budget_state(&tx, sweep_id)?;
            let over_usd = budget.usd.filter(|b| state.spent_usd + state.running_usd + usd > *b + 1e-9);
            let over_tokens = budget.tokens.filter(|b| state.spent_tokens + state.running_tokens + tokens > *b);
            if over_usd.is_some() || over_tokens.is_some() {
                let reason = match (over_usd, over_tokens) {
                    (Some(b), _) => format!(
                        "skipped: its estimate of ${usd:.2} would take the sweep over its budget of ${b:.2} \
                         (${:.2} spent, ${:.2} committed to running jobs)",
                        state.spent_usd, state.running_usd
                    ),
                    (None, Some(b)) => format!(
                        "skipped: its ~{tokens} trained tokens would take the sweep over max_trained_tokens = {b} \
                         ({} trained, {} committed to running jobs)",
                        state.spent_tokens, state.running_tokens
                    ),
                    (None, None) => unreachable!("one limit is exceeded"),
                };
                tx.execute("UPDATE runs SET note = ?2, updated_at = ?3 WHERE run_id = ?1", params![run_id, reason, t])
                    .doing("noting a skipped run")?;
                tx.commit().doing("claiming a run")?;
                return Ok(Claim::OverBudget { reason });
            }
            tx.execute(
                "UPDATE runs SET state = ?5, attempt = attempt + 1, job_id = NULL, model = NULL, error = NULL,
                     trained_tokens = NULL, train_loss = NULL, train_accuracy = NULL, valid_loss = NULL,
                     valid_accuracy = NULL, metric = NULL, score = NULL, n_eval = NULL, train_seconds = NULL,
                     eval_seconds = NULL, note = NULL, not_before = NULL, cost_usd = NULL, stop_reason = NULL, model_epochs = NULL,
                     estimated_tokens = ?2, estimated_cost_usd = ?3, updated_at = ?4
                 WHERE run_id = ?1",
                params![run_id, tokens as i64, usd, t, RunState::Launching],
            )
            .doing("launching a run")?;
            attempt = Some(
                tx.query_row("SELECT attempt FROM runs WHERE run_id = ?1", [run_id], |r| r.get(0))
                    .doing("reading the attempt")?,
            );
        }
        tx.execute(
            "UPDATE runs SET owner = ?2, lease_until = ?3 WHERE run_id = ?1",
            params![run_id, owner, t + lease_secs],
        )
        .doing("claiming a run")?;
        tx.commit().doing("claiming a run")?;
        Ok(Claim::Claimed { attempt })
    }

    /// Records why early stopping ended a run's job (the run keeps its state)
    /// and the epochs behind the checkpoint that became its model.
    pub fn set_stop_reason(&mut self, run_id: &str, reason: &str, model_epochs: Option<u32>) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET stop_reason = ?2, model_epochs = ?3, updated_at = ?4 WHERE run_id = ?1",
                params![run_id, reason, model_epochs, now()],
            )
            .doing("recording an early stop")?;
        Ok(())
    }

    /// Ends a run whose job early stopping cancelled and that has no model
    /// to evaluate: `cancelled`, with the reason and the tokens it cost.
    pub fn set_stopped(&mut self, run_id: &str, reason: &str, trained_tokens: i64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET state = ?5, stop_reason = ?2, error = ?2, trained_tokens = ?3, updated_at = ?4
                 WHERE run_id = ?1",
                params![run_id, reason, trained_tokens, now(), RunState::Cancelled],
            )
            .doing("recording an early stop")?;
        Ok(())
    }

    /// Extends the leases of every run this process owns.
    pub fn renew_leases(&mut self, owner: &str, lease_secs: f64) -> Result<usize> {
        self.conn
            .execute("UPDATE runs SET lease_until = ?2 WHERE owner = ?1", params![owner, now() + lease_secs])
            .doing("renewing leases")
    }

    /// Gives a run up: another process may take it.
    pub fn release(&mut self, run_id: &str, owner: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET owner = NULL, lease_until = NULL WHERE run_id = ?1 AND owner = ?2",
                params![run_id, owner],
            )
            .doing("releasing a run")?;
        Ok(())
    }

    /// Puts a run whose launch the provider refused for now (a daily cap, a
    /// full concurrency limit) back in the queue until `not_before`.
    pub fn queue(&mut self, run_id: &str, not_before: f64, note: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET not_before = ?2, note = ?3, updated_at = ?4 WHERE run_id = ?1",
                params![run_id, not_before, note, now()],
            )
            .doing("queueing a run")?;
        Ok(())
    }

    /// Records a run's actual cost, reconciled from its trained tokens.
    pub fn set_cost(&mut self, run_id: &str, cost_usd: f64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET cost_usd = ?2, not_before = NULL, note = NULL WHERE run_id = ?1",
                params![run_id, cost_usd],
            )
            .doing("recording a cost")?;
        Ok(())
    }

    /// Sets a run back to `planned` (its local job died with its process).
    pub fn set_planned(&mut self, run_id: &str, note: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET state = ?4, job_id = NULL, note = ?2, updated_at = ?3 WHERE run_id = ?1",
                params![run_id, note, now(), RunState::Planned],
            )
            .doing("resetting a run")?;
        Ok(())
    }

    /// Marks a run cancelled, with what it cost until then.
    pub fn set_cancelled(&mut self, run_id: &str, reason: &str, trained_tokens: Option<i64>) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET state = ?2, error = ?3, trained_tokens = COALESCE(?4, trained_tokens), updated_at = ?5
                 WHERE run_id = ?1",
                params![run_id, RunState::Cancelled.as_str(), reason, trained_tokens, now()],
            )
            .doing("cancelling a run")?;
        Ok(())
    }

    /// The control columns of a sweep's active runs, in plan order.
    pub fn run_controls(&self, sweep_id: i64) -> Result<Vec<RunControl>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT r.run_id, r.owner, r.lease_until, r.not_before, r.note, r.estimated_tokens,
                        r.estimated_cost_usd, r.cost_usd, r.updated_at
                 FROM sweep_runs s JOIN runs r ON r.run_id = s.run_id
                 WHERE s.sweep_id = ?1 AND s.active = 1 ORDER BY s.position",
            )
            .doing("reading run controls")?;
        let rows = stmt
            .query_map([sweep_id], |r| {
                Ok(RunControl {
                    run_id: r.get(0)?,
                    owner: r.get(1)?,
                    lease_until: r.get(2)?,
                    not_before: r.get(3)?,
                    note: r.get(4)?,
                    estimated_tokens: r.get(5)?,
                    estimated_cost_usd: r.get(6)?,
                    cost_usd: r.get(7)?,
                    updated_at: r.get(8)?,
                })
            })
            .doing("reading run controls")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().doing("reading run controls")
    }

    /// What a sweep has spent and committed.
    pub fn budget_state(&self, sweep_id: i64) -> Result<BudgetState> {
        budget_state(&self.conn, sweep_id)
    }

    /// A run's latest progress in its current attempt: its last step and epoch reported, and
    /// the training loss of its last step that has one; `None` before its first metric row.
    pub fn run_progress(&self, run_id: &str) -> Result<Option<RunProgress>> {
        let row: (Option<i64>, Option<i64>, Option<f64>) = self
            .conn
            .query_row(
                "SELECT max(m.step), max(m.epoch),
                        (SELECT l.train_loss FROM metrics l
                         WHERE l.run_id = r.run_id AND l.attempt = r.attempt AND l.train_loss IS NOT NULL
                         ORDER BY l.step DESC, l.kind DESC, l.seq DESC LIMIT 1)
                 FROM runs r JOIN metrics m ON m.run_id = r.run_id AND m.attempt = r.attempt
                 WHERE r.run_id = ?1",
                [run_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .doing("reading a run's progress")?;
        Ok(row.0.zip(row.1).map(|(step, epoch)| RunProgress {
            step: step.max(0) as u64,
            epoch: epoch.max(0) as u32,
            train_loss: row.2.filter(|l| l.is_finite()),
        }))
    }
}

/// How far a run's job has come, from its metric rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunProgress {
    pub step: u64,
    /// 0 when the provider could not tell the epoch.
    pub epoch: u32,
    pub train_loss: Option<f64>,
}

fn budget_state(conn: &rusqlite::Connection, sweep_id: i64) -> Result<BudgetState> {
    let sql = "SELECT COALESCE(sum(r.cost_usd), 0), COALESCE(sum(r.trained_tokens), 0),
                COALESCE(sum(CASE WHEN r.state IN (?2, ?3) AND r.trained_tokens IS NULL THEN r.estimated_cost_usd END), 0),
                COALESCE(sum(CASE WHEN r.state IN (?2, ?3) AND r.trained_tokens IS NULL THEN r.estimated_tokens END), 0)
         FROM sweep_runs s JOIN runs r ON r.run_id = s.run_id WHERE s.sweep_id = ?1";
    conn.query_row(sql, params![sweep_id, RunState::Launching, RunState::Training], |r| {
        Ok(BudgetState {
            spent_usd: r.get(0)?,
            spent_tokens: r.get::<_, i64>(1)? as u64,
            running_usd: r.get(2)?,
            running_tokens: r.get::<_, i64>(3)? as u64,
        })
    })
    .doing("reading the budget")
}
