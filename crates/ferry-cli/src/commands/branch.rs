//! `ferry branch list|create|delete`.

use anyhow::{Context, Result};
use ferry_store::{RevisionSpec, Store};
use serde::Serialize;

use crate::output::Report;

#[derive(clap::Subcommand)]
pub enum BranchAction {
    /// List the branches of a repository.
    List {
        /// Repository, as owner/name.
        repo: String,
    },
    /// Create a branch at a revision.
    Create {
        /// Repository, as owner/name.
        repo: String,
        /// Name of the new branch.
        branch: String,
        /// Branch, revision id or id prefix the new branch starts at.
        from: String,
    },
    /// Delete a branch (its data is reclaimed by the next gc).
    Delete {
        /// Repository, as owner/name.
        repo: String,
        /// Branch to delete.
        branch: String,
    },
}

#[derive(Serialize)]
pub struct BranchHead {
    pub branch: String,
    pub revision: String,
}

#[derive(Serialize)]
pub struct Created {
    pub repo: String,
    pub branch: String,
    pub revision: String,
}

#[derive(Serialize)]
pub struct Deleted {
    pub repo: String,
    pub branch: String,
    /// The head the branch had.
    pub deleted: String,
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum BranchReport {
    List(Vec<BranchHead>),
    Created(Created),
    Deleted(Deleted),
}

impl Report for BranchReport {
    fn text(&self) -> Vec<String> {
        match self {
            BranchReport::List(heads) => heads.iter().map(|h| format!("{}  {}", h.revision, h.branch)).collect(),
            BranchReport::Created(c) => vec![format!("created {}@{} at {}", c.repo, c.branch, c.revision)],
            BranchReport::Deleted(d) => vec![format!("deleted {}@{} (was {})", d.repo, d.branch, d.deleted)],
        }
    }
}

pub fn run(store: &Store, action: BranchAction) -> Result<BranchReport> {
    Ok(match action {
        BranchAction::List { repo } => {
            store.repo(&repo)?;
            let branches = store.branches(&repo)?.into_iter().filter(|(b, _)| !ferry_store::is_tag(b));
            BranchReport::List(branches.map(|(branch, id)| BranchHead { branch, revision: id.to_hex() }).collect())
        }
        BranchAction::Create { repo, branch, from } => {
            let (id, _) = store.resolve(&RevisionSpec { repo: repo.clone(), rev: from })?;
            store.update_branch(&repo, &branch, None, Some(id))?;
            BranchReport::Created(Created { repo, branch, revision: id.to_hex() })
        }
        BranchAction::Delete { repo, branch } => {
            let head = store.branch(&repo, &branch)?.with_context(|| format!("{repo} has no branch {branch:?}"))?;
            store.update_branch(&repo, &branch, Some(head), None)?;
            BranchReport::Deleted(Deleted { repo, branch, deleted: head.to_hex() })
        }
    })
}
