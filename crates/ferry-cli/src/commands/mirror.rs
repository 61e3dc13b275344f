//! `ferry mirror`: the branches of one hub's repositories copied to another.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use ferry_net::Client;
use ferry_transfer::mirror::{mirror_once, MirrorOptions, MirrorReport, MirrorState};
use serde::Serialize;

use crate::net::{connect, parse_duration, patterns, runtime, NetArgs};
use crate::output::{emit, finish, stderr_line, Report};
use crate::progress;

#[derive(clap::Args)]
pub struct Args {
    /// The hub to copy from (host:port).
    source: String,
    /// The hub to copy to (host:port).
    destination: String,
    /// Only repositories matching this glob (repeatable; default every one the source token reads).
    #[arg(long = "repo")]
    repos: Vec<String>,
    /// Keep following the source until stopped: each pass waits (up to
    /// --interval) for the source to change.
    #[arg(long)]
    watch: bool,
    /// With --watch: the longest a pass waits for a change on the source,
    /// and the wait before retrying a failed pass (e.g. 10s, 5m).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    interval: Duration,
    /// Token for the source hub (read scope; default --token).
    #[arg(long, env = "FERRY_FROM_TOKEN", hide_env_values = true)]
    from_token: Option<String>,
    /// Token for the destination hub (write scope; default --token).
    #[arg(long, env = "FERRY_TO_TOKEN", hide_env_values = true)]
    to_token: Option<String>,
    #[command(flatten)]
    net: NetArgs,
}

/// Frame bytes one connection sent and received.
#[derive(Serialize)]
pub struct WireBytes {
    pub sent: u64,
    pub received: u64,
}

/// A mirror pass, with what it cost on the wire and how long it took.
#[derive(Serialize)]
pub struct Mirrored {
    #[serde(flatten)]
    pub report: MirrorReport,
    pub source_wire_bytes: WireBytes,
    pub destination_wire_bytes: WireBytes,
    /// All of the above.
    pub wire_bytes: u64,
    /// The part of `wire_bytes` that was not chunk records.
    pub negotiation_bytes: u64,
    pub seconds: f64,
}

impl Mirrored {
    fn new(report: MirrorReport, w: Wire, seconds: f64) -> Mirrored {
        Mirrored {
            report,
            source_wire_bytes: WireBytes { sent: w.from.0, received: w.from.1 },
            destination_wire_bytes: WireBytes { sent: w.to.0, received: w.to.1 },
            wire_bytes: w.total(),
            negotiation_bytes: w.total().saturating_sub(w.data),
            seconds,
        }
    }
}

impl Report for Mirrored {
    fn text(&self) -> Vec<String> {
        vec![summary(&self.report, Some((self.negotiation_bytes, self.wire_bytes)), self.seconds)]
    }

    fn status(&self) -> Result<ExitCode> {
        if !self.report.complete() {
            return Err(anyhow!("{} branches could not be mirrored (see above); nothing was overwritten", self.report.conflicts + self.report.refused));
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// A `--watch` pass that failed; the next one retries.
#[derive(Serialize)]
pub struct PassFailed {
    pub error: String,
}

impl Report for PassFailed {
    fn text(&self) -> Vec<String> {
        vec![format!("mirror pass failed: {}; retrying", self.error)]
    }
}

/// A mirror report in words. `wire`: (negotiation bytes, all wire bytes), where known.
pub fn summary(r: &MirrorReport, wire: Option<(u64, u64)>, secs: f64) -> String {
    let mut s = format!(
        "mirrored {} repositories: {} branches updated ({} revisions, {} chunks, {} raw, {} on the wire), {} up to date",
        r.repositories,
        r.branches_updated,
        r.revisions,
        r.chunks_moved,
        progress::bytes(r.raw_bytes_moved),
        progress::bytes(r.chunk_bytes_moved),
        r.branches_up_to_date
    );
    if r.conflicts + r.refused > 0 {
        s.push_str(&format!(", {} conflicts, {} refused", r.conflicts, r.refused));
    }
    if let Some((negotiation, total)) = wire {
        s.push_str(&format!("; {} on the wire, {} of it negotiation, in {secs:.1}s", progress::bytes(total), progress::bytes(negotiation)));
    }
    for b in &r.changed {
        match &b.detail {
            Some(d) => s.push_str(&format!("\n  {}@{}: {}: {d}", b.repo, b.branch, b.status)),
            None => s.push_str(&format!("\n  {}@{}: {} ({} revisions, {} chunks)", b.repo, b.branch, b.status, b.revisions, b.chunks_moved)),
        }
    }
    s
}

/// Wire bytes in each direction of both connections, and how many of them
/// were chunk records (data, as opposed to negotiation and framing).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Wire {
    from: (u64, u64),
    to: (u64, u64),
    data: u64,
}

impl Wire {
    fn of(a: &Client, b: &Client) -> Wire {
        Wire { from: a.wire_bytes(), to: b.wire_bytes(), data: a.chunk_bytes() + b.chunk_bytes() }
    }
    fn since(self, before: Wire) -> Wire {
        let d = |x: u64, y: u64| x.saturating_sub(y);
        Wire {
            from: (d(self.from.0, before.from.0), d(self.from.1, before.from.1)),
            to: (d(self.to.0, before.to.0), d(self.to.1, before.to.1)),
            data: d(self.data, before.data),
        }
    }
    fn total(&self) -> u64 {
        self.from.0 + self.from.1 + self.to.0 + self.to.1
    }
}

pub fn run(args: Args, json: bool) -> Result<ExitCode> {
    let mut from = args.net.options(&args.source)?;
    let mut to = args.net.options(&args.destination)?;
    from.token = args.from_token.or(from.token);
    to.token = args.to_token.or(to.token);
    let opts = MirrorOptions { patterns: patterns(args.repos), limits: Default::default() };
    let watch = args.watch.then_some(args.interval);
    runtime()?.block_on(async {
        let connect = async || -> Result<(Client, Client), ferry_transfer::Error> {
            let (a, b) = tokio::join!(connect(&from), connect(&to));
            Ok((a?, b?))
        };
        let bar = progress::Transfer::new(json);
        if let Some(interval) = watch {
            let mut last = Wire::default();
            let started = Instant::now();
            ferry_transfer::mirror::watch(connect, &opts, interval, &bar, |res, ends| {
                let Some((a, b)) = ends else {
                    if let Err(e) = res {
                        stderr_line(&format!("ferry: mirror: {e}; retrying in {}s", interval.as_secs()));
                    }
                    return;
                };
                // Per pass: the bytes since the previous pass on these
                // connections (new connections start from zero).
                let now = Wire::of(a, b);
                let pass = if now >= last { now.since(last) } else { now };
                last = now;
                match res {
                    Ok(r) if r.changed.is_empty() => {}
                    Ok(r) => emit(json, &Mirrored::new(r.clone(), pass, started.elapsed().as_secs_f64())),
                    Err(e) => {
                        last = Wire::default();
                        emit(json, &PassFailed { error: e.to_string() });
                    }
                }
            })
            .await;
            unreachable!("watching ends only when the process does");
        }
        let started = Instant::now();
        let (a, b) = connect().await?;
        let r = mirror_once(&a, &b, &opts, &mut MirrorState::default(), Duration::ZERO, &bar).await;
        tokio::join!(a.close(), b.close());
        bar.finish();
        finish(json, Mirrored::new(r?, Wire::of(&a, &b), started.elapsed().as_secs_f64()))
    })
}
