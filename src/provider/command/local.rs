//! The local engine: each submission is a detached process on this machine.
//!
//! `submit` takes an exclusive `flock` on `{output_dir}/job.lock` and starts
//! the wrapper (`ftsweep` itself, [`WRAPPER_COMMAND`]) with that locked file
//! as its standard input, so the lock is held exactly as long as the wrapper
//! lives, whatever becomes of ftsweep (kill -9 included). The wrapper makes
//! its own session, starts the trainer in a process group of its own (stdin
//! `/dev/null`, stdout and stderr appended to `{output_dir}/train.log`),
//! writes the trainer's pid to `job.pid`, waits for it and writes how it
//! exited to `exit_status` (atomically). So a job's state is on disk: the
//! lock held is running; `exit_status` is ended; neither is never started,
//! and `submit` starts a job only then, so never twice. `stop` records
//! `stop_requested`, then sends SIGTERM to the trainer's process group (a
//! signal death after a stop is `Stopped`). With `[engine] gpus`, each job
//! gets a listed GPU no other running job has (`CUDA_VISIBLE_DEVICES`), and
//! a job waits for one.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::engine::{JobState, LOG_TAIL_LINES, Submission};
use crate::provider::ProviderError;

/// The hidden `ftsweep` subcommand that runs a trainer and records its exit:
/// `ftsweep __command-job OUTPUT_DIR -- ARGV...`.
pub const WRAPPER_COMMAND: &str = "__command-job";

const LOCK: &str = "job.lock";
const PID: &str = "job.pid";
const GPU: &str = "job.gpu";
const EXIT: &str = "exit_status";
const STOP: &str = "stop_requested";
/// The trainer's log, in its output directory.
pub const LOG: &str = "train.log";

/// How often a job waiting for a GPU looks again.
const GPU_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// How the trainer exited, as the wrapper records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Why the trainer could not be started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn engine_error(message: String) -> ProviderError {
    ProviderError::Engine { message, retryable: false }
}

/// Finds a submission's output directory from its id.
pub type DirOf = Box<dyn Fn(&str) -> Option<PathBuf> + Send + Sync>;

/// The local engine. `dir_of` finds a submission's output directory from its id.
pub struct LocalEngine {
    gpus: Vec<u32>,
    dir_of: DirOf,
    /// The GPU each job this process knows to be running holds.
    gpu_holders: Mutex<HashMap<u32, String>>,
    /// The ftsweep binary that wraps each trainer.
    wrapper: PathBuf,
}

impl LocalEngine {
    pub fn new(settings: &crate::spec::LocalEngine, dir_of: DirOf) -> Result<LocalEngine, ProviderError> {
        if cfg!(not(unix)) {
            return Err(engine_error(
                "the local engine runs trainers as detached Unix processes and is not supported on this system; \
                 use `[engine] type = \"ray\"`"
                    .into(),
            ));
        }
        let wrapper = std::env::current_exe()
            .map_err(|e| engine_error(format!("cannot find the ftsweep binary to wrap the trainer: {e}")))?;
        Ok(LocalEngine { gpus: settings.gpus.clone(), dir_of, gpu_holders: Mutex::default(), wrapper })
    }

    fn dir(&self, id: &str) -> Result<PathBuf, ProviderError> {
        (self.dir_of)(id).ok_or_else(|| engine_error(format!("`{id}` is not a submission id of this sweep")))
    }

    /// Starts the submission's trainer, unless it was started before (then
    /// nothing happens: a submission runs once). Waits for a free GPU when
    /// the engine lists GPUs.
    pub async fn submit(&self, submission: &Submission) -> Result<(), ProviderError> {
        let mut env = submission.env.clone();
        if !self.gpus.is_empty() {
            if self.find(&submission.id).await?.is_some() {
                return Ok(());
            }
            let gpu = self.take_gpu(&submission.id).await?;
            env.insert("CUDA_VISIBLE_DEVICES".into(), gpu.to_string());
            write_atomic(&submission.output_dir.join(GPU), gpu.to_string().as_bytes())?;
        }
        let started = start(&self.wrapper, submission, &env);
        if started.is_err() {
            self.release_gpu(&submission.id);
        }
        started
    }

