//! The configuration file (`~/.config/ferry/config.toml`, or `--config` /
//! FERRY_CONFIG): the author commits record, named remotes, and `ferry
//! serve`'s settings; beside it one token file per remote (`tokens/NAME`,
//! mode 0600) written by `ferry login`.
//!
//! Precedence: a flag beats the environment (FERRY_TOKEN, ...), which beats
//! the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The configuration file, or a name in it, is unusable (exit code 2).
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// What the file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The author `commit` and `upload` record when neither --author nor
    /// FERRY_AUTHOR says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Hubs by name.
    #[serde(default)]
    pub remotes: BTreeMap<String, Remote>,
    /// `ferry serve`'s settings: each key a flag's long name (`listen`,
    /// `http`, `gc-every`, `store`, ...), each value what the flag takes
    /// (a list for a flag given more than once, true for a switch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve: Option<toml::Table>,
}

/// One named hub.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remote {
    /// host:port.
    pub hub: String,
    /// Trust hubs whose certificate chains to these CA certificates (PEM)
    /// instead of pinning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Sets where the configuration file is (`--config` or FERRY_CONFIG), once,
/// before any command runs.
pub fn set_path(path: Option<PathBuf>) {
    let _ = PATH.set(path.unwrap_or_else(default_path));
}

/// The per-user configuration file.
fn default_path() -> PathBuf {
    dirs::config_dir().unwrap_or_else(|| PathBuf::from(".")).join("ferry").join("config.toml")
}

/// Where the configuration file is: `--config`, FERRY_CONFIG, else the
/// per-user configuration directory. The binary decides; the libraries
/// read no environment.
pub fn path() -> PathBuf {
    PATH.get_or_init(|| std::env::var_os("FERRY_CONFIG").map_or_else(default_path, PathBuf::from)).clone()
}

/// The flags `[serve]` adds to `ferry serve`'s command line. `serve` is
/// the subcommand's definition; `given(id)` says whether the command line
/// or the environment already set the argument `id` (they win over the
/// file).
pub fn serve_flags(path: &Path, table: &toml::Table, serve: &clap::Command, given: &dyn Fn(&str) -> bool) -> Result<Vec<String>> {
    let bad = |why: String| ConfigError(format!("{}: [serve] {why}", path.display()));
    let mut out = Vec::new();
    for (key, value) in table {
        let arg = serve.get_arguments().find(|a| a.get_long() == Some(key.as_str()));
        let (id, takes_values) = match (arg, key.as_str()) {
            (Some(a), _) => (a.get_id().as_str().to_owned(), a.get_action().takes_values()),
            // Global: the hub's store is part of its settings too.
            (None, "store") => ("store".to_owned(), true),
            (None, _) => return Err(bad(format!("{key:?} is not a flag of ferry serve (see ferry serve --help)")).into()),
        };
        if given(&id) {
            continue;
        }
        let values = match value {
            toml::Value::Array(items) => items.iter().collect(),
            one => vec![one],
        };
        for v in values {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) if !takes_values => {
                    if *b {
                        out.push(format!("--{key}"));
                    }
                    continue;
                }
                other => return Err(bad(format!("{key}: {other} is not a value --{key} takes")).into()),
            };
            if !takes_values {
                return Err(bad(format!("{key} is a switch: give it true or false")).into());
            }
            out.push(format!("--{key}"));
            out.push(text);
        }
    }
    Ok(out)
}

/// A remote's name: letters, digits, `-`, `_` and `.`, so it can never be
/// taken for host:port.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(ConfigError(format!("{name:?} is not a remote name (letters, digits, '-', '_' and '.'; at most 64)")).into());
    }
    Ok(())
}

impl Config {
    /// The file at `path`, or an empty configuration if there is none. A
    /// file that does not parse is an error naming the line.
    pub fn load(path: &Path) -> Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            // As git does with a configuration it may not read (another
            // user's home): say so and go on without it.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                crate::output::stderr_line(&format!("ferry: warning: cannot read {}: {e}; going on without it", path.display()));
                return Ok(Config::default());
            }
            Err(e) => return Err(e).with_context(|| path.display().to_string()),
        };
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.to_string().trim_end())))?;
        for (name, remote) in &config.remotes {
            check_name(name).with_context(|| path.display().to_string())?;
            if remote.hub.is_empty() {
                return Err(ConfigError(format!("{}: remote {name:?} has an empty hub", path.display())).into());
            }
        }
        Ok(config)
    }

    /// Writes the file (atomically: a crash leaves the old one or the new).
    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, toml::to_string(self)?).with_context(|| tmp.display().to_string())?;
        std::fs::rename(&tmp, path).with_context(|| path.display().to_string())
    }

    /// The remote `hub` names: itself if it is a remote's name, else the
    /// remote whose address it is (None: an address no remote has).
    pub fn remote_for<'a>(&'a self, hub: &str) -> Option<(&'a str, &'a Remote)> {
        if let Some((name, r)) = self.remotes.get_key_value(hub) {
            return Some((name, r));
        }
        self.remotes.iter().find(|(_, r)| r.hub == hub).map(|(n, r)| (n.as_str(), r))
    }
}

/// The file holding remote `name`'s token, beside the configuration file.
pub fn token_path(config: &Path, name: &str) -> PathBuf {
    config.parent().unwrap_or(Path::new(".")).join("tokens").join(name)
}

/// The token saved for remote `name`, if any. A file others may read is
/// used, with a warning (as ssh warns of a private key).
pub fn saved_token(config: &Path, name: &str) -> Result<Option<String>> {
    let path = token_path(config, name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| path.display().to_string()),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).with_context(|| path.display().to_string())?.permissions().mode();
        if mode & 0o077 != 0 {
            crate::output::stderr_line(&format!("ferry: warning: {} is readable by others (mode {:o}); run chmod 600 on it", path.display(), mode & 0o777));
        }
    }
    Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty()))
}

/// Saves remote `name`'s token, readable by its owner only.
pub fn save_token(config: &Path, name: &str, token: &str) -> Result<PathBuf> {
    let path = token_path(config, name);
    let dir = path.parent().expect("a token path has a directory");
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp).with_context(|| tmp.display().to_string())?;
    std::io::Write::write_all(&mut f, format!("{token}\n").as_bytes()).with_context(|| tmp.display().to_string())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| path.display().to_string())?;
    Ok(path)
}
