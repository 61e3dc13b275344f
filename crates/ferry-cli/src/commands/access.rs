//! `ferry token create|list|revoke` and `ferry visibility`: the hub's
//! access file, edited beside a running hub (which re-reads it).

use std::path::Path;

use anyhow::Result;
use ferry_service::AccessFile;
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

impl From<Scope> for ferry_service::Scope {
    fn from(s: Scope) -> Self {
        match s {
            Scope::Read => ferry_service::Scope::Read,
            Scope::Write => ferry_service::Scope::Write,
        }
    }
}

impl From<ferry_service::Scope> for Scope {
    fn from(s: ferry_service::Scope) -> Self {
        match s {
            ferry_service::Scope::Read => Scope::Read,
            ferry_service::Scope::Write => Scope::Write,
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

pub fn token(store: &Path, action: TokenAction) -> Result<TokenReport> {
    Ok(match action {
        TokenAction::Create { repo, scope } => {
            let token = AccessFile::edit(store, |access| access.create_token(&repo, scope.into(), super::unix_now()))?;
            TokenReport::Created(TokenCreated { token, repo, scope })
        }
        TokenAction::List => TokenReport::List(
            AccessFile::of_store(store)?
                .tokens
                .into_iter()
                .map(|t| TokenInfo { id: t.id, hash: t.hash, repo: t.repo, scope: t.scope.into(), created: t.created })
                .collect(),
        ),
        TokenAction::Revoke { id } => {
            AccessFile::edit(store, |access| access.revoke(&id))?;
            TokenReport::Revoked(TokenRevoked { revoked: id })
        }
    })
}

pub fn visibility(store: &Path, args: VisibilityArgs) -> Result<VisibilitySet> {
    AccessFile::edit(store, |access| {
        access.set_public(&args.pattern, args.visibility == Visibility::Public);
        Ok(())
    })?;
    Ok(VisibilitySet { pattern: args.pattern, visibility: args.visibility })
}
