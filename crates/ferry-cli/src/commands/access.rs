//! `ferry token create|list|revoke` and `ferry visibility`: the hub's
//! access file, edited beside a running hub (which re-reads it).

use std::path::Path;

use anyhow::Result;
use ferry_service::{AccessFile, TokenSpec, TokenUse};
use serde::Serialize;

use crate::output::Report;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Pull and read.
    Read,
    /// Push, move and delete branches, create tags.
    Write,
    /// Write, and delete repositories and tags, forget revisions.
    Admin,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

impl From<Scope> for ferry_service::Scope {
    fn from(s: Scope) -> Self {
        match s {
            Scope::Read => ferry_service::Scope::Read,
            Scope::Write => ferry_service::Scope::Write,
            Scope::Admin => ferry_service::Scope::Admin,
        }
    }
}

impl From<ferry_service::Scope> for Scope {
    fn from(s: ferry_service::Scope) -> Self {
        match s {
            ferry_service::Scope::Read => Scope::Read,
            ferry_service::Scope::Write => Scope::Write,
            ferry_service::Scope::Admin => Scope::Admin,
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
        /// What the token may do there.
        #[arg(long, value_enum)]
        scope: Scope,
        /// A name to know it by (list and revoke take it).
        #[arg(long)]
        name: Option<String>,
        /// Stop working after this long, e.g. 90d, 12h, 2w (default: never).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<std::time::Duration>,
    },
    /// List tokens: names, patterns, scopes, expiry and last use (never
    /// secrets or their hashes).
    List,
    /// Revoke a token by id or name.
    Revoke {
        /// The token's id or name, as `token list` shows them.
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub repo: String,
    pub scope: Scope,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
}

/// A token as listed: never its secret, nor anything derived from it.
#[derive(Serialize)]
pub struct TokenInfo {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub repo: String,
    pub scope: Scope,
    pub created: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used: Option<i64>,
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
            TokenReport::List(tokens) => {
                let now = super::unix_now();
                let mut lines = vec![format!("{:<16}  {:<12}  {:<5}  {:<20}  {:<12}  {}", "ID", "NAME", "SCOPE", "REPOSITORIES", "EXPIRES", "LAST USED")];
                lines.extend(tokens.iter().map(|t| {
                    let expires = match t.expires {
                        None => "never".to_owned(),
                        Some(e) if e <= now => "expired".to_owned(),
                        Some(e) => format!("in {}", crate::progress::age(e - now)),
                    };
                    let used = t.last_used.map_or("never".to_owned(), |u| format!("{} ago", crate::progress::age(now - u)));
                    format!("{:<16}  {:<12}  {:<5}  {:<20}  {:<12}  {}", t.id, t.name.as_deref().unwrap_or("-"), t.scope.name(), t.repo, expires, used)
                }));
                lines
            }
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

pub fn token(store: &Path, action: TokenAction) -> Result<TokenReport> {
    Ok(match action {
        TokenAction::Create { repo, scope, name, expires } => {
            let now = super::unix_now();
            let expires = expires.map(|d| now.saturating_add(d.as_secs().min(i64::MAX as u64) as i64));
            let spec = TokenSpec { repo: repo.clone(), scope: scope.into(), name: name.clone().unwrap_or_default(), expires };
            let token = AccessFile::edit(store, |access| access.create(spec, now))?;
            TokenReport::Created(TokenCreated { token, name, repo, scope, expires })
        }
        TokenAction::List => {
            let used = TokenUse::of_store(store);
            TokenReport::List(
                AccessFile::of_store(store)?
                    .tokens
                    .into_iter()
                    .map(|t| TokenInfo {
                        last_used: used.0.get(&t.id).copied(),
                        id: t.id,
                        name: Some(t.name).filter(|n| !n.is_empty()),
                        repo: t.repo,
                        scope: t.scope.into(),
                        created: t.created,
                        expires: t.expires,
                    })
                    .collect(),
            )
        }
        TokenAction::Revoke { id } => TokenReport::Revoked(TokenRevoked { revoked: AccessFile::edit(store, |access| access.revoke(&id))? }),
    })
}

pub fn visibility(store: &Path, args: VisibilityArgs) -> Result<VisibilitySet> {
    AccessFile::edit(store, |access| {
        access.set_public(&args.pattern, args.visibility == Visibility::Public);
        Ok(())
    })?;
    Ok(VisibilitySet { pattern: args.pattern, visibility: args.visibility })
}
