//! `ferry log`.

use anyhow::Result;
use ferry_store::{RevisionSpec, Store};
use serde::Serialize;

use crate::output::Report;
use crate::progress;

#[derive(clap::Args)]
pub struct Args {
    /// owner/name[@branch-or-revision]
    target: String,
    /// Show at most this many revisions.
    #[arg(short = 'n', long, default_value_t = 50)]
    limit: usize,
}

/// One revision of the history, newest first.
#[derive(Serialize)]
pub struct LogEntry {
    pub revision: String,
    pub parents: Vec<String>,
    pub author: String,
    pub time: i64,
    pub message: String,
    pub files: usize,
    pub bytes: u64,
    /// Retention forgot it: its files are gone.
    pub forgotten: bool,
}

#[derive(Serialize)]
#[serde(transparent)]
pub struct History(pub Vec<LogEntry>);

impl Report for History {
    fn text(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|r| {
                format!(
                    "revision {}{}\nauthor   {}\ntime     {}\nfiles    {} ({})\n\n    {}\n",
                    r.revision,
                    if r.forgotten { " (forgotten: files gone)" } else { "" },
                    r.author,
                    human_time(r.time),
                    r.files,
                    progress::bytes(r.bytes),
                    r.message
                )
            })
            .collect()
    }
}

/// `2026-12-02 14:05:09 UTC` (the JSON keeps Unix seconds).
pub fn human_time(secs: i64) -> String {
    let iso = ferry_core::time::utc_iso8601(secs);
    format!("{} {} UTC", &iso[..10], &iso[11..19])
}

pub fn run(store: &Store, args: Args) -> Result<History> {
    let spec = RevisionSpec::parse(&args.target)?;
    let (id, _) = store.resolve(&spec)?;
    let log = store.log(id, args.limit)?;
    let ids: Vec<ferry_core::Id> = log.iter().map(|e| e.0).collect();
    let forgotten = store.forgotten(&spec.repo, &ids)?;
    Ok(History(
        log.into_iter()
            .zip(forgotten)
            .map(|((id, r), forgotten)| LogEntry {
                forgotten,
                revision: id.to_hex(),
                parents: r.parents.iter().map(|p| p.to_hex()).collect(),
                files: r.entries.len(),
                bytes: r.size(),
                author: r.author,
                time: r.time,
                message: r.message,
            })
            .collect(),
    ))
}
