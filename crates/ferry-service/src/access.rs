//! Who may read and write what. [`Authorizer`] is the seam a host server
//! fills with its own rules; [`Access`] is ferry's own: tokens (stored
//! hashed) and public repositories, kept in `<store>/hub-access.json` so
//! that an operator can change them with `ferry token ...` while the hub
//! runs (the hub re-reads the file when it changes, and every request is
//! checked against what the file says then).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use ferry_proto::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::ServiceError;

/// Decides who may read and write which repository. Asked at every
/// request, so a change (a revoked token, a repository made private) takes
/// effect on connections already open.
pub trait Authorizer: Send + Sync {
    /// The grant a presented token carries; an empty token is anonymous.
    /// `Ok(None)`: the token is not valid here.
    fn authenticate(&self, token: &str) -> Result<Option<Grant>, ServiceError>;
    /// Whether `grant` may read `repo` now.
    fn can_read(&self, grant: &Grant, repo: &str) -> Result<bool, ServiceError>;
    /// Whether `grant` may write `repo` now.
    fn can_write(&self, grant: &Grant, repo: &str) -> Result<bool, ServiceError>;
    /// Whether `grant` may delete `repo`, its tags and what retention
    /// forgets, now.
    fn can_administer(&self, grant: &Grant, repo: &str) -> Result<bool, ServiceError>;
    /// Whether `repo` is readable without a token (listings say so).
    fn is_public(&self, repo: &str) -> Result<bool, ServiceError>;
    /// Whether `grant` still holds (its token was not revoked); a door
    /// closes the connections of one that no longer does.
    fn is_valid(&self, grant: &Grant) -> Result<bool, ServiceError>;
}

/// Who a caller authenticated as. The rights themselves are looked up by
/// the [`Authorizer`] at each request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// No token: public repositories only.
    Anonymous,
    /// A token, by its id.
    Token(String),
    /// This process's own writers (the local end of a push, pull or
    /// mirror): everything.
    Trusted,
}

/// What a token may do within its repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read (pull, list, range reads).
    Read,
    /// Read and write (push, move and delete branches, create tags).
    Write,
    /// Write, and destroy: delete repositories and tags, forget revisions.
    Admin,
}

impl Scope {
    /// Whether this scope includes `other`.
    pub fn covers(self, other: Scope) -> bool {
        self as u8 >= other as u8
    }
}

/// A token as the access file keeps it: its secret only as a hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The public part of the token (`fy_<id>_<secret>`).
    pub id: String,
    /// BLAKE3 of the token's secret part, hex.
    pub hash: String,
    /// Repository glob, e.g. `org/*`.
    pub repo: String,
    /// What it may do there.
    pub scope: Scope,
    /// Unix seconds.
    pub created: i64,
    /// A name for people (unique in the file; may be empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// When it stops working (Unix seconds); None: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
}

impl TokenRecord {
    /// Whether it still works at `now`.
    pub fn is_live(&self, now: i64) -> bool {
        self.expires.is_none_or(|e| now < e)
    }
}

/// What a new token is for.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// Repository glob, e.g. `org/*`.
    pub repo: String,
    /// What it may do there.
    pub scope: Scope,
    /// A name for people (empty: none).
    pub name: String,
    /// When it stops working (Unix seconds); None: never.
    pub expires: Option<i64>,
}

impl TokenSpec {
    /// A token for `repo` with `scope`, unnamed, that never expires.
    pub fn new(repo: &str, scope: Scope) -> TokenSpec {
        TokenSpec { repo: repo.into(), scope, name: String::new(), expires: None }
    }
}

/// The contents of `hub-access.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AccessFile {
    /// Every valid token.
    #[serde(default)]
    pub tokens: Vec<TokenRecord>,
    /// Repository globs readable without a token.
    #[serde(default)]
    pub public: Vec<String>,
}

/// A repository glob as the hub reads them: `*` stays within one path
/// component, so `org/*` does not match `org/a/b`.
pub fn repo_glob(pattern: &str) -> Result<globset::GlobMatcher, ServiceError> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| ServiceError::new(ErrorCode::BadRequest, format!("repository pattern {pattern:?}: {e}")))
}

