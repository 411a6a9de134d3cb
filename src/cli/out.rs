//! Writing to stdout and stderr without panicking. `println!` and `eprintln!` panic when a
//! write fails (`ftsweep leaderboard NAME > /dev/full`); the commands print through `outln!`
//! and `errln!` instead, which return an error (exit code 1). A failed write to either stream is
//! also remembered, so that a command which cannot report an error still ends with exit code 1.
//! A reader of stdout that goes away (`| head`) ends the command quietly, with exit code 141 as
//! if SIGPIPE had killed it (SIGPIPE itself is ignored, so that a closed pipe to a child process
//! is an error, not the death of ftsweep).

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether a write to stdout or stderr has failed in this process.
static FAILED: AtomicBool = AtomicBool::new(false);

/// A write to stdout or stderr failed: exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to {stream}")]
pub struct WriteFailed {
    pub stream: &'static str,
    pub source: io::Error,
}

/// Whether a write to stdout or stderr has failed.
pub fn failed() -> bool {
    FAILED.load(Ordering::Relaxed)
}

impl WriteFailed {
    /// The reader of stdout went away: the command ends quietly.
    pub fn is_closed_stdout(&self) -> bool {
        self.stream == "stdout" && self.source.kind() == io::ErrorKind::BrokenPipe
    }
}

fn write(stream: &'static str, w: &mut dyn Write, args: fmt::Arguments<'_>) -> Result<(), WriteFailed> {
    w.write_fmt(args).and_then(|()| w.flush()).map_err(|source| {
        FAILED.store(true, Ordering::Relaxed);
        WriteFailed { stream, source }
    })
}

/// Writes to stdout and flushes; `outln!` and `out!` call it.
pub fn stdout(args: fmt::Arguments<'_>) -> Result<(), WriteFailed> {
    write("stdout", &mut io::stdout().lock(), args)
}

/// Writes to stderr; `errln!` and `err!` call it.
pub fn stderr(args: fmt::Arguments<'_>) -> Result<(), WriteFailed> {
    write("stderr", &mut io::stderr().lock(), args)
}

/// `println!` that returns `Result<(), WriteFailed>` instead of panicking.
macro_rules! outln {
    () => {
        $crate::cli::out::stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` that returns `Result<(), WriteFailed>` instead of panicking.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::out::stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!` that returns `Result<(), WriteFailed>` instead of panicking.
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::cli::out::stderr(format_args!($($arg)*))
    };
}

pub(crate) use {err, errln, outln};

/// The writer `tracing` logs to: stderr, where a failed write is remembered (exit code 1)
/// instead of reported by a panic.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingStderr;

impl Write for TracingStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::stderr().write(buf).inspect_err(|_| FAILED.store(true, Ordering::Relaxed))
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush().inspect_err(|_| FAILED.store(true, Ordering::Relaxed))
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for TracingStderr {
    type Writer = TracingStderr;

    fn make_writer(&'a self) -> Self::Writer {
        TracingStderr
    }
}
