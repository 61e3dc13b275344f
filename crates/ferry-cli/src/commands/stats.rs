//! `ferry stats`.

use anyhow::Result;
use ferry_store::Store;
use serde::Serialize;

use crate::output::Report;
use crate::progress::bytes;

#[derive(Serialize)]
pub struct StoreStats {
    pub repositories: u64,
    pub branches: u64,
    pub revisions: u64,
    pub logical_bytes: u64,
    pub chunks: u64,
    pub unique_bytes: u64,
    pub stored_bytes: u64,
    pub tree_nodes: u64,
    pub disk_bytes: u64,
    /// Logical bytes per unique byte.
    pub dedup_ratio: f64,
    /// Unique bytes per stored byte.
    pub compression_ratio: f64,
}

impl Report for StoreStats {
    fn text(&self) -> Vec<String> {
        vec![format!(
            "repositories   {}\nbranches       {}\nrevisions      {}\nlogical bytes  {}\nunique chunks  {} ({})\nstored bytes   {}\ntree nodes     {}\non disk        {}\ndedup ratio    {:.2}x\ncompression    {:.2}x",
            self.repositories,
            self.branches,
            self.revisions,
            bytes(self.logical_bytes),
            self.chunks,
            bytes(self.unique_bytes),
            bytes(self.stored_bytes),
            self.tree_nodes,
            bytes(self.disk_bytes),
            self.dedup_ratio,
            self.compression_ratio
        )]
    }
}

/// `a / b`, or 1 when there is nothing to divide by.
fn ratio(a: u64, b: u64) -> f64 {
    if b > 0 {
        a as f64 / b as f64
    } else {
        1.0
    }
}

pub fn run(store: &Store) -> Result<StoreStats> {
    let s = store.stats()?;
    Ok(StoreStats {
        repositories: s.repositories,
        branches: s.branches,
        revisions: s.revisions,
        logical_bytes: s.logical_bytes,
        chunks: s.chunks,
        unique_bytes: s.unique_bytes,
        stored_bytes: s.stored_bytes,
        tree_nodes: s.tree_nodes,
        disk_bytes: s.disk_bytes,
        dedup_ratio: ratio(s.logical_bytes, s.unique_bytes),
        compression_ratio: ratio(s.unique_bytes, s.stored_bytes),
    })
}