fn matches(pattern: &str, repo: &str) -> bool {
    repo_glob(pattern).is_ok_and(|g| g.is_match(repo))
}

/// Where a store keeps its access file.
pub fn access_path(store: &Path) -> PathBuf {
    store.join("hub-access.json")
}

/// Where the hub notes when each token was last used: a file of its own,
/// so the hub never writes the file the operator edits.
pub fn token_use_path(store: &Path) -> PathBuf {
    store.join("hub-token-use.json")
}

/// A token's last use is noted at most this often (seconds).
const USE_RESOLUTION: i64 = 60;

/// When each token was last presented: token id → Unix seconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenUse(pub std::collections::BTreeMap<String, i64>);

impl TokenUse {
    /// The record of the store at `store` (none yet: empty).
    pub fn of_store(store: &Path) -> TokenUse {
        TokenUse::load(&token_use_path(store))
    }

    /// The record at `path`; one missing or unreadable is empty (it is
    /// informational).
    fn load(path: &Path) -> TokenUse {
        std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename),
/// readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ServiceError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.tmp");
    let io = |e: std::io::Error| io_error(path, e);
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn io_error(path: &Path, e: std::io::Error) -> ServiceError {
    ServiceError::internal(format!("{}: {e}", path.display()))
}

impl AccessFile {
    /// Reads the file (a missing file is an empty one).
    pub fn load(path: &Path) -> Result<AccessFile, ServiceError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| ServiceError::internal(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AccessFile::default()),
            Err(e) => Err(io_error(path, e)),
        }
    }

    /// Loads the access file of the store at `store`, lets `change` edit
    /// it, and saves it if `change` succeeds. The hub need not be stopped:
    /// it re-reads the file when it changes.
    pub fn edit<T>(store: &Path, change: impl FnOnce(&mut AccessFile) -> Result<T, ServiceError>) -> Result<T, ServiceError> {
        let mut file = AccessFile::of_store(store)?;
        let out = change(&mut file)?;
        file.save(&access_path(store))?;
        Ok(out)
    }

    /// The access file of the store at `store`, which must exist.
    pub fn of_store(store: &Path) -> Result<AccessFile, ServiceError> {
        if !ferry_store::Store::exists_at(store) {
            return Err(ServiceError::new(ErrorCode::NotFound, ferry_store::StoreError::NotAStore(store.to_owned()).to_string()));
        }
        AccessFile::load(&access_path(store))
    }

    /// Writes atomically (temporary file, fsync, rename), mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), ServiceError> {
        write_private(path, &serde_json::to_vec_pretty(self).expect("serializable"))
    }

    /// Creates an unnamed token that never expires and returns its secret
    /// form (shown once).
    pub fn create_token(&mut self, repo: &str, scope: Scope, now: i64) -> Result<String, ServiceError> {
        self.create(TokenSpec::new(repo, scope), now)
    }

    /// Creates a token and returns its secret form (shown once).
    pub fn create(&mut self, spec: TokenSpec, now: i64) -> Result<String, ServiceError> {
        let TokenSpec { repo, scope, name, expires } = spec;
        let repo = repo.as_str();
        if !name.is_empty() {
            if name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
                return Err(ServiceError::new(ErrorCode::BadRequest, format!("{name:?} is not a valid token name (letters, digits, '.', '_', '-'; up to 64)")));
            }
            if self.tokens.iter().any(|t| t.name == name) {
                return Err(ServiceError::new(ErrorCode::Conflict, format!("a token named {name:?} exists already")));
            }
        }
        if expires.is_some_and(|e| e <= now) {
            return Err(ServiceError::new(ErrorCode::BadRequest, "the token would expire before it is used"));
        }
        if repo_glob(repo).is_err() {
            return Err(ServiceError::new(ErrorCode::BadRequest, format!("{repo:?} is not a valid repository pattern")));
        }
        // `*` does not cross `/`, and every name is owner/name.
        if repo.split('/').count() != 2 {
            let meant = match repo {
                "*" | "**" => "\"*/*\"".to_owned(),
                r if !r.contains('/') => format!("\"{r}/*\" or \"*/{r}\""),
                _ => "a pattern with one / (such as \"org/*\" or \"*/*\")".to_owned(),
            };
            return Err(ServiceError::new(
                ErrorCode::BadRequest,
                format!("the pattern {repo:?} can never match a repository (names are owner/name): did you mean {meant}?"),
            ));
        }
        let mut rnd = [0u8; 40];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut rnd).map_err(|_| ServiceError::internal("no randomness"))?;
        let id = hex::encode(&rnd[..8]);
        let secret = hex::encode(&rnd[8..]);
        let hash = blake3::hash(secret.as_bytes()).to_hex().to_string();
        self.tokens.push(TokenRecord { id: id.clone(), hash, repo: repo.into(), scope, created: now, name, expires });
        Ok(format!("fy_{id}_{secret}"))
    }

    /// The record of a presented token, if it is valid at `now`.
    pub fn check(&self, token: &str, now: i64) -> Option<&TokenRecord> {
        let rest = token.strip_prefix("fy_")?;
        let (id, secret) = rest.split_once('_')?;
        let rec = self.tokens.iter().find(|t| t.id == id)?;
        let want = blake3::Hash::from_hex(&rec.hash).ok()?;
        // blake3::Hash compares in constant time.
        (blake3::hash(secret.as_bytes()) == want && rec.is_live(now)).then_some(rec)
    }

    /// Removes a token by id or name; returns its id.
    pub fn revoke(&mut self, id_or_name: &str) -> Result<String, ServiceError> {
        let Some(at) = self.tokens.iter().position(|t| t.id == id_or_name || (!t.name.is_empty() && t.name == id_or_name)) else {
            return Err(ServiceError::new(ErrorCode::NotFound, format!("no token with id or name {id_or_name:?}")));
        };
        Ok(self.tokens.remove(at).id)
    }

    /// Makes repositories matching `pattern` readable without a token, or
    /// no longer so.
    pub fn set_public(&mut self, pattern: &str, public: bool) {
        self.public.retain(|p| p != pattern);
        if public {
            self.public.push(pattern.to_owned());
        }
    }

    /// Whether `repo` is readable without a token.
    pub fn is_public(&self, repo: &str) -> bool {
        self.public.iter().any(|p| matches(p, repo))
    }

    /// The live token a grant names.
    fn token(&self, grant: &Grant) -> Option<&TokenRecord> {
        match grant {
            Grant::Token(id) => self.tokens.iter().find(|t| &t.id == id && t.is_live(ferry_core::time::unix_now())),
            _ => None,
        }
    }

    /// Whether `grant` may do what `scope` allows in `repo` under this file.
    pub fn allows(&self, grant: &Grant, scope: Scope, repo: &str) -> bool {
        *grant == Grant::Trusted
            || (scope == Scope::Read && self.is_public(repo))
            || self.token(grant).is_some_and(|t| t.scope.covers(scope) && matches(&t.repo, repo))
    }

    /// Whether `grant` may read `repo` under this file.
    pub fn can_read(&self, grant: &Grant, repo: &str) -> bool {
        self.allows(grant, Scope::Read, repo)
    }

    /// Whether `grant` may write `repo` under this file.
    pub fn can_write(&self, grant: &Grant, repo: &str) -> bool {
        self.allows(grant, Scope::Write, repo)
    }
}

