//! `ferry gc`, and the report of a gc run inside a hub (`serve --gc-every`).

use std::time::Duration;

use anyhow::Result;
use ferry_store::{GcReport, Store};
use serde::Serialize;

use crate::output::Report;
use crate::progress;

/// What a gc run reclaimed. `seconds` is given for runs inside a hub.
#[derive(Serialize)]
pub struct Collected {
    pub chunks_removed: u64,
    pub bytes_removed: u64,
    pub tree_nodes_removed: u64,
    pub revisions_removed: u64,
    pub chunks_kept: u64,
    pub packs_retired: u64,
    pub bytes_copied: u64,
    pub packs_deleted: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

impl Collected {
    pub fn new(r: &GcReport, took: Option<Duration>) -> Collected {
        Collected {
            chunks_removed: r.chunks_removed,
            bytes_removed: r.bytes_removed,
            tree_nodes_removed: r.nodes_removed,
            revisions_removed: r.revisions_removed,
            chunks_kept: r.chunks_kept,
            packs_retired: r.packs_retired,
            bytes_copied: r.bytes_copied,
            packs_deleted: r.packs_deleted,
            seconds: took.map(|t| t.as_secs_f64()),
        }
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "removed {} chunks ({}), {} tree nodes, {} revisions; kept {} chunks",
            self.chunks_removed,
            progress::bytes(self.bytes_removed),
            self.tree_nodes_removed,
            self.revisions_removed,
            self.chunks_kept
        );
        if self.packs_retired + self.packs_deleted > 0 {
            s += &format!(
                "; rewrote {} packs (copying {}), deleted {} retired packs",
                self.packs_retired,
                progress::bytes(self.bytes_copied),
                self.packs_deleted
            );
        }
        s
    }
}

impl Report for Collected {
    fn text(&self) -> Vec<String> {
        vec![self.summary()]
    }
}

pub fn run(store: &Store) -> Result<Collected> {
    Ok(Collected::new(&store.gc()?, None))
}
