//! Who may read and write what: tokens (stored hashed) and public
//! repositories, kept in `<store>/hub-access.json` so that an operator can
//! change them with `ferry token ...` while the hub runs (the hub re-reads
//! the file when it changes).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::HubError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    /// BLAKE3 of the token's secret part, hex.
    pub hash: String,
    /// Repository glob, e.g. `org/*`.
    pub repo: String,
    pub scope: Scope,
    pub created: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AccessFile {
    #[serde(default)]
    pub tokens: Vec<TokenRecord>,
    /// Repository globs readable without a token.
    #[serde(default)]
    pub public: Vec<String>,
}

fn glob(p: &str) -> Option<globset::GlobMatcher> {
    globset::GlobBuilder::new(p).literal_separator(true).build().ok().map(|g| g.compile_matcher())
}

fn matches(pattern: &str, repo: &str) -> bool {
    glob(pattern).is_some_and(|g| g.is_match(repo))
}

pub fn access_path(store: &Path) -> PathBuf {
    store.join("hub-access.json")
}

impl AccessFile {
    pub fn load(path: &Path) -> Result<AccessFile, HubError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| HubError::Config(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AccessFile::default()),
            Err(e) => Err(HubError::Io(format!("{}: {e}", path.display()))),
        }
    }

    /// Writes atomically (temporary file, fsync, rename), mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), HubError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension("json.tmp");
        let io = |e: std::io::Error| HubError::Io(format!("{}: {e}", path.display()));
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
        f.write_all(&serde_json::to_vec_pretty(self).expect("serializable")).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Creates a token and returns its secret form (shown once).
    pub fn create_token(&mut self, repo: &str, scope: Scope, now: i64) -> Result<String, HubError> {
        if glob(repo).is_none() {
            return Err(HubError::Config(format!("{repo:?} is not a valid repository pattern")));
        }
        let mut rnd = [0u8; 40];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut rnd).map_err(|_| HubError::Config("no randomness".into()))?;
        let id = hex::encode(&rnd[..8]);
        let secret = hex::encode(&rnd[8..]);
        self.tokens.push(TokenRecord { id: id.clone(), hash: blake3::hash(secret.as_bytes()).to_hex().to_string(), repo: repo.into(), scope, created: now });
        Ok(format!("fy_{id}_{secret}"))
    }

    /// The record of a presented token, if it is valid.
    pub fn check(&self, token: &str) -> Option<&TokenRecord> {
        let rest = token.strip_prefix("fy_")?;
        let (id, secret) = rest.split_once('_')?;
        let rec = self.tokens.iter().find(|t| t.id == id)?;
        let want = blake3::Hash::from_hex(&rec.hash).ok()?;
        // blake3::Hash compares in constant time.
        (blake3::hash(secret.as_bytes()) == want).then_some(rec)
    }

    pub fn is_public(&self, repo: &str) -> bool {
        self.public.iter().any(|p| matches(p, repo))
    }
}

/// What a connection may do.
#[derive(Debug, Clone)]
pub struct Grant {
    pub token: Option<TokenRecord>,
}

impl Grant {
    pub fn can_read(&self, access: &AccessFile, repo: &str) -> bool {
        access.is_public(repo) || self.token.as_ref().is_some_and(|t| matches(&t.repo, repo))
    }
    pub fn can_write(&self, repo: &str) -> bool {
        self.token.as_ref().is_some_and(|t| t.scope == Scope::Write && matches(&t.repo, repo))
    }
}

/// The access file, re-read when it changes on disk.
pub struct Access {
    path: PathBuf,
    cached: Mutex<(Option<SystemTime>, std::sync::Arc<AccessFile>)>,
}

impl Access {
    pub fn new(path: PathBuf) -> Access {
        Access { path, cached: Mutex::new((None, std::sync::Arc::new(AccessFile::default()))) }
    }

    pub fn current(&self) -> Result<std::sync::Arc<AccessFile>, HubError> {
        let mtime = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let mut c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if c.0 != mtime || mtime.is_none() {
            c.1 = std::sync::Arc::new(AccessFile::load(&self.path)?);
            c.0 = mtime;
        }
        Ok(c.1.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_check_by_hash_and_scope_and_pattern() {
        let mut a = AccessFile::default();
        let w = a.create_token("org/*", Scope::Write, 0).unwrap();
        let r = a.create_token("org/llama", Scope::Read, 0).unwrap();
        assert!(a.check(&w).is_some());
        assert!(a.check(&format!("{}x", &w[..w.len() - 1])).is_none());
        assert!(a.check("fy_nope_nope").is_none());
        let gw = Grant { token: a.check(&w).cloned() };
        let gr = Grant { token: a.check(&r).cloned() };
        assert!(gw.can_write("org/x") && !gw.can_write("other/x"));
        assert!(gr.can_read(&a, "org/llama") && !gr.can_write("org/llama") && !gr.can_read(&a, "org/other"));
        assert!(!a.tokens.iter().any(|t| w.contains(&t.hash)), "secret stored in clear");
    }
}
