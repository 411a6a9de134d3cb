//! The serve store's tables for `serve --protocol azure`: what each Azure job was asked to
//! fine-tune, when an upload is processed, and Azure Resource Manager's deployments.

use rusqlite::{OptionalExtension, Row, params};

use super::{Doing, Result, ServeStore, from_json, to_json};

/// A deployment as stored: ARM's object (without its provisioning state) and its times.
#[derive(Debug, Clone, PartialEq)]
pub struct AzureDeployment {
    /// The account's resource id, in lower case.
    pub account: String,
    /// The deployment's name, in lower case.
    pub name: String,
    /// The deployment as ARM shows it, without `properties.provisioningState`.
    pub object: serde_json::Value,
    /// The local model it answers with.
    pub serves: String,
    /// The model's Azure id, which its chat completions name.
    pub model_id: String,
    /// Creating until then (Unix milliseconds), Succeeded after.
    pub ready_at_ms: i64,
    /// Set by a DELETE: Deleting until then, gone after.
    pub gone_at_ms: Option<i64>,
}

fn deployment(r: &Row<'_>) -> rusqlite::Result<AzureDeployment> {
    Ok(AzureDeployment {
        account: r.get(0)?,
        name: r.get(1)?,
        object: from_json(r, 2)?,
        serves: r.get(3)?,
        model_id: r.get(4)?,
        ready_at_ms: r.get(5)?,
        gone_at_ms: r.get(6)?,
    })
}

const DEPLOYMENT_COLUMNS: &str = "account, name, object, serves, model_id, ready_at_ms, gone_at_ms";

impl ServeStore {
    /// Records what an Azure job was asked to fine-tune (`model`) and its root base model.
    pub fn insert_azure_job(&mut self, job_id: &str, model: &str, base_model: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO azure_jobs (job_id, model, base_model) VALUES (?1, ?2, ?3)",
                params![job_id, model, base_model],
            )
            .doing("recording an Azure job's model")?;
        Ok(())
    }

    /// An Azure job's `(model, base_model)`, if the job was created through the Azure routes.
    pub fn azure_job(&self, job_id: &str) -> Result<Option<(String, String)>> {
        self.conn
            .query_row("SELECT model, base_model FROM azure_jobs WHERE job_id = ?1", [job_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .doing("reading an Azure job's model")
    }

    /// Records when an upload is processed (Unix milliseconds).
    pub fn set_azure_file_processed_at(&mut self, file_id: &str, at_ms: i64) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO azure_files (file_id, processed_at_ms) VALUES (?1, ?2)",
                params![file_id, at_ms],
            )
            .doing("recording when an upload is processed")?;
        Ok(())
    }

    /// When an upload is processed, if it was made through the Azure routes.
    pub fn azure_file_processed_at(&self, file_id: &str) -> Result<Option<i64>> {
        self.conn
            .query_row("SELECT processed_at_ms FROM azure_files WHERE file_id = ?1", [file_id], |r| r.get(0))
            .optional()
            .doing("reading when an upload is processed")
    }

    /// Creates or replaces a deployment (by account and name).
    pub fn put_azure_deployment(&mut self, d: &AzureDeployment) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO azure_deployments (account, name, object, serves, model_id, ready_at_ms, gone_at_ms)
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                   ON CONFLICT (account, name) DO UPDATE SET object = ?3, serves = ?4, model_id = ?5,
                     ready_at_ms = ?6, gone_at_ms = ?7",
                params![
                    d.account,
                    d.name,
                    to_json(&d.object).doing("encoding a deployment")?,
                    d.serves,
                    d.model_id,
                    d.ready_at_ms,
                    d.gone_at_ms
                ],
            )
            .doing("storing a deployment")?;
        Ok(())
    }

    /// One account's deployment by name (both in lower case), gone or not.
    pub fn azure_deployment(&self, account: &str, name: &str) -> Result<Option<AzureDeployment>> {
        self.conn
            .query_row(
                &format!("SELECT {DEPLOYMENT_COLUMNS} FROM azure_deployments WHERE account = ?1 AND name = ?2"),
                [account, name],
                deployment,
            )
            .optional()
            .doing("reading a deployment")
    }

    /// An account's deployments, oldest first.
    pub fn azure_deployments(&self, account: &str) -> Result<Vec<AzureDeployment>> {
        let sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM azure_deployments WHERE account = ?1 ORDER BY seq");
        let mut stmt = self.conn.prepare_cached(&sql).doing("listing deployments")?;
        let rows = stmt.query_map([account], deployment).doing("listing deployments")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().doing("listing deployments")
    }

    /// The deployments of every account with this name (in lower case), newest first: the data
    /// plane knows deployments by name only.
    pub fn azure_deployments_named(&self, name: &str) -> Result<Vec<AzureDeployment>> {
        let sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM azure_deployments WHERE name = ?1 ORDER BY seq DESC");
        let mut stmt = self.conn.prepare_cached(&sql).doing("finding a deployment")?;
        let rows = stmt.query_map([name], deployment).doing("finding a deployment")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().doing("finding a deployment")
    }

    /// Forgets a deployment; returns whether there was one.
    pub fn delete_azure_deployment(&mut self, account: &str, name: &str) -> Result<bool> {
        let n = self
            .conn
            .execute("DELETE FROM azure_deployments WHERE account = ?1 AND name = ?2", [account, name])
            .doing("deleting a deployment")?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn deployments_are_kept_by_account_and_name_and_replaced_in_place() {
        let mut s = ServeStore::open_in_memory().unwrap();
        let d = |account: &str, name: &str, serves: &str| AzureDeployment {
            account: account.into(),
            name: name.into(),
            object: json!({"name": name}),
            serves: serves.into(),
            model_id: "gpt".into(),
            ready_at_ms: 5,
            gone_at_ms: None,
        };
        s.put_azure_deployment(&d("a1", "dep", "m1")).unwrap();
        s.put_azure_deployment(&d("a2", "dep", "m2")).unwrap();
        s.put_azure_deployment(&AzureDeployment { gone_at_ms: Some(9), ..d("a1", "dep", "m3") }).unwrap();
        let got = s.azure_deployment("a1", "dep").unwrap().unwrap();
        assert_eq!((got.serves.as_str(), got.gone_at_ms), ("m3", Some(9)));
        assert_eq!(s.azure_deployments("a1").unwrap().len(), 1);
        let named: Vec<String> = s.azure_deployments_named("dep").unwrap().into_iter().map(|d| d.serves).collect();
        assert_eq!(named, ["m2", "m3"]);
        assert!(s.delete_azure_deployment("a1", "dep").unwrap() && !s.delete_azure_deployment("a1", "dep").unwrap());
        assert_eq!(s.azure_deployment("a1", "dep").unwrap(), None);
    }

    #[test]
    fn azure_jobs_and_files_are_recorded() {
        let mut s = ServeStore::open_in_memory().unwrap();
        s.insert_azure_job("j", "gpt-4.1-mini-2025-04-14", "gpt-4.1-mini-2025-04-14").unwrap();
        assert_eq!(s.azure_job("j").unwrap().unwrap().1, "gpt-4.1-mini-2025-04-14");
        assert_eq!(s.azure_job("other").unwrap(), None);
        s.set_azure_file_processed_at("f", 42).unwrap();
        assert_eq!(s.azure_file_processed_at("f").unwrap(), Some(42));
        assert_eq!(s.azure_file_processed_at("g").unwrap(), None);
    }
}
