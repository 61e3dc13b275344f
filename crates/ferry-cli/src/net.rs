//! What every command that talks to a hub shares: the connection flags,
//! the async runtime, and the flags' value parsers. Every connection to a
//! hub is made here.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use ferry_net::tls::Trust;
use ferry_net::{Client, ConnectOptions, NetError, TransportChoice};

use crate::output::note;

/// How to reach a hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    // QUIC first, falling back to TLS over TCP.
    Auto,
    Quic,
    Tcp,
}

#[derive(clap::Args)]
pub struct NetArgs {
    /// Access token (from `ferry token create` on the hub; default: the one `ferry login` saved for the remote).
    #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// auto tries QUIC first and falls back to TLS over TCP.
    #[arg(long, value_enum, default_value_t = Transport::Auto)]
    pub transport: Transport,
    /// Known-hubs file for pinning certificates (default ~/.config/ferry/known_hubs).
    #[arg(long, env = "FERRY_KNOWN_HUBS")]
    pub known_hubs: Option<PathBuf>,
    /// Trust hubs whose certificate chains to these CA certificates (PEM) instead of pinning.
    #[arg(long)]
    pub ca: Option<PathBuf>,
}

impl NetArgs {
    /// How to connect to `hub` (host:port, or a remote's name) with these
    /// flags; what they leave open comes from the remote's entry in the
    /// configuration file and its saved token.
    pub fn options(&self, hub: &str) -> Result<ConnectOptions> {
        let path = crate::config::path();
        let config = crate::config::Config::load(&path)?;
        let remote = config.remote_for(hub);
        let token = match (&self.token, remote) {
            (Some(t), _) => Some(t.clone()),
            (None, Some((name, _))) => crate::config::saved_token(&path, name)?,
            (None, None) => None,
        };
        let ca = self.ca.clone().or_else(|| remote.and_then(|r| r.1.ca.clone()));
        let hub = remote.map_or(hub, |r| r.1.hub.as_str());
        let trust = match (&ca, &self.known_hubs) {
            (Some(ca), _) => Trust::CaBundle(ca.clone()),
            (None, Some(f)) => Trust::KnownHubs(f.clone()),
            (None, None) => Trust::KnownHubs(default_known_hubs()),
        };
        let transport = match self.transport {
            Transport::Auto => TransportChoice::Auto,
            Transport::Quic => TransportChoice::Quic,
            Transport::Tcp => TransportChoice::Tcp,
        };
        Ok(ConnectOptions { hub: hub.into(), token, transport, trust })
    }
}

/// Connects to `hub` with these flags, runs `op` over the connection, and
/// closes it whatever `op` answered: a command that asks a hub for one
/// thing.
pub fn on_hub<T>(hub: &str, net: &NetArgs, op: impl AsyncFnOnce(&Client) -> Result<T>) -> Result<T> {
    runtime()?.block_on(async {
        let client = connect(&net.options(hub)?).await?;
        let done = op(&client).await;
        client.close().await;
        done
    })
}

/// Connects to a hub, telling the user when its certificate was pinned on
/// first use.
pub async fn connect(opts: &ConnectOptions) -> Result<Client, NetError> {
    let client = Client::connect(opts).await?;
    if let (Some(seen), Trust::KnownHubs(file)) = (client.pinned(), &opts.trust) {
        note(&format!("ferry: pinned {} with certificate {seen} in {}", opts.hub, file.display()));
    }
    Ok(client)
}

/// The known-hubs file when neither --known-hubs nor FERRY_KNOWN_HUBS
/// names one: the binary decides it, so the library reads no environment.
fn default_known_hubs() -> PathBuf {
    dirs::config_dir().unwrap_or_else(|| PathBuf::from(".")).join("ferry").join("known_hubs")
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// The repository patterns given, or every repository.
pub fn patterns(repos: Vec<String>) -> Vec<String> {
    if repos.is_empty() {
        vec!["*/*".into()]
    } else {
        repos
    }
}

/// `90s`, `30m`, `6h`, `500ms` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().map_err(|_| format!("{s:?} is not a duration like 90s, 30m or 6h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m, h or d)")),
    };
    if !(secs > 0.0 && secs < 1e9) {
        return Err(format!("{s:?} is not a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}
