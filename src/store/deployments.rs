//! Deployments (`deployments`): what a model was made answerable on at a
//! provider that bills for it while it exists (an Azure deployment, a Together
//! dedicated endpoint). Intent before effect: [`Store::intend_deployment`] is
//! written before the create request goes out, [`Store::deployment_deleted`]
//! only once the provider confirms; whatever is not `deleted` is cleaned up by
//! `resume` and `cancel` ([`Store::live_deployments`]).

use rusqlite::{OptionalExtension, params};

use super::{Doing, Result, Store, now};

/// Where a deployment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::Display)]
#[strum(serialize_all = "lowercase")]
pub enum DeploymentState {
    /// The intent is recorded; the create may or may not have reached the provider.
    Creating,
    /// Provisioned and answering.
    Ready,
    /// A delete was sent and not yet confirmed.
    Deleting,
    /// Gone at the provider (confirmed, or it never existed there).
    Deleted,
    /// The provider refused or failed it; it may still exist there, so it is
    /// deleted like a live one.
    Failed,
}

/// One row of `deployments`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentRow {
    pub id: i64,
    pub sweep_id: i64,
    /// `azure` or `together`.
    pub provider: String,
    /// The ARM account's resource id, or the API's base URL.
    pub server: String,
    /// Our name for it, deterministic (the same model gets the same name).
    pub name: String,
    pub model: String,
    pub run_id: Option<String>,
    /// The provider's own id, when it assigns one.
    pub remote_id: Option<String>,
    pub owner: String,
    pub state: DeploymentState,
    pub created_at: f64,
    pub ready_at: Option<f64>,
    pub deleted_at: Option<f64>,
    pub last_error: Option<String>,
}

/// What [`Store::intend_deployment`] records.
#[derive(Debug, Clone)]
pub struct NewDeployment<'a> {
    pub sweep_id: i64,
    pub provider: &'a str,
    pub server: &'a str,
    pub name: &'a str,
    pub model: &'a str,
    pub run_id: Option<&'a str>,
    pub owner: &'a str,
}

const COLUMNS: &str = "id, sweep_id, provider, server, name, model, run_id, remote_id, owner, state, created_at, \
                       ready_at, deleted_at, last_error";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeploymentRow> {
    let state: String = r.get(9)?;
    Ok(DeploymentRow {
        id: r.get(0)?,
        sweep_id: r.get(1)?,
        provider: r.get(2)?,
        server: r.get(3)?,
        name: r.get(4)?,
        model: r.get(5)?,
        run_id: r.get(6)?,
        remote_id: r.get(7)?,
        owner: r.get(8)?,
        state: state.parse().map_err(|_| {
            rusqlite::Error::FromSqlConversionFailure(
                9,
                rusqlite::types::Type::Text,
                format!("unknown deployment state `{state}`").into(),
            )
        })?,
        created_at: r.get(10)?,
        ready_at: r.get(11)?,
        deleted_at: r.get(12)?,
        last_error: r.get(13)?,
    })
}

impl Store {
    /// Records the intent to create a deployment, before the request goes
    /// out. A row of the same (provider, server, name) that is not deleted is
    /// taken over (its create may have reached the provider: the caller looks
    /// it up there before creating); a deleted one is reopened as `creating`.
    pub fn intend_deployment(&mut self, d: &NewDeployment<'_>) -> Result<DeploymentRow> {
        let tx = self.conn.transaction().doing("recording a deployment")?;
        tx.execute(
            "INSERT INTO deployments (sweep_id, provider, server, name, model, run_id, owner, state, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'creating', ?8)
             ON CONFLICT (provider, server, name) DO UPDATE SET
                 sweep_id = excluded.sweep_id, model = excluded.model, run_id = excluded.run_id,
                 owner = excluded.owner,
                 state = CASE WHEN state = 'deleted' THEN 'creating' ELSE state END,
                 remote_id = CASE WHEN state = 'deleted' THEN NULL ELSE remote_id END,
                 created_at = CASE WHEN state = 'deleted' THEN excluded.created_at ELSE created_at END,
                 ready_at = CASE WHEN state = 'deleted' THEN NULL ELSE ready_at END,
                 deleted_at = NULL",
            params![d.sweep_id, d.provider, d.server, d.name, d.model, d.run_id, d.owner, now()],
        )
        .doing("recording a deployment")?;
        let r = tx
            .query_row(
                &format!("SELECT {COLUMNS} FROM deployments WHERE provider = ?1 AND server = ?2 AND name = ?3"),
                params![d.provider, d.server, d.name],
                row,
            )
            .doing("recording a deployment")?;
        tx.commit().doing("recording a deployment")?;
        Ok(r)
    }

