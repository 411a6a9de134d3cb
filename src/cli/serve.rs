//! `ftsweep serve`: runs the OpenAI-protocol server over the local trainer (and vLLM's LoRA
//! adapter endpoints for the adapters `ftsweep train` writes) until Ctrl-C or
//! SIGTERM. Prints one line on stdout, the base URL, for scripts; everything else goes to stderr.

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;

use super::out::errln;
use super::{Cli, ExitStatus, UsageError};
use crate::serve::{Protocol, SHUTDOWN_GRACE, ServeError, Server, Settings};
use crate::store::serve::ServeStore;

#[derive(clap::Args)]
pub struct Args {
    /// The address to listen on; the default serves this machine only. Any other address serves
    /// plain HTTP to the network, where the key travels in clear.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// The port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 8089)]
    pub port: u16,
    /// The API key clients must send (`Authorization: Bearer KEY` or `api-key: KEY`), 16 characters
    /// at least. Prefer the environment variable: a command line is visible to other users of the
    /// machine.
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
    /// ones: for trying early stopping and crash recovery. A fraction is allowed (`5.5`).
    #[arg(long, default_value_t = 0.0, value_parser = delay_ms)]
    pub example_delay_ms: f64,
    /// How many LoRA adapters (`POST /v1/load_lora_adapter`) may be loaded at a time. Loading one
    /// more is refused with a 400 (vLLM with `--max-loras` swaps adapters instead): a client that
    /// never unloads is caught.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_loras: u32,
    /// The provider protocol to speak: `openai` (under /v1), `azure` (Azure OpenAI's /openai/v1 data plane
    /// and Azure Resource Manager's deployments), or `together` (Together AI's /v1/files, /v1/fine-tunes
    /// and /v1/endpoints). The URL printed is the one to give clients.
    #[arg(long, value_enum, default_value_t = Protocol::Openai)]
    pub protocol: Protocol,
    /// With `--protocol together`: how long a dedicated endpoint takes to start (PENDING, then
    /// STARTING for the second half, then STARTED).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub endpoint_delay_ms: u64,
    /// `--protocol azure`: how long a deployment stays `Creating` after its PUT (and `Deleting`
    /// after its DELETE), in milliseconds.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub deployment_delay_ms: u64,
    /// `--protocol azure`: how long an upload stays `uploaded` before it is `processed` and a job
    /// may use it, in milliseconds.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub file_delay_ms: u64,
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
            .field("max_loras", &self.max_loras)
            .field("protocol", &self.protocol)
            .field("endpoint_delay_ms", &self.endpoint_delay_ms)
            .field("deployment_delay_ms", &self.deployment_delay_ms)
            .field("file_delay_ms", &self.file_delay_ms)
            .finish()
    }
}

/// The shortest key `serve` accepts.
const MIN_KEY_CHARS: usize = 16;

/// The key, trimmed: present and long enough to be hard to guess.
fn check_key(key: Option<&str>) -> Result<String, UsageError> {
    let key = key.map(str::trim).filter(|k| !k.is_empty()).ok_or_else(|| UsageError {
        message: "`serve` needs an API key for its clients".into(),
        hint: "set FTSWEEP_SERVE_KEY (or pass --key KEY); clients send it as `Authorization: Bearer KEY`".into(),
    })?;
    let n = key.chars().count();
    if n < MIN_KEY_CHARS {
        return Err(UsageError {
            message: format!("the API key is {n} characters long: `serve` needs at least {MIN_KEY_CHARS}"),
            hint:
                "set FTSWEEP_SERVE_KEY to a longer random key, e.g. `export FTSWEEP_SERVE_KEY=$(openssl rand -hex 16)`"
                    .into(),
        });
    }
    Ok(key.to_string())
}

/// The warning for a server that listens beyond this machine: it speaks plain HTTP, so clients
/// there send the key in clear.
fn clear_text_warning(addr: SocketAddr) -> Option<String> {
    (!addr.ip().to_canonical().is_loopback()).then(|| {
        format!(
            "{addr} is not a loopback address: `serve` has no TLS, so clients reaching it over the network \
             send the API key in clear; keep the default --host 127.0.0.1, or put a TLS proxy in front of it"
        )
    })
}