/// The access file, re-read when it changes on disk, and the record of
/// when each token was last used.
pub struct Access {
    path: PathBuf,
    cached: Mutex<(Option<SystemTime>, Arc<AccessFile>)>,
    use_path: PathBuf,
    used: Mutex<Option<TokenUse>>,
}

impl Access {
    /// The access file of the store at `store`.
    pub fn for_store(store: &Path) -> Access {
        Access {
            path: access_path(store),
            cached: Mutex::new((None, Arc::new(AccessFile::default()))),
            use_path: token_use_path(store),
            used: Mutex::new(None),
        }
    }

    /// Notes that token `id` was used at `now`, on disk at most once a
    /// minute per token. A record that cannot be written is not worth
    /// refusing the token for.
    fn note_use(&self, id: &str, now: i64, file: &AccessFile) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let used = used.get_or_insert_with(|| TokenUse::load(&self.use_path));
        if used.0.get(id).is_some_and(|&last| now - last < USE_RESOLUTION) {
            return;
        }
        used.0.insert(id.to_owned(), now);
        used.0.retain(|id, _| file.tokens.iter().any(|t| &t.id == id));
        if let Err(e) = write_private(&self.use_path, &serde_json::to_vec_pretty(&used).expect("serializable")) {
            tracing::warn!("cannot note a token's use: {e}");
        }
    }

    /// The file as it is now (re-read if it changed).
    pub fn current(&self) -> Result<Arc<AccessFile>, ServiceError> {
        let mtime = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let mut c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if c.0 != mtime || mtime.is_none() {
            c.1 = Arc::new(AccessFile::load(&self.path)?);
            c.0 = mtime;
        }
        Ok(c.1.clone())
    }
}