    /// The provider's id of a deployment, as soon as its create answers.
    pub fn set_deployment_remote_id(&mut self, id: i64, remote_id: &str) -> Result<()> {
        self.conn
            .execute("UPDATE deployments SET remote_id = ?2 WHERE id = ?1", params![id, remote_id])
            .doing("recording a deployment's id")?;
        Ok(())
    }

    /// The deployment is provisioned and answers.
    pub fn deployment_ready(&mut self, id: i64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE deployments SET state = 'ready', ready_at = COALESCE(ready_at, ?2), last_error = NULL WHERE id = ?1",
                params![id, now()],
            )
            .doing("recording a ready deployment")?;
        Ok(())
    }

    /// The deployment failed at the provider (it may still exist there).
    pub fn deployment_failed(&mut self, id: i64, error: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE deployments SET state = 'failed', last_error = ?2 WHERE id = ?1 AND state != 'deleted'",
                params![id, error],
            )
            .doing("recording a failed deployment")?;
        Ok(())
    }

    /// A delete is about to be sent.
    pub fn deployment_deleting(&mut self, id: i64) -> Result<()> {
        self.conn
            .execute("UPDATE deployments SET state = 'deleting' WHERE id = ?1 AND state != 'deleted'", params![id])
            .doing("recording a deployment's delete")?;
        Ok(())
    }

    /// The provider confirmed the deployment is gone (or never existed).
    pub fn deployment_deleted(&mut self, id: i64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE deployments SET state = 'deleted', deleted_at = ?2 WHERE id = ?1 AND state != 'deleted'",
                params![id, now()],
            )
            .doing("recording a deleted deployment")?;
        Ok(())
    }

    /// A delete failed; the row stays live, with why.
    pub fn deployment_error(&mut self, id: i64, error: &str) -> Result<()> {
        self.conn
            .execute("UPDATE deployments SET last_error = ?2 WHERE id = ?1", params![id, error])
            .doing("recording a deployment's error")?;
        Ok(())
    }

    /// A deployment by our name.
    pub fn deployment(&self, provider: &str, server: &str, name: &str) -> Result<Option<DeploymentRow>> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM deployments WHERE provider = ?1 AND server = ?2 AND name = ?3"),
                params![provider, server, name],
                row,
            )
            .optional()
            .doing("reading a deployment")
    }

    /// The deployments of a sweep that may still exist at the provider (every
    /// state but `deleted`), oldest first.
    pub fn live_deployments(&self, sweep_id: i64) -> Result<Vec<DeploymentRow>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM deployments WHERE sweep_id = ?1 AND state != 'deleted' ORDER BY id"
            ))
            .doing("reading deployments")?;
        let rows = stmt.query_map([sweep_id], row).doing("reading deployments")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().doing("reading deployments")
    }

    /// Every deployment of a sweep, oldest first (for `status` and tests).
    pub fn deployments(&self, sweep_id: i64) -> Result<Vec<DeploymentRow>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM deployments WHERE sweep_id = ?1 ORDER BY id"))
            .doing("reading deployments")?;
        let rows = stmt.query_map([sweep_id], row).doing("reading deployments")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().doing("reading deployments")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::store_with_sweep;

    #[test]
    fn a_deployment_is_live_from_its_intent_until_its_delete_is_confirmed() {
        let (mut store, sweep_id) = store_with_sweep();
        let new = NewDeployment {
            sweep_id,
            provider: "azure",
            server: "/subscriptions/s/resourceGroups/g/providers/Microsoft.CognitiveServices/accounts/a",
            name: "ftsweep-abc",
            model: "gpt-4.1-mini-2025-04-14.ft-1",
            run_id: Some("r-1"),
            owner: "me",
        };
        let d = store.intend_deployment(&new).unwrap();
        assert_eq!(d.state, DeploymentState::Creating);
        assert_eq!(store.live_deployments(sweep_id).unwrap().len(), 1);
        // Taken over, not duplicated, by a second intent of the same name.
        let again = store.intend_deployment(&new).unwrap();
        assert_eq!(again.id, d.id);
        store.deployment_ready(d.id).unwrap();
        store.deployment_deleting(d.id).unwrap();
        assert_eq!(store.live_deployments(sweep_id).unwrap()[0].state, DeploymentState::Deleting);
        store.deployment_deleted(d.id).unwrap();
        assert!(store.live_deployments(sweep_id).unwrap().is_empty());
        // A later evaluation of the same model reopens the row.
        let reopened = store.intend_deployment(&new).unwrap();
        assert_eq!((reopened.id, reopened.state), (d.id, DeploymentState::Creating));
        assert_eq!(reopened.ready_at, None);
        assert_eq!(store.deployments(sweep_id).unwrap().len(), 1);
    }
}
