//! Progress bars on a terminal; with --json, status lines on stderr;
//! silence everywhere else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub fn bytes(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}

/// A span of seconds in its largest whole unit: `40s`, `12m`, `5h`, `3d`.
pub fn age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn bar(json: bool, total: u64) -> ProgressBar {
    // indicatif draws nothing when stderr is not a terminal.
    let target = if json || crate::output::quiet() { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() };
    let pb = ProgressBar::with_draw_target(Some(total), target);
    pb.set_style(ProgressStyle::with_template("{bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}").expect("valid template"));
    pb
}

/// With --json (and not -q): progress as JSON objects on stderr, one per
/// line, at most twice a second, and once more when done:
/// `{"bytes":N,"progress":"hashing","total":M}` (protocol/cli-json.md).
struct StatusLines {
    what: &'static str,
    last: Mutex<Option<Instant>>,
}

impl StatusLines {
    fn new(json: bool, what: &'static str) -> Option<StatusLines> {
        (json && !crate::output::quiet()).then(|| StatusLines { what, last: Mutex::new(None) })
    }

    fn tick(&self, pb: &ProgressBar, force: bool) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if !force && last.is_some_and(|t| t.elapsed() < Duration::from_millis(500)) {
            return;
        }
        *last = Some(Instant::now());
        let line = serde_json::json!({ "progress": self.what, "bytes": pb.position(), "total": pb.length().unwrap_or(0) });
        eprintln!("{line}");
    }
}

/// A bar, and its status lines with --json.
struct Shown {
    pb: ProgressBar,
    lines: Option<StatusLines>,
}

impl Shown {
    fn new(json: bool, total: u64, what: &'static str) -> Shown {
        Shown { pb: bar(json, total), lines: StatusLines::new(json, what) }
    }
    fn changed(&self) {
        if let Some(l) = &self.lines {
            l.tick(&self.pb, false);
        }
    }
    fn finish(&self) {
        if let Some(l) = &self.lines {
            l.tick(&self.pb, true);
        }
        self.pb.finish_and_clear();
    }
}

/// Commit progress: bytes read, rate, ETA, and how much was already stored.
pub struct Ingest {
    shown: Shown,
    processed: AtomicU64,
    new: AtomicU64,
}

impl Ingest {
    pub fn new(json: bool) -> Self {
        Ingest { shown: Shown::new(json, 0, "hashing"), processed: AtomicU64::new(0), new: AtomicU64::new(0) }
    }
    pub fn finish(&self) {
        self.shown.finish();
    }
}

impl ferry_store::IngestProgress for Ingest {
    fn start(&self, total_bytes: u64) {
        self.shown.pb.set_length(total_bytes);
        self.shown.changed();
    }
    fn advance(&self, read: u64, new_bytes: u64, _stored: u64) {
        let p = self.processed.fetch_add(read, Ordering::Relaxed) + read;
        let n = self.new.fetch_add(new_bytes, Ordering::Relaxed) + new_bytes;
        self.shown.pb.inc(read);
        self.shown.pb.set_message(format!("{} deduplicated", bytes(p - n)));
        self.shown.changed();
    }
}

/// Read progress (export, fsck).
pub struct Read {
    shown: Shown,
}

impl Read {
    pub fn new(json: bool, total: u64) -> Self {
        Read { shown: Shown::new(json, total, "reading") }
    }
    pub fn finish(&self) {
        self.shown.finish();
    }
}

impl ferry_store::ReadProgress for Read {
    fn advance(&self, bytes: u64) {
        self.shown.pb.inc(bytes);
        self.shown.changed();
    }
}

/// Push, pull and mirror progress: raw bytes of missing chunks moved, out
/// of those found missing so far (the total grows while the trees are
/// compared), and how much the other side already had.
pub struct Transfer {
    shown: Shown,
}

impl Transfer {
    pub fn new(json: bool) -> Self {
        Transfer { shown: Shown::new(json, 0, "moving") }
    }
    pub fn finish(&self) {
        self.shown.finish();
    }
}

impl ferry_transfer::TransferProgress for Transfer {
    fn update(&self, r: &ferry_proto::transfer::Report) {
        self.shown.pb.set_length(r.raw_bytes_to_move);
        self.shown.pb.set_position(r.raw_bytes_moved);
        self.shown.pb.set_message(format!("{} chunks already there", r.chunks_already_there));
        self.shown.changed();
    }
}