    /// A free listed GPU, reserved for `id`: waits while every one is held by a running job.
    async fn take_gpu(&self, id: &str) -> Result<u32, ProviderError> {
        loop {
            let holders: Vec<(u32, String)> = {
                let h = self.gpu_holders.lock().unwrap_or_else(|p| p.into_inner());
                h.iter().map(|(g, j)| (*g, j.clone())).collect()
            };
            let mut busy = Vec::new();
            for (gpu, job) in holders {
                // A holder not yet started (reserved just now) or running keeps its GPU.
                let state = if job == id { None } else { probe(&self.dir(&job)?)? };
                if matches!(state, Some(JobState::Running)) || (state.is_none() && job != id) {
                    busy.push(gpu);
                }
            }
            {
                let mut h = self.gpu_holders.lock().unwrap_or_else(|p| p.into_inner());
                h.retain(|g, _| busy.contains(g));
                if let Some(gpu) = self.gpus.iter().copied().find(|g| !h.contains_key(g)) {
                    h.insert(gpu, id.to_string());
                    return Ok(gpu);
                }
            }
            tokio::time::sleep(GPU_WAIT).await;
        }
    }

    fn release_gpu(&self, id: &str) {
        self.gpu_holders.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, j| j != id);
    }

    /// The submission's state; `None` when it was never started.
    pub async fn find(&self, id: &str) -> Result<Option<JobState>, ProviderError> {
        let dir = self.dir(id)?;
        let state = probe(&dir)?;
        match &state {
            // A job adopted after a restart holds the GPU it was given.
            Some(JobState::Running) if !self.gpus.is_empty() => {
                if let Some(gpu) = std::fs::read_to_string(dir.join(GPU)).ok().and_then(|g| g.trim().parse().ok()) {
                    self.gpu_holders.lock().unwrap_or_else(|p| p.into_inner()).insert(gpu, id.to_string());
                }
            }
            Some(s) if s.is_terminal() => self.release_gpu(id),
            _ => {}
        }
        Ok(state)
    }

    /// The submission's state; one never started is failed, saying so.
    pub async fn state(&self, id: &str) -> Result<JobState, ProviderError> {
        Ok(self.find(id).await?.unwrap_or_else(|| JobState::Failed {
            reason: "the trainer was never started (no lock held, no exit status recorded)".into(),
        }))
    }

    /// Stops the trainer: records the request, then SIGTERM to its process group.
    pub async fn stop(&self, id: &str) -> Result<(), ProviderError> {
        let dir = self.dir(id)?;
        write_atomic(&dir.join(STOP), b"")?;
        // Before the wrapper wrote the pid, it reads the request itself after writing it.
        if let Some(pid) = read_pid(&dir) {
            terminate_group(pid);
        }
        Ok(())
    }

    /// The last lines of the trainer's log.
    pub async fn log_tail(&self, id: &str) -> Result<String, ProviderError> {
        Ok(log_tail(&self.dir(id)?.join(LOG), LOG_TAIL_LINES))
    }
}

/// The job's state from its output directory: see the module's comment.
fn probe(dir: &Path) -> Result<Option<JobState>, ProviderError> {
    let lock = match std::fs::File::open(dir.join(LOCK)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(engine_error(format!("cannot open {}: {e}", dir.join(LOCK).display()))),
    };
    // A shared probe: it never keeps `submit` (exclusive) out for more than an instant.
    if is_locked(&lock, false)? {
        return Ok(Some(JobState::Running));
    }
    drop(lock);
    let stop_requested = dir.join(STOP).exists();
    match std::fs::read(dir.join(EXIT)) {
        Ok(bytes) => {
            let record: ExitRecord = serde_json::from_slice(&bytes)
                .map_err(|e| engine_error(format!("{} is not an exit record: {e}", dir.join(EXIT).display())))?;
            Ok(Some(exit_state(&record, stop_requested, &log_tail(&dir.join(LOG), LOG_TAIL_LINES))))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dir.join(PID).exists() {
                // The wrapper died without recording the exit (it was killed, or the machine went down).
                let reason = "the trainer's wrapper ended without recording how the trainer exited (was it \
                              killed, or the machine restarted?)";
                Ok(Some(JobState::Failed { reason: with_log(reason, &log_tail(&dir.join(LOG), LOG_TAIL_LINES)) }))
            } else {
                Ok(None)
            }
        }
        Err(e) => Err(engine_error(format!("cannot read {}: {e}", dir.join(EXIT).display()))),
    }
}