pub fn run(_cli: &Cli, args: &Args) -> Result<ExitStatus> {
    let key = check_key(args.key.as_deref())?;
    let store = ServeStore::open(&args.state)?;
    let settings = Settings {
        protocol: args.protocol,
        key,
        max_running: args.max_running as usize,
        rpm: args.rpm,
        example_delay: std::time::Duration::from_secs_f64(args.example_delay_ms / 1000.0),
        max_loras: args.max_loras as usize,
        endpoint_delay: std::time::Duration::from_millis(args.endpoint_delay_ms),
        deployment_delay: std::time::Duration::from_millis(args.deployment_delay_ms),
        file_delay: std::time::Duration::from_millis(args.file_delay_ms),
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
        let addr = server.local_addr()?;
        if let Some(warning) = clear_text_warning(addr) {
            errln!("warning: {warning}")?;
        }
        let url = args.protocol.url(addr);
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{url}")?;
        stdout.flush()?;
        drop(stdout);
        errln!(
            "ftsweep serve: listening on {url} (state: {}, {} job(s) at a time); Ctrl-C stops",
            args.state.display(),
            args.max_running
        )?;
        let cut = server
            .run(async {
                super::shutdown_signal().await;
            })
            .await?;
        if cut > 0 {
            errln!(
                "ftsweep serve: {cut} connection(s) still busy {} s after the stop signal were closed",
                SHUTDOWN_GRACE.as_secs()
            )?;
        }
        anyhow::Ok(())
    });
    // Open requests have been answered. Training threads are not waited for: their jobs are
    // re-queued on the next start, and every write they make is an SQLite transaction.
    runtime.shutdown_background();
    result?;
    errln!("ftsweep serve: stopped")?;
    Ok(ExitStatus::Success)
}

/// `--example-delay-ms`: milliseconds from 0 to 60000, a fraction allowed.
fn delay_ms(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(ms) if ms.is_finite() && (0.0..=60_000.0).contains(&ms) => Ok(ms),
        _ => Err(format!("`{text}` is not a number of milliseconds from 0 to 60000 (such as 4 or 5.5)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_present_and_sixteen_characters_long() {
        for missing in [None, Some(""), Some("   ")] {
            assert!(check_key(missing).unwrap_err().message.contains("needs an API key"));
        }
        let short = check_key(Some(" fifteen-chars-k ")).unwrap_err();
        assert_eq!(short.message, "the API key is 15 characters long: `serve` needs at least 16");
        assert!(short.hint.contains("FTSWEEP_SERVE_KEY") && !short.message.contains("fifteen"), "{short:?}");
        assert_eq!(check_key(Some(" sixteen-chars-ky\n")).unwrap(), "sixteen-chars-ky");
    }

    #[test]
    fn only_addresses_beyond_this_machine_are_warned_about() {
        let warned = |a: &str| clear_text_warning(a.parse().unwrap()).is_some();
        for quiet in ["127.0.0.1:8089", "127.9.9.9:1", "[::1]:8089", "[::ffff:127.0.0.1]:8089"] {
            assert!(!warned(quiet), "{quiet}");
        }
        for loud in ["0.0.0.0:8089", "[::]:8089", "192.168.1.20:8089", "[::ffff:10.0.0.1]:80"] {
            assert!(warned(loud), "{loud}");
        }
        let text = clear_text_warning("0.0.0.0:8089".parse().unwrap()).unwrap();
        assert!(text.contains("in clear") && text.contains("--host 127.0.0.1"), "{text}");
    }

    #[test]
    fn the_example_delay_takes_whole_or_fractional_milliseconds_in_range() {
        assert_eq!(super::delay_ms("4"), Ok(4.0));
        assert_eq!(super::delay_ms("5.5"), Ok(5.5));
        for bad in ["-1", "nan", "inf", "60001", "fast"] {
            assert!(super::delay_ms(bad).unwrap_err().contains("milliseconds from 0 to 60000"), "{bad}");
        }
    }
}
