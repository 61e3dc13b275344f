//! `ferry forget REPO --keep-...`: retention, locally or on a hub. The
//! revisions no rule keeps are forgotten: their records stay (the history
//! is whole), their files no longer keep data from gc, which reclaims it.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use ferry_core::revision::Revision;
use ferry_core::Id;
use ferry_store::{Candidate, KeepRules};
use serde::Serialize;

use crate::net::{on_hub, NetArgs};
use crate::output::Report;

#[derive(clap::Args)]
// With no rule every revision but the heads would go: one is required.
#[command(group(clap::ArgGroup::new("rules").required(true).multiple(true)
    .args(["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_within"])))]
pub struct Args {
    /// Repository, as owner/name.
    repo: String,
    /// Keep the newest N revisions of each branch and tag.
    #[arg(long, value_name = "N")]
    keep_last: Option<usize>,
    /// Keep the newest revision of each of the last N hours that have one.
    #[arg(long, value_name = "N")]
    keep_hourly: Option<usize>,
    /// Keep the newest revision of each of the last N days that have one.
    #[arg(long, value_name = "N")]
    keep_daily: Option<usize>,
    /// Keep the newest revision of each of the last N weeks that have one.
    #[arg(long, value_name = "N")]
    keep_weekly: Option<usize>,
    /// Keep the newest revision of each of the last N months that have one.
    #[arg(long, value_name = "N")]
    keep_monthly: Option<usize>,
    /// Keep every revision newer than this, e.g. 30d, 12h.
    #[arg(long, value_name = "SPAN", value_parser = humantime::parse_duration)]
    keep_within: Option<std::time::Duration>,
    /// Say what would be forgotten, and forget nothing.
    #[arg(long)]
    dry_run: bool,
    /// Forget on this hub (a remote's name or host:port; an admin token) instead of the local store.
    #[arg(long)]
    hub: Option<String>,
    #[command(flatten)]
    net: NetArgs,
}

impl Args {
    fn rules(&self) -> KeepRules {
        KeepRules {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            within: self.keep_within.map(|d| d.as_secs().min(i64::MAX as u64) as i64),
        }
    }
}

/// A revision forgotten (or that would be).
#[derive(Serialize)]
pub struct Forgotten {
    pub revision: String,
    pub time: i64,
    pub message: String,
}

#[derive(Serialize)]
pub struct ForgetReport {
    pub repo: String,
    pub dry_run: bool,
    /// Revisions kept (every branch and tag head among them).
    pub kept: usize,
    pub forgotten: Vec<Forgotten>,
}

impl Report for ForgetReport {
    fn text(&self) -> Vec<String> {
        let verb = if self.dry_run { "would forget" } else { "forgot" };
        let mut lines = vec![format!("{verb} {} revisions of {}, kept {}", self.forgotten.len(), self.repo, self.kept)];
        lines.extend(self.forgotten.iter().map(|f| format!("  {}  {}  {}", &f.revision[..12], super::log::human_time(f.time), f.message)));
        if !self.dry_run && !self.forgotten.is_empty() {
            lines.push("their data is reclaimed by the next gc".into());
        }
        lines
    }
}

pub fn run(store: &Path, args: Args) -> Result<ForgetReport> {
    ferry_core::names::check_repo_name(&args.repo)?;
    let rules = args.rules();
    let now = super::unix_now();
    let (histories, revisions, forgotten) = match &args.hub {
        Some(hub) => on_hub(hub, &args.net, async |client| {
            let (histories, revisions) = ferry_transfer::retention_candidates(client, &args.repo).await?;
            let gone = to_forget(&histories, &rules, now);
            if !args.dry_run {
                ferry_transfer::forget(client, &args.repo, &gone).await?;
            }
            Ok((histories, revisions, gone))
        })?,
        None => {
            let store = super::init::open(store)?;
            let histories = store.retention_candidates(&args.repo)?;
            let gone = to_forget(&histories, &rules, now);
            if !args.dry_run {
                store.mark_forgotten(&args.repo, &gone)?;
            }
            let revisions: HashMap<Id, Revision> = gone.iter().map(|id| Ok((*id, store.revision(id)?))).collect::<Result<_>>()?;
            (histories, revisions, gone)
        }
    };
    let candidates: std::collections::HashSet<Id> = histories.iter().flatten().map(|c| c.id).collect();
    let mut forgotten: Vec<Forgotten> =
        forgotten.iter().map(|id| Forgotten { revision: id.to_hex(), time: revisions[id].time, message: revisions[id].message.clone() }).collect();
    forgotten.sort_by_key(|f| std::cmp::Reverse(f.time));
    Ok(ForgetReport { kept: candidates.len() - forgotten.len(), repo: args.repo, dry_run: args.dry_run, forgotten })
}

/// The candidates no rule keeps.
fn to_forget(histories: &[Vec<Candidate>], rules: &KeepRules, now: i64) -> Vec<Id> {
    let kept = ferry_store::keep(histories, rules, now);
    let mut gone: Vec<Id> = histories.iter().flatten().map(|c| c.id).filter(|id| !kept.contains(id)).collect();
    gone.sort_unstable();
    gone.dedup();
    gone
}
