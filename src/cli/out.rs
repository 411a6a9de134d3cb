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
use std::sync::{Arc, Mutex};

/// Whether a write to stdout or stderr has failed in this process.
static FAILED: AtomicBool = AtomicBool::new(false);

/// The live progress display on stderr, while `run` or `resume` draws it: every write to stderr
/// goes above it (the display is cleared, the text written, the display drawn again).
static LIVE: Mutex<Option<indicatif::MultiProgress>> = Mutex::new(None);

/// Sets (or, with `None`, takes away) the live display that writes to stderr go above.
pub fn set_live(display: Option<indicatif::MultiProgress>) {
    *LIVE.lock().unwrap_or_else(|p| p.into_inner()) = display;
}

/// Runs `f`, which writes to stderr, with the live display (if any) out of its way.
fn above_live<R>(f: impl FnOnce() -> R) -> R {
    let live = LIVE.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match live {
        Some(display) => display.suspend(f),
        None => f(),
    }
}

/// The terminal the live display draws on: stderr, where a failed write is remembered (exit
/// code 1) and sets `failed`, so that the sweep stops as when a progress line cannot be written.
#[derive(Debug)]
pub struct LiveTerm {
    term: console::Term,
    pub failed: Arc<AtomicBool>,
}

impl LiveTerm {
    pub fn stderr() -> LiveTerm {
        LiveTerm { term: console::Term::buffered_stderr(), failed: Arc::new(AtomicBool::new(false)) }
    }

    /// Remembers a failed write and reports success: indicatif unwraps some of its draws (a
    /// panic), and the sweep is stopped through `failed` instead.
    fn check(&self, r: io::Result<()>) -> io::Result<()> {
        if r.is_err() {
            FAILED.store(true, Ordering::Relaxed);
            self.failed.store(true, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl indicatif::TermLike for LiveTerm {
    fn width(&self) -> u16 {
        self.term.size().1
    }

    fn height(&self) -> u16 {
        self.term.size().0
    }

    fn move_cursor_up(&self, n: usize) -> io::Result<()> {
        self.check(self.term.move_cursor_up(n))
    }

    fn move_cursor_down(&self, n: usize) -> io::Result<()> {
        self.check(self.term.move_cursor_down(n))
    }

    fn move_cursor_right(&self, n: usize) -> io::Result<()> {
        self.check(self.term.move_cursor_right(n))
    }

    fn move_cursor_left(&self, n: usize) -> io::Result<()> {
        self.check(self.term.move_cursor_left(n))
    }

    fn write_line(&self, s: &str) -> io::Result<()> {
        self.check(self.term.write_line(s))
    }

    fn write_str(&self, s: &str) -> io::Result<()> {
        self.check(self.term.write_str(s))
    }

    fn clear_line(&self) -> io::Result<()> {
        self.check(self.term.clear_line())
    }

    fn flush(&self) -> io::Result<()> {
        self.check(self.term.flush())
    }
}

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
    above_live(|| write("stderr", &mut io::stderr().lock(), args))
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
        above_live(|| io::stderr().write(buf)).inspect_err(|_| FAILED.store(true, Ordering::Relaxed))
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
