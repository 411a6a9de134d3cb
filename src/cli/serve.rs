//! `ftsweep serve`: runs the OpenAI-protocol server over the local trainer until Ctrl-C or
//! SIGTERM. Prints one line on stdout, the base URL, for scripts; everything else goes to stderr.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

use super::out::errln;
use super::{Cli, ExitStatus, UsageError};
use crate::serve::{ServeError, Server, Settings};
use crate::store::serve::ServeStore;

#[derive(clap::Args)]
pub struct Args {
    /// The address to listen on; the default serves this machine only.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// The port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 8089)]
    pub port: u16,
    /// The API key clients must send (`Authorization: Bearer KEY` or `api-key: KEY`). Prefer the
    /// environment variable: a command line is visible to other users of the machine.
    #[arg(long, env = "FTSWEEP_SERVE_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// The SQLite file that keeps the server's files, jobs, events and models.
    #[arg(long, default_value = "ftsweep-serve.db")]
    pub state: PathBuf,
    /// How many jobs train at the same time; the others wait as `queued`.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub max_running: u32,
    /// Accept at most this many requests per minute (429 above it); unlimited by default.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub rpm: Option<u32>,
    /// Pause this many milliseconds per trained example (a step of batch b pauses b times this), so
    /// that jobs last in proportion to what they train and stream their metrics events like hosted
    /// ones: for trying early stopping and crash recovery.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub example_delay_ms: u64,
}

/// Shows everything but the key.
impl fmt::Debug for Args {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Args")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("key", &self.key.as_ref().map(|_| "<hidden>"))
            .field("state", &self.state)
            .field("max_running", &self.max_running)
            .field("rpm", &self.rpm)
            .field("example_delay_ms", &self.example_delay_ms)
            .finish()
    }
}

pub fn run(_cli: &Cli, args: &Args) -> Result<ExitStatus> {
    let key = args.key.clone().filter(|k| !k.trim().is_empty()).ok_or_else(|| UsageError {
        message: "`serve` needs an API key for its clients".into(),
        hint: "set FTSWEEP_SERVE_KEY (or pass --key KEY); clients send it as `Authorization: Bearer KEY`".into(),
    })?;
    let store = ServeStore::open(&args.state)?;
    let settings = Settings {
        key: key.trim().to_string(),
        max_running: args.max_running as usize,
        rpm: args.rpm,
        example_delay: std::time::Duration::from_millis(args.example_delay_ms),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(async {
        let server = Server::bind(&args.host, args.port, store, settings).await.map_err(|e| match e {
            ServeError::Bind { .. } => anyhow::Error::from(UsageError {
                message: e.to_string(),
                hint: "choose another --port (0 picks a free one) or --host".into(),
            }),
            other => other.into(),
        })?;
        let url = format!("http://{}/v1", server.local_addr()?);
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{url}")?;
        stdout.flush()?;
        drop(stdout);
        errln!(
            "ftsweep serve: listening on {url} (state: {}, {} job(s) at a time); Ctrl-C stops",
            args.state.display(),
            args.max_running
        )?;
        server
            .run(async {
                super::shutdown_signal().await;
            })
            .await?;
        anyhow::Ok(())
    });
    // Open requests have been answered. Training threads are not waited for: their jobs are
    // re-queued on the next start, and every write they make is an SQLite transaction.
    runtime.shutdown_background();
    result?;
    errln!("ftsweep serve: stopped")?;
    Ok(ExitStatus::Success)
}