/// A job's state from its exit record and whether a stop was requested. Pure.
pub fn exit_state(record: &ExitRecord, stop_requested: bool, tail: &str) -> JobState {
    match record {
        _ if stop_requested && record.code != Some(0) => JobState::Stopped,
        ExitRecord { code: Some(0), .. } => JobState::Succeeded,
        ExitRecord { error: Some(e), .. } => JobState::Failed { reason: with_log(e, tail) },
        ExitRecord { signal: Some(s), .. } => {
            JobState::Failed { reason: with_log(&format!("the trainer was killed by signal {s}"), tail) }
        }
        ExitRecord { code, .. } => JobState::Failed {
            reason: with_log(
                &format!("the trainer exited with code {}", code.map_or("?".into(), |c| c.to_string())),
                tail,
            ),
        },
    }
}

/// A reason followed by the log's last lines, if any.
pub fn with_log(reason: &str, tail: &str) -> String {
    if tail.trim().is_empty() {
        format!("{reason} (its log is empty)")
    } else {
        format!("{reason}; the last lines of its log:\n{}", tail.trim_end())
    }
}

/// Whether another open file holds the lock; `exclusive` takes it (and keeps
/// it, with the file) when free.
#[cfg(unix)]
fn is_locked(file: &std::fs::File, exclusive: bool) -> Result<bool, ProviderError> {
    use rustix::fs::{FlockOperation, flock};
    let op = if exclusive { FlockOperation::NonBlockingLockExclusive } else { FlockOperation::NonBlockingLockShared };
    match flock(file, op) {
        Ok(()) => Ok(false),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(true),
        Err(e) => Err(engine_error(format!("cannot lock a job's lock file: {e}"))),
    }
}

#[cfg(not(unix))]
fn is_locked(_file: &std::fs::File, _exclusive: bool) -> Result<bool, ProviderError> {
    Err(engine_error("the local engine is not supported on this system".into()))
}

