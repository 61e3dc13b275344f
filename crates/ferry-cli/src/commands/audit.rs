//! `ferry audit`: the hub's record of branch and tag moves and repository
//! deletions made through its doors (who, from where, when).

use std::path::Path;

use anyhow::Result;
use ferry_service::{read_audit_log, AccessFile, AuditEntry};
use serde::Serialize;

use crate::output::Report;

#[derive(clap::Args)]
pub struct Args {
    /// Only repositories matching this glob, e.g. 'org/*'.
    #[arg(long)]
    repo: Option<String>,
    /// Show at most the newest N entries.
    #[arg(short = 'n', long, default_value_t = 100)]
    limit: usize,
}

/// An entry, with the token's name when the token still exists.
#[derive(Serialize)]
pub struct AuditLine {
    #[serde(flatten)]
    pub entry: AuditEntry,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_name: Option<String>,
}

#[derive(Serialize)]
#[serde(transparent)]
pub struct Audit(pub Vec<AuditLine>);

impl Report for Audit {
    fn text(&self) -> Vec<String> {
        let short = |h: &Option<String>| h.as_deref().map_or("-".to_owned(), |h| h[..h.len().min(12)].to_owned());
        self.0
            .iter()
            .map(|l| {
                let e = &l.entry;
                let who = l.token_name.clone().unwrap_or_else(|| e.token.clone());
                let branch = if e.branch.is_empty() { String::new() } else { format!("@{}", e.branch) };
                format!(
                    "{}  {:<11}  {}{}  {} -> {}  by {} from {}",
                    super::log::human_time(e.time),
                    e.action,
                    e.repo,
                    branch,
                    short(&e.old),
                    short(&e.new),
                    who,
                    e.address.as_deref().unwrap_or("-")
                )
            })
            .collect()
    }
}

pub fn run(store: &Path, args: Args) -> Result<Audit> {
    let glob = args.repo.as_deref().map(ferry_service::access::repo_glob).transpose()?;
    let names = AccessFile::of_store(store)?;
    let mut entries = read_audit_log(store)?;
    entries.retain(|e| glob.as_ref().is_none_or(|g| g.is_match(&e.repo)));
    let skip = entries.len().saturating_sub(args.limit);
    Ok(Audit(
        entries
            .into_iter()
            .skip(skip)
            .map(|entry| {
                let token_name = names.tokens.iter().find(|t| t.id == entry.token && !t.name.is_empty()).map(|t| t.name.clone());
                AuditLine { entry, token_name }
            })
            .collect(),
    ))
}
