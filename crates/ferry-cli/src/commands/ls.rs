//! `ferry ls`.

use anyhow::Result;
use ferry_store::{RevisionSpec, Store};
use serde::Serialize;

use crate::output::Report;

#[derive(clap::Args)]
pub struct Args {
    /// owner/name[@branch-or-revision]
    target: String,
}

/// One file of a revision.
#[derive(Serialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub file_id: String,
    pub executable: bool,
}

#[derive(Serialize)]
#[serde(transparent)]
pub struct Listing(pub Vec<FileEntry>);

impl Report for Listing {
    fn text(&self) -> Vec<String> {
        // The short id is the first 12 hex digits, as `Id::short` writes it.
        self.0.iter().map(|e| format!("{} {:>14} {}  {}", if e.executable { "x" } else { "-" }, e.size, &e.file_id[..12], e.path)).collect()
    }
}

pub fn run(store: &Store, args: Args) -> Result<Listing> {
    let (_, rev) = store.resolve(&RevisionSpec::parse(&args.target)?)?;
    Ok(Listing(rev.entries.into_iter().map(|e| FileEntry { size: e.size, file_id: e.file_id.to_hex(), executable: e.executable, path: e.path }).collect()))
}
