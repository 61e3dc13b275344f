//! `ferry export`.

use std::path::PathBuf;

use anyhow::Result;
use ferry_store::{RevisionSpec, Store};
use serde::Serialize;

use crate::output::Report;
use crate::progress;

#[derive(clap::Args)]
pub struct Args {
    /// owner/name[@branch-or-revision]
    target: String,
    /// Directory to write the files into.
    dir: PathBuf,
}

#[derive(Serialize)]
pub struct Exported {
    pub revision: String,
    pub files: usize,
    pub bytes: u64,
    pub dir: PathBuf,
}

impl Report for Exported {
    fn text(&self) -> Vec<String> {
        vec![format!("exported {} files ({}) of {} to {}", self.files, progress::bytes(self.bytes), &self.revision[..12], self.dir.display())]
    }
}

pub fn run(store: &Store, args: Args, json: bool) -> Result<Exported> {
    let (id, rev) = store.resolve(&RevisionSpec::parse(&args.target)?)?;
    let bar = progress::Read::new(json, rev.size());
    store.export(&rev, &args.dir, &bar)?;
    bar.finish();
    Ok(Exported { revision: id.to_hex(), files: rev.entries.len(), bytes: rev.size(), dir: args.dir })
}
