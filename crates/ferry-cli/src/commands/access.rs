//! `ferry token create|list|revoke` and `ferry visibility`: the hub's
//! access file, edited beside a running hub (which re-reads it).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use ferry_hub::access::{access_path, AccessFile};
use serde::Serialize;

use crate::output::Report;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }
}

impl From<Scope> for ferry_hub::access::Scope {
    fn from(s: Scope) -> Self {
        match s {
            Scope::Read => ferry_hub::access::Scope::Read,
            Scope::Write => ferry_hub::access::Scope::Write,
        }
    }
}

impl From<ferry_hub::access::Scope> for Scope {
    fn from(s: ferry_hub::access::Scope) -> Self {
        match s {
            ferry_hub::access::Scope::Read => Scope::Read,
            ferry_hub::access::Scope::Write => Scope::Write,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Public,
    Private,
}

impl std::fmt::Display for Visibility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
        })
    }
}

#[derive(clap::Subcommand)]
pub enum TokenAction {
    /// Create a token; it is printed once and only its hash is kept.
    Create {
        /// Repository glob the token covers, e.g. 'org/*'.
        #[arg(long)]
        repo: String,
        /// read: pull and read; write: push as well.
        #[arg(long, value_enum)]
        scope: Scope,
    },
    /// List tokens (ids, patterns, scopes; never secrets).
    List,
    /// Revoke a token by id.
    Revoke {
        /// The token's id, as `token list` shows it.
        id: String,
    },
}

#[derive(clap::Args)]
pub struct VisibilityArgs {
    /// Repository glob, e.g. org/llama or 'org/*'.
    pattern: String,
    /// public: readable without a token; private: only with one.
    #[arg(value_enum)]
    visibility: Visibility,
}

#[derive(Serialize)]
pub struct TokenCreated {
    /// The secret, shown this once.
    pub token: String,
    pub repo: String,
    pub scope: Scope,
}

/// A token as listed: never its secret, only the secret's hash.
#[derive(Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub hash: String,
    pub repo: String,
    pub scope: Scope,
    pub created: i64,
}

#[derive(Serialize)]
pub struct TokenRevoked {
    pub revoked: String,
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum TokenReport {
    Created(TokenCreated),
    List(Vec<TokenInfo>),
    Revoked(TokenRevoked),
}

impl Report for TokenReport {
    fn text(&self) -> Vec<String> {
        match self {
            TokenReport::Created(c) => vec![c.token.clone()],
            TokenReport::List(tokens) => tokens.iter().map(|t| format!("{}  {:<5}  {}", t.id, t.scope.name(), t.repo)).collect(),
            TokenReport::Revoked(r) => vec![format!("revoked token {}", r.revoked)],
        }
    }
}

#[derive(Serialize)]
pub struct VisibilitySet {
    pub pattern: String,
    pub visibility: Visibility,
}

impl Report for VisibilitySet {
    fn text(&self) -> Vec<String> {
        vec![format!("{} is now {}", self.pattern, self.visibility)]
    }
}

/// The access file of the store at `store`, and where it lives. The store
/// is not opened (a running hub holds it): a directory without RocksDB's
/// `CURRENT` file is not a store.
fn load_access(store: &Path) -> Result<(PathBuf, AccessFile)> {
    if !store.join("CURRENT").exists() {
        bail!(ferry_store::StoreError::NotAStore(store.to_owned()));
    }
    let file = access_path(store);
    let access = AccessFile::load(&file)?;
    Ok((file, access))
}

/// Removes the token with this id; false if there was none.
fn revoke_token(access: &mut AccessFile, id: &str) -> bool {
    let before = access.tokens.len();
    access.tokens.retain(|t| t.id != id);
    access.tokens.len() != before
}

/// Makes repositories matching `pattern` public or private.
fn set_visibility(access: &mut AccessFile, pattern: &str, visibility: Visibility) {
    access.public.retain(|p| p != pattern);
    if visibility == Visibility::Public {
        access.public.push(pattern.to_owned());
    }
}

pub fn token(store: &Path, action: TokenAction) -> Result<TokenReport> {
    let (file, mut access) = load_access(store)?;
    Ok(match action {
        TokenAction::Create { repo, scope } => {
            let token = access.create_token(&repo, scope.into(), super::unix_now())?;
            access.save(&file)?;
            TokenReport::Created(TokenCreated { token, repo, scope })
        }
        TokenAction::List => TokenReport::List(
            access.tokens.into_iter().map(|t| TokenInfo { id: t.id, hash: t.hash, repo: t.repo, scope: t.scope.into(), created: t.created }).collect(),
        ),
        TokenAction::Revoke { id } => {
            if !revoke_token(&mut access, &id) {
                bail!("no token with id {id}");
            }
            access.save(&file)?;
            TokenReport::Revoked(TokenRevoked { revoked: id })
        }
    })
}

pub fn visibility(store: &Path, args: VisibilityArgs) -> Result<VisibilitySet> {
    let (file, mut access) = load_access(store)?;
    set_visibility(&mut access, &args.pattern, args.visibility);
    access.save(&file)?;
    Ok(VisibilitySet { pattern: args.pattern, visibility: args.visibility })
}
