//! Progress bars on a terminal; silence everywhere else.

use std::sync::atomic::{AtomicU64, Ordering};

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

/// Commit progress: bytes read, rate, ETA, and how much was already stored.
pub struct Ingest {
    pb: ProgressBar,
    processed: AtomicU64,
    new: AtomicU64,
}

impl Ingest {
    pub fn new(json: bool) -> Self {
        Ingest { pb: bar(json, 0), processed: AtomicU64::new(0), new: AtomicU64::new(0) }
    }
    pub fn finish(&self) {
        self.pb.finish_and_clear();
    }
}

impl ferry_store::IngestProgress for Ingest {
    fn start(&self, total_bytes: u64) {
        self.pb.set_length(total_bytes);
    }
    fn advance(&self, read: u64, new_bytes: u64, _stored: u64) {
        let p = self.processed.fetch_add(read, Ordering::Relaxed) + read;
        let n = self.new.fetch_add(new_bytes, Ordering::Relaxed) + new_bytes;
        self.pb.inc(read);
        self.pb.set_message(format!("{} deduplicated", bytes(p - n)));
    }
}

/// Read progress (export, fsck).
pub struct Read {
    pb: ProgressBar,
}

impl Read {
    pub fn new(json: bool, total: u64) -> Self {
        Read { pb: bar(json, total) }
    }
    pub fn finish(&self) {
        self.pb.finish_and_clear();
    }
}

impl ferry_store::ReadProgress for Read {
    fn advance(&self, bytes: u64) {
        self.pb.inc(bytes);
    }
}

/// Push, pull and mirror progress: raw bytes of missing chunks moved, out
/// of those found missing so far (the total grows while the trees are
/// compared), and how much the other side already had.
pub struct Transfer {
    pb: ProgressBar,
}

impl Transfer {
    pub fn new(json: bool) -> Self {
        Transfer { pb: bar(json, 0) }
    }
    pub fn finish(&self) {
        self.pb.finish_and_clear();
    }
}

impl ferry_transfer::TransferProgress for Transfer {
    fn update(&self, r: &ferry_proto::transfer::Report) {
        self.pb.set_length(r.raw_bytes_to_move);
        self.pb.set_position(r.raw_bytes_moved);
        self.pb.set_message(format!("{} chunks already there", r.chunks_already_there));
    }
}