/// Takes the job's lock and starts its wrapper, unless it ran or runs already.
fn start(
    wrapper: &Path,
    submission: &Submission,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<(), ProviderError> {
    let dir = &submission.output_dir;
    std::fs::create_dir_all(dir).map_err(|e| engine_error(format!("cannot make {}: {e}", dir.display())))?;
    let lock_path = dir.join(LOCK);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(|e| engine_error(format!("cannot open {}: {e}", lock_path.display())))?;
    // A probe holds the lock shared for an instant: only a lock held for longer is a running job.
    let mut held = true;
    for _ in 0..20 {
        held = is_locked(&lock, true)?;
        if !held {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    if held || dir.join(EXIT).exists() || dir.join(PID).exists() {
        // Running, or ran: a submission starts once.
        return Ok(());
    }
    let log_path = dir.join(LOG);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| engine_error(format!("cannot open {}: {e}", log_path.display())))?;
    let log2 = log.try_clone().map_err(|e| engine_error(format!("cannot open {}: {e}", log_path.display())))?;
    let mut command = std::process::Command::new(wrapper);
    command
        .arg(WRAPPER_COMMAND)
        .arg(dir)
        .arg("--")
        .args(&submission.argv)
        .envs(env)
        // The locked file is the wrapper's stdin: the lock lives exactly as long as the wrapper.
        .stdin(std::process::Stdio::from(lock))
        .stdout(log)
        .stderr(log2);
    let mut child = command
        .spawn()
        .map_err(|e| engine_error(format!("cannot start the trainer's wrapper {}: {e}", wrapper.display())))?;
    drop(command);
    // Reaps the wrapper when it ends while this process lives.
    std::thread::spawn(move || child.wait());
    Ok(())
}

/// The wrapper's work, in its own process (`ftsweep __command-job`): a new
/// session, the trainer in its own process group, its pid, its exit. Returns
/// the wrapper's exit code (the trainer's, or 127 when it could not start).
/// Standard input is the job's lock, held until this process ends.
#[cfg(unix)]
pub fn wrap(dir: &Path, argv: &[String]) -> i32 {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    // Its own session: no terminal's Ctrl-C or hangup reaches it.
    let _ = rustix::process::setsid();
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(LOG)).ok();
    let mut note = |line: &str| {
        if let Some(l) = log.as_mut() {
            let _ = writeln!(l, "ftsweep: {line}");
        }
    };
    let Some((program, args)) = argv.split_first() else {
        note("no trainer command");
        return 2;
    };
    let spawned =
        std::process::Command::new(program).args(args).stdin(std::process::Stdio::null()).process_group(0).spawn();
    let record = match spawned {
        Err(e) => {
            let error = format!("cannot start the trainer `{program}`: {e}");
            note(&error);
            ExitRecord { code: Some(127), signal: None, error: Some(error) }
        }
        Ok(mut child) => {
            let pid = child.id();
            let _ = write_atomic(&dir.join(PID), pid.to_string().as_bytes());
            if dir.join(STOP).exists() {
                terminate_group(pid);
            }
            match child.wait() {
                Ok(status) => ExitRecord { code: status.code(), signal: status.signal(), error: None },
                Err(e) => {
                    ExitRecord { code: None, signal: None, error: Some(format!("cannot wait for the trainer: {e}")) }
                }
            }
        }
    };
    note(&match (&record.code, &record.signal) {
        (Some(c), _) => format!("the trainer exited with code {c}"),
        (None, Some(s)) => format!("the trainer was killed by signal {s}"),
        _ => "the trainer's end is unknown".into(),
    });
    let bytes = serde_json::to_vec(&record).unwrap_or_default();
    if let Err(e) = write_atomic(&dir.join(EXIT), &bytes) {
        note(&format!("cannot record the exit status: {e}"));
    }
    record.code.unwrap_or(1)
}

#[cfg(not(unix))]
pub fn wrap(_dir: &Path, _argv: &[String]) -> i32 {
    2
}

#[cfg(unix)]
fn terminate_group(pid: u32) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) {
        // Gone already: nothing to stop.
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::TERM);
    }
}

#[cfg(not(unix))]
fn terminate_group(_pid: u32) {}

fn read_pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join(PID)).ok()?.trim().parse().ok()
}

/// Writes a file whole or not at all (a temporary file, then a rename).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ProviderError> {
    crate::files::write_atomically(path, bytes)
        .map_err(|e| engine_error(format!("cannot write {}: {e}", path.display())))
}

/// The last `n` lines of a log (of at most its last 64 KiB); empty when there is none.
pub fn log_tail(path: &Path, n: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path).and_then(|mut f| {
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(MAX)))?;
        f.read_to_end(&mut bytes)
    });
    if read.is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_records_become_states() {
        let exit = |code: Option<i32>, signal: Option<i32>| ExitRecord { code, signal, error: None };
        assert_eq!(exit_state(&exit(Some(0), None), false, ""), JobState::Succeeded);
        assert_eq!(exit_state(&exit(None, Some(15)), true, ""), JobState::Stopped);
        assert_eq!(exit_state(&exit(Some(143), None), true, ""), JobState::Stopped);
        assert_eq!(
            exit_state(&exit(None, Some(9)), false, "a\nb"),
            JobState::Failed { reason: "the trainer was killed by signal 9; the last lines of its log:\na\nb".into() }
        );
        assert_eq!(
            exit_state(&exit(Some(3), None), false, ""),
            JobState::Failed { reason: "the trainer exited with code 3 (its log is empty)".into() }
        );
    }

    #[test]
    fn the_log_tail_is_its_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG);
        assert_eq!(log_tail(&path, 2), "");
        std::fs::write(&path, "1\n2\n3\n").unwrap();
        assert_eq!(log_tail(&path, 2), "2\n3");
        assert_eq!(log_tail(&path, 10), "1\n2\n3");
    }
}
