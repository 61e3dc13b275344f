//! `ferry cat REPO@REV PATH [--range A..B] [--hub HOST:PORT]`: one file,
//! or a byte range of it, to stdout, from the local store or a hub.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use ferry_store::{RevisionSpec, Store};

use crate::net::{on_hub, NetArgs};

#[derive(clap::Args)]
pub struct Args {
    /// owner/name[@branch-or-revision] (on a hub: a branch or a full revision id).
    target: String,
    /// Path of the file inside the revision.
    path: String,
    /// Bytes START..END (END exclusive; either may be omitted).
    #[arg(long)]
    range: Option<String>,
    /// Read straight from this hub (host:port) instead of the local store.
    #[arg(long)]
    hub: Option<String>,
    #[command(flatten)]
    net: NetArgs,
}

/// `--range START..END`; an omitted end is the end of the file, known only
/// once the file's entry is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ByteRange {
    start: u64,
    end: Option<u64>,
}

impl ByteRange {
    fn parse(s: &str) -> Result<ByteRange> {
        let (a, b) = s.split_once("..").with_context(|| format!("--range {s:?} is not START..END"))?;
        let start = if a.is_empty() { 0 } else { a.parse().with_context(|| format!("--range start {a:?} is not a number"))? };
        let end = if b.is_empty() { None } else { Some(b.parse().with_context(|| format!("--range end {b:?} is not a number"))?) };
        Ok(ByteRange { start, end })
    }
}

pub fn run(store: &Path, args: Args) -> Result<ExitCode> {
    let range = args.range.as_deref().map(ByteRange::parse).transpose()?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match &args.hub {
        Some(hub) => from_hub(hub, &args, range, &mut out)?,
        None => from_store(&super::init::open(store)?, &args, range, &mut out)?,
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn from_store(store: &Store, args: &Args, range: Option<ByteRange>, out: &mut dyn Write) -> Result<()> {
    let (_, rev) = store.resolve(&RevisionSpec::parse(&args.target)?)?;
    let path = &args.path;
    let entry = rev.entry(path).with_context(|| format!("{} has no file {path:?}", args.target))?;
    let (a, b) = range.map_or((0, entry.size), |r| (r.start, r.end.unwrap_or(entry.size)));
    if a > b || b > entry.size {
        bail!(ferry_store::StoreError::BadRange { path: path.clone(), start: a, end: b, size: entry.size });
    }
    if a == 0 && b == entry.size {
        store.read_file(entry, out, &())?;
    } else {
        store.read_range(&entry.file_id, entry.size, a, b, out, &())?;
    }
    Ok(())
}

fn from_hub(hub: &str, args: &Args, range: Option<ByteRange>, out: &mut dyn Write) -> Result<()> {
    let spec = RevisionSpec::parse(&args.target)?;
    on_hub(hub, &args.net, async |client| {
        ferry_transfer::read_range(client, &spec.repo, &spec.rev, &args.path, range.map(|r| (r.start, r.end)), out).await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::ByteRange;

    #[test]
    fn ranges_parse_with_either_end_omitted() {
        assert_eq!(ByteRange::parse("8..4096").unwrap(), ByteRange { start: 8, end: Some(4096) });
        assert_eq!(ByteRange::parse("..10").unwrap(), ByteRange { start: 0, end: Some(10) });
        assert_eq!(ByteRange::parse("5..").unwrap(), ByteRange { start: 5, end: None });
        assert!(ByteRange::parse("5").is_err());
        assert!(ByteRange::parse("a..b").is_err());
    }
}
