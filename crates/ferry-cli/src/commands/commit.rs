//! `ferry commit`.

use std::path::PathBuf;

use anyhow::Result;
use ferry_store::Store;
use serde::Serialize;

use crate::output::Report;
use crate::progress;

#[derive(clap::Args)]
pub struct Args {
    /// Repository, as owner/name.
    repo: String,
    /// Directory whose regular files are recorded.
    dir: PathBuf,
    /// Message recorded in the revision.
    #[arg(short, long)]
    message: String,
    /// Branch to move to the new revision.
    #[arg(long, default_value = "main")]
    branch: String,
    #[command(flatten)]
    source: SourceArgs,
    /// Store changed tensors as deltas against this revision's tensors of
    /// the same name (REPO@BRANCH, REPO@REVISION; default: the branch's
    /// head), e.g. the base model of a fine-tune's first upload.
    #[arg(long, value_name = "REPO@REV")]
    base: Option<String>,
}

/// Who records a directory, and how its symlinks are taken (commit and
/// upload).
#[derive(clap::Args)]
pub struct SourceArgs {
    /// Author recorded in the revision (default: FERRY_AUTHOR, else the
    /// configuration file's `author`, else git's user.name and user.email,
    /// else $USER).
    #[arg(long, env = "FERRY_AUTHOR")]
    author: Option<String>,
    /// Record the content of symlinked files instead of refusing symlinks.
    #[arg(long)]
    pub follow_symlinks: bool,
}

impl SourceArgs {
    /// The author to record.
    pub fn author(&self) -> Result<String> {
        if let Some(a) = &self.author {
            return Ok(a.clone());
        }
        let configured = crate::config::Config::load(&crate::config::path())?.author;
        Ok(configured.or_else(default_author).unwrap_or_else(|| "unknown".into()))
    }
}

#[derive(Serialize)]
pub struct Committed {
    pub revision: String,
    pub repo: String,
    pub branch: String,
    pub files: u64,
    pub bytes: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    pub new_bytes: u64,
    pub stored_bytes: u64,
    pub new_tree_nodes: u64,
    pub seconds: f64,
}

impl Report for Committed {
    fn text(&self) -> Vec<String> {
        vec![format!(
            "{}\ncommitted {} files, {} to {}@{}: {} new ({} stored), {} already present",
            self.revision,
            self.files,
            progress::bytes(self.bytes),
            self.repo,
            self.branch,
            progress::bytes(self.new_bytes),
            progress::bytes(self.stored_bytes),
            progress::bytes(self.bytes - self.new_bytes)
        )]
    }
}

pub fn run(store: &Store, args: Args, json: bool) -> Result<Committed> {
    let Args { repo, dir, message, branch, source, base } = args;
    let (author, follow_symlinks) = (source.author()?, source.follow_symlinks);
    let base = base.map(|b| store.resolve(&ferry_store::RevisionSpec::parse(&b)?).map(|(id, _)| id)).transpose()?;
    let opts = ferry_store::CommitOptions { message, author, time: super::unix_now(), follow_symlinks, base };
    let bar = progress::Ingest::new(json);
    let started = std::time::Instant::now();
    let c = store.write_session().commit_dir(&repo, &branch, &dir, &opts, &bar)?;
    bar.finish();
    let t = &c.totals;
    Ok(Committed {
        revision: c.revision.to_hex(),
        repo,
        branch,
        files: c.files,
        bytes: t.size,
        chunks: t.chunks,
        new_chunks: t.new_chunks,
        new_bytes: t.new_bytes,
        stored_bytes: t.stored_bytes,
        new_tree_nodes: t.new_nodes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Who commits when neither --author, FERRY_AUTHOR nor the configuration
/// says: git's
/// `user.name` (and `user.email`), else the login name.
fn default_author() -> Option<String> {
    let git = |key: &str| {
        let out = std::process::Command::new("git").args(["config", "--get", key]).stderr(std::process::Stdio::null()).output().ok()?;
        let v = String::from_utf8(out.stdout).ok()?.trim().to_owned();
        (out.status.success() && !v.is_empty()).then_some(v)
    };
    match (git("user.name"), git("user.email")) {
        (Some(name), Some(email)) => Some(format!("{name} <{email}>")),
        (Some(name), None) => Some(name),
        _ => std::env::var("USER").ok(),
    }
}
