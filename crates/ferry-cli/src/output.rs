//! The one printer: a command's typed result becomes text lines or, with
//! `--json`, one line of JSON (`protocol/cli-json.md`).

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

/// What a command reports when it is done.
pub trait Report: Serialize {
    /// The text form, one entry per `println!` (an entry may hold several lines).
    fn text(&self) -> Vec<String>;

    /// How the process ends once the report is printed: a report may stand
    /// for a failure (fsck found problems, a mirror left branches behind).
    fn status(&self) -> anyhow::Result<ExitCode> {
        Ok(ExitCode::SUCCESS)
    }
}

/// One JSON object per line. Going through `serde_json::Value` prints
/// object keys in sorted order, which scripts reading the output with
/// `sed` rely on.
fn to_json_line(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(v) => v.to_string(),
        Err(e) => serde_json::to_string(&ErrorReport { error: format!("cannot render the result as JSON: {e}") }).unwrap_or_default(),
    }
}

/// Prints a JSON line on stdout.
pub fn json_line(value: &impl Serialize) {
    println!("{}", to_json_line(value));
}

/// Prints a report on stdout, as text or JSON.
pub fn emit(json: bool, report: &impl Report) {
    if json {
        json_line(report);
    } else {
        for line in report.text() {
            println!("{line}");
        }
    }
}

/// Prints a report and ends the command as the report says.
pub fn finish(json: bool, report: impl Report) -> anyhow::Result<ExitCode> {
    emit(json, &report);
    report.status()
}

/// Prints a report on stderr, for a long-running command whose stdout
/// carries only its first line (`serve`). Write errors are ignored: a
/// closed stderr must not stop a hub.
pub fn emit_stderr(json: bool, report: &impl Report) {
    if json {
        stderr_line(&to_json_line(report));
    } else {
        for line in report.text() {
            stderr_line(&line);
        }
    }
}

/// `-q`: no progress bars and no notes, only results, warnings and errors.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Sets `-q` for the whole process (once, from `main`).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether `-q` was given.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// A note on stderr that `-q` silences (a certificate pinned, a retry).
pub fn note(line: &str) {
    if !quiet() {
        stderr_line(line);
    }
}

/// One line on stderr, ignoring write errors (see [`emit_stderr`]).
pub fn stderr_line(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// `{"error": ...}`: what `--json` prints when a command fails.
#[derive(Serialize)]
pub struct ErrorReport {
    pub error: String,
}

impl Report for ErrorReport {
    fn text(&self) -> Vec<String> {
        vec![self.error.clone()]
    }
}

/// How `serve` (and `-v`) log.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr at `level` unless FERRY_LOG gives a filter.
pub fn start_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}
