//! `ferry repos` and `ferry repo delete`.

use std::path::Path;

use anyhow::Result;
use ferry_store::Store;
use serde::Serialize;

use crate::net::{on_hub, NetArgs};
use crate::output::Report;

#[derive(Serialize)]
pub struct Repository {
    pub name: String,
    pub created: i64,
    pub public: bool,
}

#[derive(Serialize)]
#[serde(transparent)]
pub struct Repositories(pub Vec<Repository>);

impl Report for Repositories {
    fn text(&self) -> Vec<String> {
        self.0.iter().map(|r| r.name.clone()).collect()
    }
}

pub fn run(store: &Store) -> Result<Repositories> {
    Ok(Repositories(store.repos()?.into_iter().map(|r| Repository { name: r.name, created: r.created, public: r.public }).collect()))
}

#[derive(clap::Subcommand)]
pub enum RepoAction {
    /// Delete a repository with every branch and tag (gc reclaims what only
    /// it held; on a hub: needs an admin token).
    Delete {
        /// Repository, as owner/name.
        repo: String,
        /// Delete on this hub (a remote's name or host:port) instead of the local store.
        #[arg(long)]
        hub: Option<String>,
        #[command(flatten)]
        net: NetArgs,
    },
}

#[derive(Serialize)]
pub struct DeletedRef {
    pub branch: String,
    pub revision: String,
}

#[derive(Serialize)]
pub struct RepoDeleted {
    pub repo: String,
    /// Its branches and tags as they were.
    pub deleted: Vec<DeletedRef>,
}

impl Report for RepoDeleted {
    fn text(&self) -> Vec<String> {
        let mut lines = vec![format!("deleted {} ({} branches and tags)", self.repo, self.deleted.len())];
        lines.extend(self.deleted.iter().map(|d| format!("  {}  {}", d.revision, d.branch)));
        lines
    }
}

pub fn repo(store: &Path, action: RepoAction) -> Result<RepoDeleted> {
    let RepoAction::Delete { repo, hub, net } = action;
    ferry_core::names::check_repo_name(&repo)?;
    let deleted = match hub {
        Some(hub) => on_hub(&hub, &net, async |client| Ok(ferry_transfer::delete_repo(client, &repo).await?))?,
        None => super::init::open(store)?.delete_repo(&repo)?,
    };
    Ok(RepoDeleted { repo, deleted: deleted.into_iter().map(|(branch, id)| DeletedRef { branch, revision: id.to_hex() }).collect() })
}