impl Authorizer for Access {
    fn authenticate(&self, token: &str) -> Result<Option<Grant>, ServiceError> {
        if token.is_empty() {
            return Ok(Some(Grant::Anonymous));
        }
        let now = ferry_core::time::unix_now();
        let file = self.current()?;
        let Some(t) = file.check(token, now) else { return Ok(None) };
        self.note_use(&t.id, now, &file);
        Ok(Some(Grant::Token(t.id.clone())))
    }
    fn can_read(&self, grant: &Grant, repo: &str) -> Result<bool, ServiceError> {
        Ok(self.current()?.can_read(grant, repo))
    }
    fn can_write(&self, grant: &Grant, repo: &str) -> Result<bool, ServiceError> {
        Ok(self.current()?.can_write(grant, repo))
    }
    fn can_administer(&self, grant: &Grant, repo: &str) -> Result<bool, ServiceError> {
        Ok(self.current()?.allows(grant, Scope::Admin, repo))
    }
    fn is_public(&self, repo: &str) -> Result<bool, ServiceError> {
        Ok(self.current()?.is_public(repo))
    }
    fn is_valid(&self, grant: &Grant) -> Result<bool, ServiceError> {
        Ok(match grant {
            Grant::Token(_) => self.current()?.token(grant).is_some(),
            Grant::Anonymous | Grant::Trusted => true,
        })
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
        assert!(a.check(&w, 0).is_some());
        assert!(a.check(&format!("{}x", &w[..w.len() - 1]), 0).is_none());
        assert!(a.check("fy_nope_nope", 0).is_none());
        let gw = Grant::Token(a.check(&w, 0).unwrap().id.clone());
        let gr = Grant::Token(a.check(&r, 0).unwrap().id.clone());
        assert!(a.can_write(&gw, "org/x") && !a.can_write(&gw, "other/x"));
        assert!(a.can_read(&gr, "org/llama") && !a.can_write(&gr, "org/llama") && !a.can_read(&gr, "org/other"));
        assert!(!a.tokens.iter().any(|t| w.contains(&t.hash)), "secret stored in clear");
        assert!(!a.allows(&gw, Scope::Admin, "org/x"));
    }

    #[test]
    fn tokens_expire_have_unique_names_and_admin_covers_write() {
        let mut a = AccessFile::default();
        let spec = |name: &str, expires| TokenSpec { name: name.into(), expires, ..TokenSpec::new("org/*", Scope::Admin) };
        let t = a.create(spec("ci", Some(100)), 10).unwrap();
        assert!(a.check(&t, 99).is_some() && a.check(&t, 100).is_none());
        assert!(a.create(spec("ci", None), 10).is_err(), "a second token named ci");
        assert!(a.create(spec("late", Some(5)), 10).is_err(), "expired at birth");
        assert!(a.create(spec("no spaces", None), 10).is_err());
        let forever = a.create(spec("", None), 10).unwrap();
        let g = Grant::Token(a.check(&forever, 10).unwrap().id.clone());
        assert!(a.allows(&g, Scope::Admin, "org/x") && a.can_write(&g, "org/x") && a.can_read(&g, "org/x") && !a.can_read(&g, "x/y"));
        let id = a.revoke("ci").unwrap();
        assert!(a.tokens.iter().all(|t| t.id != id) && a.revoke("ci").is_err());
    }
}
