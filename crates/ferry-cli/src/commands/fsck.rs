//! `ferry fsck`.

use std::process::ExitCode;

use anyhow::Result;
use ferry_store::Store;
use serde::Serialize;

use crate::output::Report;
use crate::progress;

#[derive(Serialize)]
pub struct Checked {
    pub ok: bool,
    pub chunks: u64,
    pub tree_nodes: u64,
    pub revisions: u64,
    pub branches: u64,
    pub unindexed_records: u64,
    pub problems: Vec<String>,
}

impl Report for Checked {
    fn text(&self) -> Vec<String> {
        let mut s = format!("checked {} chunks, {} tree nodes, {} revisions, {} branches", self.chunks, self.tree_nodes, self.revisions, self.branches);
        if self.unindexed_records > 0 {
            s.push_str(&format!("\n{} chunk records that no index entry names (left by an interrupted gc; the next gc removes them)", self.unindexed_records));
        }
        for p in &self.problems {
            s.push_str(&format!("\nproblem: {p}"));
        }
        s.push_str(if self.ok { "\nno problems found" } else { "\nthe store has problems" });
        vec![s]
    }

    fn status(&self) -> Result<ExitCode> {
        Ok(if self.ok { ExitCode::SUCCESS } else { ExitCode::from(crate::exit::CORRUPT) })
    }
}

pub fn run(store: &Store, json: bool) -> Result<Checked> {
    let bar = progress::Read::new(json, store.stats()?.stored_bytes);
    let rep = store.fsck(&|n| ferry_store::ReadProgress::advance(&bar, n))?;
    bar.finish();
    Ok(Checked {
        ok: rep.problems.is_empty(),
        chunks: rep.chunks_checked,
        tree_nodes: rep.nodes_checked,
        revisions: rep.revisions_checked,
        branches: rep.branches_checked,
        unindexed_records: rep.unindexed_records,
        problems: rep.problems,
    })
}
