//! Dedup found against per-chunk overhead, for FastCDC averages of 16, 32,
//! 64 and 128 KiB (min = avg/4, max = avg*4, as in ferry-core's chunking).
//! This measures only; ferry's sizes are fixed by its format.
//!
//!   cargo bench -p ferry-bench --bench chunk_sizes [-- --size-mib 512]
//!
//! Cases, on models made by ferry-gen: v1 → v2 (last quarter of the layers
//! fine-tuned); v1 → v1 with 8 bytes inserted in the safetensors header
//! (every tensor shifts by 8 bytes, as when a header gains a metadata key);
//! v1 → v1 with only its layernorm weights changed (2 KiB tensors scattered
//! every ~12 MiB: the case where small chunks pay off).

use std::collections::HashSet;
use std::process::Command;
use std::time::Instant;

use ferry_core::Id;

/// Metadata bytes per stored chunk, as measured on a 2 GiB store (see
/// BENCHMARKS.md): RocksDB keys and index entries, blob headers, tree leaves.
const META_PER_CHUNK: f64 = 300.0;

fn chunk_ids(data: &[u8], avg: u32) -> (Vec<(Id, usize)>, f64) {
    let t = Instant::now();
    let cuts: Vec<(usize, usize)> = fastcdc::v2020::FastCDC::new(data, avg / 4, avg, avg * 4).map(|c| (c.offset, c.length)).collect();
    let secs = t.elapsed().as_secs_f64();
    (cuts.iter().map(|&(o, l)| (Id::of_chunk(&data[o..o + l]), l)).collect(), secs)
}

/// Chunks and bytes of `new` not found among `old`'s chunks.
fn fresh(old: &[(Id, usize)], new: &[(Id, usize)]) -> (usize, usize) {
    let have: HashSet<Id> = old.iter().map(|c| c.0).collect();
    let mut seen = HashSet::new();
    new.iter().filter(|c| !have.contains(&c.0) && seen.insert(c.0)).fold((0, 0), |(n, b), c| (n + 1, b + c.1))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size_mib: u64 =
        args.iter().position(|a| a == "--size-mib").and_then(|i| args.get(i + 1)).map_or(512, |s| s.parse().expect("--size-mib takes a number"));
    let dir = tempfile::tempdir_in(std::env::var("FERRY_BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string())).unwrap();
    let gen = env!("CARGO_BIN_EXE_ferry-gen");
    let make = |name: &str, changed: &str| {
        let out = dir.path().join(name);
        let ok = Command::new(gen)
            .args(["model", "--size-mib", &size_mib.to_string(), "--seed", "1", "--changed-fraction", changed, "--out"])
            .arg(&out)
            .status()
            .unwrap()
            .success();
        assert!(ok, "ferry-gen failed");
        std::fs::read(out).unwrap()
    };
    let v1 = make("v1", "0");
    let v2 = make("v2", "0.25");
    let mut shifted = v1.clone();
    shifted.splice(100..100, *b"        ");
    let norms = {
        let hlen = u64::from_le_bytes(v1[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&v1[8..8 + hlen]).unwrap();
        let mut out = v1.clone();
        for (name, t) in header.as_object().unwrap() {
            if name.contains("layernorm") {
                let offs = &t["data_offsets"];
                let (a, b) = (offs[0].as_u64().unwrap() as usize, offs[1].as_u64().unwrap() as usize);
                for x in &mut out[8 + hlen + a..8 + hlen + b] {
                    *x = x.wrapping_add(1);
                }
            }
        }
        out
    };

    println!("model: {} bytes; v2 changes the last 25% of layers; shift = 8 bytes inserted at offset 100", v1.len());
    println!(
        "{:>8} {:>9} {:>10} {:>10} {:>12} {:>10} {:>12} {:>10} {:>11} {:>10} {:>10}",
        "avg KiB", "chunks", "cut GB/s", "v2 chunks", "v2 new MiB", "shift new", "shift MiB", "norms new", "norms MiB", "meta MiB", "meta %"
    );
    for avg_kib in [16u32, 32, 64, 128] {
        let avg = avg_kib * 1024;
        let (c1, secs) = chunk_ids(&v1, avg);
        let (c2, _) = chunk_ids(&v2, avg);
        let (cs, _) = chunk_ids(&shifted, avg);
        let (n2, b2) = fresh(&c1, &c2);
        let (ns, bs) = fresh(&c1, &cs);
        let (cn, _) = chunk_ids(&norms, avg);
        let (nn, bn) = fresh(&c1, &cn);
        let meta = c1.len() as f64 * META_PER_CHUNK;
        println!(
            "{:>8} {:>9} {:>10.2} {:>10} {:>12.1} {:>10} {:>12.3} {:>10} {:>11.1} {:>10.2} {:>9.2}%",
            avg_kib,
            c1.len(),
            v1.len() as f64 / secs / 1e9,
            n2,
            b2 as f64 / 1048576.0,
            ns,
            bs as f64 / 1048576.0,
            nn,
            bn as f64 / 1048576.0,
            meta / 1048576.0,
            meta / v1.len() as f64 * 100.0
        );
        println!(
            "{{\"bench\":\"chunk_sizes\",\"avg_kib\":{avg_kib},\"bytes\":{},\"chunks\":{},\"cut_gb_per_s\":{:.3},\"v2_new_chunks\":{n2},\"v2_new_bytes\":{b2},\"shift_new_chunks\":{ns},\"shift_new_bytes\":{bs},\"norms_new_chunks\":{nn},\"norms_new_bytes\":{bn},\"meta_bytes_est\":{meta:.0}}}",
            v1.len(),
            c1.len(),
            v1.len() as f64 / secs / 1e9
        );
    }
}
