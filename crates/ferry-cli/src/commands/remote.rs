//! `ferry remote add|list|remove`, `ferry login` and `ferry logout`: named
//! hubs in the configuration file, and their saved tokens.

use anyhow::{bail, Result};
use serde::Serialize;

use crate::config::{self, Config, Remote};
use crate::net::{runtime, NetArgs};
use crate::output::Report;

#[derive(clap::Subcommand)]
pub enum RemoteAction {
    /// Name a hub, so that commands take the name instead of host:port.
    Add {
        /// The name (letters, digits, '-', '_', '.').
        name: String,
        /// The hub (host:port).
        hub: String,
        /// Trust this hub through these CA certificates (PEM) instead of pinning.
        #[arg(long)]
        ca: Option<std::path::PathBuf>,
    },
    /// List the named hubs.
    List,
    /// Forget a named hub and its saved token.
    Remove {
        /// The name.
        name: String,
    },
}

#[derive(clap::Args)]
pub struct LoginArgs {
    /// A remote's name, or a hub's host:port (then a remote named after the host is added).
    remote: String,
    #[command(flatten)]
    net: NetArgs,
}

#[derive(clap::Args)]
pub struct LogoutArgs {
    /// The remote's name.
    remote: String,
}

#[derive(Serialize)]
pub struct RemoteEntry {
    pub name: String,
    pub hub: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    pub logged_in: bool,
}

#[derive(Serialize)]
pub struct Remotes(Vec<RemoteEntry>);

impl Report for Remotes {
    fn text(&self) -> Vec<String> {
        self.0.iter().map(|r| format!("{}\t{}{}", r.name, r.hub, if r.logged_in { "\t(logged in)" } else { "" })).collect()
    }
}

#[derive(Serialize)]
pub struct RemoteChanged {
    pub name: String,
    pub hub: String,
    pub action: &'static str,
}

impl Report for RemoteChanged {
    fn text(&self) -> Vec<String> {
        vec![format!("{} remote {} ({})", self.action, self.name, self.hub)]
    }
}

pub fn run(action: RemoteAction) -> Result<Remotes> {
    let path = config::path();
    let mut config = Config::load(&path)?;
    match action {
        RemoteAction::Add { name, hub, ca } => {
            config::check_name(&name)?;
            if !hub.contains(':') {
                bail!("{hub:?} is not host:port");
            }
            config.remotes.insert(name, Remote { hub, ca });
            config.save(&path)?;
        }
        RemoteAction::Remove { name } => {
            if config.remotes.remove(&name).is_none() {
                bail!("there is no remote {name:?} in {}", path.display());
            }
            config.save(&path)?;
            let _ = std::fs::remove_file(config::token_path(&path, &name));
        }
        RemoteAction::List => {}
    }
    Ok(Remotes(
        config
            .remotes
            .into_iter()
            .map(|(name, r)| RemoteEntry { logged_in: config::token_path(&path, &name).exists(), name, hub: r.hub, ca: r.ca.map(|c| c.display().to_string()) })
            .collect(),
    ))
}

/// Checks a token against the hub (it must be accepted in Hello), then
/// saves it for the remote; the token comes from --token or FERRY_TOKEN,
/// else from the first line of standard input.
pub fn login(args: LoginArgs) -> Result<RemoteChanged> {
    let path = config::path();
    let mut config = Config::load(&path)?;
    let name = match config.remote_for(&args.remote) {
        Some((name, _)) => name.to_owned(),
        None => {
            let Some((host, _port)) = args.remote.rsplit_once(':') else {
                bail!("{:?} is neither a remote (ferry remote list) nor host:port", args.remote);
            };
            let name = host.trim_start_matches('[').trim_end_matches(']').replace(':', "-");
            config::check_name(&name)?;
            config.remotes.insert(name.clone(), Remote { hub: args.remote.clone(), ca: None });
            config.save(&path)?;
            name
        }
    };
    let token = match args.net.token.clone() {
        Some(t) => t,
        None => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim().to_owned()
        }
    };
    if token.is_empty() {
        bail!("no token given (pass --token, set FERRY_TOKEN, or type it on standard input)");
    }
    let mut opts = args.net.options(&name)?;
    opts.token = Some(token.clone());
    runtime()?.block_on(async {
        let client = crate::net::connect(&opts).await?;
        client.close().await;
        Ok::<_, ferry_net::NetError>(())
    })?;
    config::save_token(&path, &name, &token)?;
    Ok(RemoteChanged { hub: opts.hub, name, action: "logged in to" })
}

pub fn logout(args: LogoutArgs) -> Result<RemoteChanged> {
    let path = config::path();
    let config = Config::load(&path)?;
    let Some((name, remote)) = config.remote_for(&args.remote) else {
        bail!("there is no remote {:?} in {}", args.remote, path.display());
    };
    match std::fs::remove_file(config::token_path(&path, name)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    Ok(RemoteChanged { name: name.to_owned(), hub: remote.hub.clone(), action: "logged out of" })
}
