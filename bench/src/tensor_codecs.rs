//! What the tensor codecs make of one version of a model, against the
//! version before it: each chunk encoded as ferry's ingest cuts it, with
//! zstd alone (codec 1), as byte planes (codec 2), and as a delta against
//! the same piece of the same tensor in the previous version (codec 3, when
//! it is smaller than the byte planes), next to the order-0 entropy of the
//! delta's byte planes (the floor a per-plane entropy coder approaches).
//!
//!   ferry-tensor-codecs [--prev DIR] DIR     # one JSON line on stdout
//!
//! A tensor's base is the tensor of the same name, length and element
//! width anywhere in --prev (any shard), as a store would choose it.
//! Timings are one core's: encoding with the chosen codec, and decoding.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use ferry_core::chunking::chunk_all_with_widths;
use ferry_core::codec::{self, Encoder, DEFAULT_ZSTD_LEVEL};
use ferry_core::safetensors::{Layout, LAYOUT_PREFIX};
use ferry_core::Id;

#[derive(Parser)]
#[command(about = "Bytes the tensor codecs store for one model version (JSON line)")]
struct Args {
    /// The previous version's directory: the bases of deltas.
    #[arg(long)]
    prev: Option<PathBuf>,
    /// The version to encode.
    dir: PathBuf,
}

/// A directory's safetensors files, read whole, with their layouts.
struct Version {
    files: Vec<(Vec<u8>, Option<Layout>)>,
}

impl Version {
    fn read(dir: &Path) -> Result<Version> {
        let mut paths: Vec<PathBuf> =
            std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.map(|e| e.map(|e| e.path())).collect::<std::io::Result<_>>()?;
        paths.sort();
        let mut files = Vec::new();
        for p in paths.iter().filter(|p| p.is_file()) {
            let data = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let layout = Layout::parse(&data[..data.len().min(LAYOUT_PREFIX)]);
            files.push((data, layout));
        }
        Ok(Version { files })
    }

    /// Each tensor's bytes by name (with its element width).
    fn tensors(&self) -> HashMap<&str, (&[u8], u8)> {
        let mut out = HashMap::new();
        for (data, layout) in &self.files {
            for t in layout.iter().flat_map(|l| &l.tensors) {
                if let Some(bytes) = data.get(t.start as usize..(t.start + t.len) as usize) {
                    out.insert(t.name.as_str(), (bytes, t.width));
                }
            }
        }
        out
    }
}

/// Order-0 entropy of `bytes`, in bytes.
fn entropy(bytes: &[u8]) -> f64 {
    let mut counts = [0u64; 256];
    for &b in bytes {
        counts[b as usize] += 1;
    }
    let n = bytes.len() as f64;
    counts.iter().filter(|&&c| c > 0).map(|&c| c as f64 * (n / c as f64).log2()).sum::<f64>() / 8.0
}

/// The floor for a delta piece: the entropy of each byte plane of its
/// delta elements, plus the tail stored as it is.
fn delta_floor(new: &[u8], base: &[u8], width: u8) -> f64 {
    let planes = codec::delta_byte_planes(new, base, width);
    let n = planes.len() / width as usize;
    planes.chunks(n.max(1)).map(entropy).sum::<f64>() + (new.len() - planes.len()) as f64
}

fn main() -> Result<()> {
    let args = Args::parse();
    let prev = args.prev.as_deref().map(Version::read).transpose()?;
    let next = Version::read(&args.dir)?;
    let bases = prev.as_ref().map(|p| p.tensors()).unwrap_or_default();
    let mut enc = Encoder::new(DEFAULT_ZSTD_LEVEL);
    let (mut raw, mut zstd, mut planes, mut chosen, mut floor, mut delta_bytes, mut deltas) = (0u64, 0u64, 0u64, 0u64, 0f64, 0u64, 0u64);
    let (mut enc_time, mut dec_time) = (Duration::ZERO, Duration::ZERO);
    for (data, layout) in &next.files {
        let tensors = layout.as_ref().map(|l| &l.tensors[..]).unwrap_or_default();
        for (off, len, width) in chunk_all_with_widths(data) {
            let chunk = &data[off..off + len];
            raw += len as u64;
            zstd += enc.encode(chunk).len() as u64;
            let t0 = Instant::now();
            let alone = enc.encode_hinted(chunk, width);
            // The same piece of the same tensor in the previous version.
            let base = tensors.iter().find(|t| t.start <= off as u64 && (off + len) as u64 <= t.start + t.len).and_then(|t| {
                let (bytes, w) = bases.get(t.name.as_str())?;
                let rel = off - t.start as usize;
                (bytes.len() as u64 == t.len && *w == width).then(|| &bytes[rel..rel + len])
            });
            let delta = base.and_then(|b| enc.encode_delta(chunk, width, &Id::of_chunk(b), b)).filter(|d| d.len() < alone.len());
            enc_time += t0.elapsed();
            planes += alone.len() as u64;
            let t1 = Instant::now();
            match (&delta, base) {
                (Some(d), Some(b)) => {
                    assert_eq!(codec::decode_delta(d, b)?, chunk, "a delta round-trips");
                    chosen += d.len() as u64;
                    delta_bytes += len as u64;
                    deltas += 1;
                }
                _ => {
                    assert_eq!(codec::decode(&alone)?, chunk, "a record round-trips");
                    chosen += alone.len() as u64;
                }
            }
            dec_time += t1.elapsed();
            floor += match base {
                Some(b) if matches!(width, 2 | 4 | 8) => delta_floor(chunk, b, width).min(alone.len() as f64),
                _ => alone.len() as f64,
            };
        }
    }
    let pct = |x: f64| (1000.0 * x / raw.max(1) as f64).round() / 10.0;
    let mbs = |d: Duration| (raw as f64 / 1e6 / d.as_secs_f64().max(1e-9)).round();
    let line = serde_json::json!({
        "bytes": raw,
        "zstd_pct": pct(zstd as f64),
        "planes_pct": pct(planes as f64),
        "chosen_pct": pct(chosen as f64),
        "floor_pct": pct(floor),
        "delta_chunks": deltas,
        "delta_raw_pct": pct(delta_bytes as f64),
        "encode_mb_s_one_core": mbs(enc_time),
        "decode_mb_s_one_core": mbs(dec_time),
    });
    println!("{line}");
    Ok(())
}
