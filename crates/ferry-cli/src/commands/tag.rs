//! `ferry tag create|list|delete`: names that pin a revision, in the local
//! store or on a hub (`--hub`). A tag is the branch `tags/<name>`: it
//! travels with push, pull and mirror, and gc keeps what it names.

use std::path::Path;

use anyhow::Result;
use ferry_store::{RevisionSpec, Store, TAG_PREFIX};
use serde::Serialize;

use crate::net::{on_hub, NetArgs};
use crate::output::Report;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: TagAction,
    /// Act on this hub (a remote's name or host:port) instead of the local store.
    #[arg(long, global = true)]
    hub: Option<String>,
    #[command(flatten)]
    net: NetArgs,
}

#[derive(clap::Subcommand)]
enum TagAction {
    /// Tag a revision (a tag never moves; on a hub a write token may create one).
    Create {
        /// owner/name[@branch-or-revision] to tag (default: main's head).
        target: String,
        /// The tag's name, e.g. v1.0.
        name: String,
    },
    /// List the tags of a repository.
    List {
        /// Repository, as owner/name.
        repo: String,
    },
    /// Delete a tag (on a hub: needs an admin token).
    Delete {
        /// Repository, as owner/name.
        repo: String,
        /// The tag's name.
        name: String,
    },
}

#[derive(Serialize)]
pub struct Tag {
    pub tag: String,
    pub revision: String,
}

#[derive(Serialize)]
pub struct TagChanged {
    pub repo: String,
    pub tag: String,
    pub revision: String,
    pub deleted: bool,
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum TagReport {
    List(Vec<Tag>),
    Changed(TagChanged),
}

impl Report for TagReport {
    fn text(&self) -> Vec<String> {
        match self {
            TagReport::List(tags) => tags.iter().map(|t| format!("{}  {}", t.revision, t.tag)).collect(),
            TagReport::Changed(c) if c.deleted => vec![format!("deleted tag {} of {} (was {})", c.tag, c.repo, c.revision)],
            TagReport::Changed(c) => vec![format!("tagged {} of {} as {}", c.revision, c.repo, c.tag)],
        }
    }
}

/// The tags among a repository's branches, by their names.
fn tags(branches: Vec<(String, ferry_core::Id)>) -> Vec<Tag> {
    branches.into_iter().filter_map(|(b, id)| Some(Tag { tag: b.strip_prefix(TAG_PREFIX)?.to_owned(), revision: id.to_hex() })).collect()
}

pub fn run(store: &Path, args: Args) -> Result<TagReport> {
    match &args.hub {
        Some(hub) => remote(hub, &args),
        None => local(&super::init::open(store)?, args.action),
    }
}

fn local(store: &Store, action: TagAction) -> Result<TagReport> {
    Ok(match action {
        TagAction::Create { target, name } => {
            let spec = RevisionSpec::parse(&target)?;
            let (id, _) = store.resolve(&spec)?;
            store.update_branch(&spec.repo, &format!("{TAG_PREFIX}{name}"), None, Some(id))?;
            TagReport::Changed(TagChanged { repo: spec.repo, tag: name, revision: id.to_hex(), deleted: false })
        }
        TagAction::List { repo } => {
            store.repo(&repo)?;
            TagReport::List(tags(store.branches(&repo)?))
        }
        TagAction::Delete { repo, name } => {
            let branch = format!("{TAG_PREFIX}{name}");
            let head = store.branch(&repo, &branch)?.ok_or_else(|| ferry_store::StoreError::UnknownRevision(format!("{repo} has no tag {name:?}")))?;
            store.update_branch(&repo, &branch, Some(head), None)?;
            TagReport::Changed(TagChanged { repo, tag: name, revision: head.to_hex(), deleted: true })
        }
    })
}

fn remote(hub: &str, args: &Args) -> Result<TagReport> {
    on_hub(hub, &args.net, async |client| {
        Ok(match &args.action {
            TagAction::Create { target, name } => {
                let spec = RevisionSpec::parse(target)?;
                let id = ferry_transfer::create_tag(client, &spec.repo, &spec.rev, name).await?;
                TagReport::Changed(TagChanged { repo: spec.repo, tag: name.clone(), revision: id.to_hex(), deleted: false })
            }
            TagAction::List { repo } => TagReport::List(tags(client.refs(repo).await?)),
            TagAction::Delete { repo, name } => {
                let id = ferry_transfer::delete_branch(client, repo, &format!("{TAG_PREFIX}{name}")).await?;
                TagReport::Changed(TagChanged { repo: repo.clone(), tag: name.clone(), revision: id.to_hex(), deleted: true })
            }
        })
    })
}
