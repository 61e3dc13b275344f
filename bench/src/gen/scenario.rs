//! Benchmark scenarios: the versions a hub would receive, written as
//! directories `v0`, `v1`, … with the ground truth of each version.
//!
//! Ground truth (`changed_bytes`) is the bytes of a version that really
//! differ from the version before it (for `v0`: all of its bytes):
//! - tensor data: per tensor (by name), the bytes that differ from the same
//!   byte of the same tensor in the previous version, wherever either
//!   version stores it (a tensor that only moved changes nothing);
//! - everything else (each safetensors file's 8-byte length and JSON
//!   header, other files): for a file whose name the previous version
//!   has, the length bytes that differ plus the bytes between the longest
//!   common prefix and suffix of the two headers (one contiguous edit); for
//!   a file under a new name, all of them, unless the previous version has
//!   a file with a byte-identical header (a rename changes nothing).
//!
//! The dataset scenario has its own rows-based definition (`dataset.rs`).
//! `changed_tensor_bytes` is the size of the tensors with at least one
//! changed byte: what a tool that deduplicates whole tensors would store.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use anyhow::{ensure, Context, Result};
use clap::ValueEnum;
use serde_json::{json, Map, Value};

use crate::weights::{self, Dims, Rng, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// v1: the identical file under another name.
    Rename,
    /// v1: the last quarter of the layers fine-tuned, the rest byte-identical.
    Partial,
    /// v1: a metadata key added to the header; every tensor moves by 16 bytes.
    Header,
    /// v1: every weight of every tensor nudged (no byte-identical tensor left).
    Full,
    /// v1: a low-rank adapter merged into the attention projections only.
    Adapter,
    /// v0: a JSONL dataset; v1: rows appended and a few edited in the middle.
    Dataset,
    /// v0: two shards; v1: the same tensors in three shards, in another order.
    Reshard,
    /// v0…v9: checkpoints of a training run, each one step from the last.
    Checkpoints,
    /// v1: every tensor takes a tiny step; bf16 rounding hides most of it.
    SmallStep,
}

impl Scenario {
    pub fn name(self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default()
    }
}

/// How a version's tensor values follow from the previous version's (for
/// v0, from the base weights).
#[derive(Clone, Copy)]
pub enum Step {
    Same,
    /// Fine-tune the layers from this one on.
    FineTuneFrom(u64),
    FineTuneAll,
    /// A merged low-rank adapter on the attention projections.
    Adapter,
    /// One training step, from the previous version's values.
    Train,
    /// One tiny step ([`weights::SMALL_STEP`]) of every value.
    Nudge,
}

pub enum FileSpec {
    /// A safetensors file holding these tensors, in this order.
    SafeTensors {
        name: String,
        order: Vec<usize>,
        metadata: Map<String, Value>,
    },
    Raw {
        name: String,
        bytes: Vec<u8>,
    },
}

impl FileSpec {
    fn name(&self) -> &str {
        match self {
            FileSpec::SafeTensors { name, .. } | FileSpec::Raw { name, .. } => name,
        }
    }
}

pub struct Version {
    pub files: Vec<FileSpec>,
    pub step: Step,
}

/// Ground truth of one written version.
#[derive(Debug, Default, Clone)]
pub struct Truth {
    pub files: u64,
    pub bytes: u64,
    pub changed_bytes: u64,
    pub changed_tensor_bytes: u64,
    pub changed_tensors: u64,
}

const SINGLE: &str = "model.safetensors";
/// Stream tags, so that no two purposes share random numbers.
const TAG_ADAPTER: u64 = 0xADA9;
const TAG_TRAIN: u64 = 0x7EA1;
const TAG_SHUFFLE: u64 = 0x5AFF;

fn single(order: Vec<usize>, metadata: Map<String, Value>) -> Vec<FileSpec> {
    vec![FileSpec::SafeTensors { name: SINGLE.into(), order, metadata }]
}

/// The tensors in `order`, cut into `n` shards of about equal size, with a
/// Hugging Face style index.
fn sharded(tensors: &[Tensor], order: &[usize], n: usize) -> Vec<FileSpec> {
    let total: u64 = tensors.iter().map(Tensor::bytes).sum();
    let name = |s: usize| format!("model-{:05}-of-{n:05}.safetensors", s + 1);
    let mut shards = vec![Vec::new(); n];
    let mut done = 0u64;
    let mut s = 0;
    for &i in order {
        if s + 1 < n && done >= total * (s as u64 + 1) / n as u64 {
            s += 1;
        }
        shards[s].push(i);
        done += tensors[i].bytes();
    }
    let mut weight_map = Map::new();
    for (s, shard) in shards.iter().enumerate() {
        for &i in shard {
            weight_map.insert(tensors[i].name.clone(), name(s).into());
        }
    }
    let index = json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
    let mut files: Vec<FileSpec> =
        shards.into_iter().enumerate().map(|(s, order)| FileSpec::SafeTensors { name: name(s), order, metadata: weights::default_metadata() }).collect();
    let mut bytes = serde_json::to_vec_pretty(&index).expect("a JSON value serialises");
    bytes.push(b'\n');
    files.push(FileSpec::Raw { name: "model.safetensors.index.json".into(), bytes });
    files
}

/// The versions of a model scenario.
pub fn plan(scenario: Scenario, tensors: &[Tensor], layers: u64, seed: u64, checkpoints: usize) -> Vec<Version> {
    let natural: Vec<usize> = (0..tensors.len()).collect();
    let meta = weights::default_metadata;
    let v0 = Version { files: single(natural.clone(), meta()), step: Step::Same };
    let same_file = |step| Version { files: single(natural.clone(), meta()), step };
    match scenario {
        Scenario::Rename => {
            vec![
                v0,
                Version {
                    files: vec![FileSpec::SafeTensors { name: "consolidated.safetensors".into(), order: natural.clone(), metadata: meta() }],
                    step: Step::Same,
                },
            ]
        }
        Scenario::Partial => vec![v0, same_file(Step::FineTuneFrom(layers - layers.div_ceil(4)))],
        Scenario::Header => {
            // `,"license":"mit"` is 16 bytes: the header's padding stays the same.
            let mut m = meta();
            m.insert("license".into(), "mit".into());
            vec![v0, Version { files: single(natural.clone(), m), step: Step::Same }]
        }
        Scenario::Full => vec![v0, same_file(Step::FineTuneAll)],
        Scenario::SmallStep => vec![v0, same_file(Step::Nudge)],
        Scenario::Adapter => vec![v0, same_file(Step::Adapter)],
        Scenario::Reshard => {
            let mut shuffled = natural.clone();
            let mut rng = Rng::stream(&[seed, TAG_SHUFFLE]);
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.below(i as u64 + 1) as usize);
            }
            vec![Version { files: sharded(tensors, &natural, 2), step: Step::Same }, Version { files: sharded(tensors, &shuffled, 3), step: Step::Same }]
        }
        Scenario::Checkpoints => {
            let mut v = vec![v0];
            v.extend((1..checkpoints.max(2)).map(|_| same_file(Step::Train)));
            v
        }
        Scenario::Dataset => unreachable!("the dataset scenario is not a model"),
    }
}

/// Where each tensor of a version lives: (file index, offset in the file).
struct Placed {
    headers: Vec<Option<Vec<u8>>>,
    at: Vec<(usize, u64)>,
    sizes: Vec<u64>,
}

fn place(tensors: &[Tensor], v: &Version) -> Result<Placed> {
    let mut at = vec![(usize::MAX, 0); tensors.len()];
    let mut headers = Vec::new();
    let mut sizes = Vec::new();
    for (f, spec) in v.files.iter().enumerate() {
        match spec {
            FileSpec::SafeTensors { order, metadata, .. } => {
                let (h, offsets) = weights::safetensors_header(tensors, order, metadata);
                for (&i, off) in order.iter().zip(offsets) {
                    ensure!(at[i].0 == usize::MAX, "tensor {} is stored twice", tensors[i].name);
                    at[i] = (f, off);
                }
                sizes.push(h.len() as u64 + order.iter().map(|&i| tensors[i].bytes()).sum::<u64>());
                headers.push(Some(h));
            }
            FileSpec::Raw { bytes, .. } => {
                sizes.push(bytes.len() as u64);
                headers.push(None);
            }
        }
    }
    ensure!(at.iter().all(|a| a.0 != usize::MAX), "a version leaves out a tensor");
    Ok(Placed { headers, at, sizes })
}

/// The non-tensor bytes of `new`'s files that differ from `old`'s (see the
/// module documentation).
fn changed_outside_tensors(old: (&Version, &Placed), new: (&Version, &Placed)) -> u64 {
    let block = |v: &Version, p: &Placed, f: usize| -> Vec<u8> {
        match &v.files[f] {
            FileSpec::Raw { bytes, .. } => bytes.clone(),
            FileSpec::SafeTensors { .. } => p.headers[f].clone().unwrap_or_default(),
        }
    };
    let mut changed = 0;
    for (f, spec) in new.0.files.iter().enumerate() {
        let nb = block(new.0, new.1, f);
        let same_name = old.0.files.iter().position(|o| o.name() == spec.name());
        changed += match same_name {
            Some(o) => {
                let ob = block(old.0, old.1, o);
                match spec {
                    FileSpec::SafeTensors { .. } if ob.len() >= 8 && nb.len() >= 8 => {
                        weights::differing_bytes(&ob[..8], &nb[..8]) + weights::edit_span(&ob[8..], &nb[8..])
                    }
                    _ => weights::edit_span(&ob, &nb),
                }
            }
            None if (0..old.0.files.len()).any(|o| block(old.0, old.1, o) == nb) => 0,
            None => nb.len() as u64,
        };
    }
    changed
}

/// Writes `versions` as `out/v0`, `out/v1`, … and returns their truth.
pub fn write_models(tensors: &[Tensor], seed: u64, versions: &[Version], out: &Path, dir_names: bool) -> Result<Vec<Truth>> {
    let placed = versions.iter().map(|v| place(tensors, v)).collect::<Result<Vec<_>>>()?;
    // Open every file of every version and write its header.
    let mut files: Vec<Vec<File>> = Vec::new();
    for (k, (v, p)) in versions.iter().zip(&placed).enumerate() {
        let dir = if dir_names { out.join(format!("v{k}")) } else { out.to_owned() };
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let mut fs = Vec::new();
        for (f, spec) in v.files.iter().enumerate() {
            let path = dir.join(spec.name());
            let file = File::create(&path).with_context(|| format!("create {}", path.display()))?;
            file.set_len(p.sizes[f])?;
            match (spec, &p.headers[f]) {
                (FileSpec::Raw { bytes, .. }, _) => file.write_all_at(bytes, 0)?,
                (_, Some(h)) => file.write_all_at(h, 0)?,
                (_, None) => {}
            }
            fs.push(file);
        }
        files.push(fs);
    }
    let n = versions.len();
    let counters = || (0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
    let (differing, tensor_bytes, tensor_count) = (counters(), counters(), counters());
    // Tensors are independent (each has its own seeded generators), so
    // threads take them in turn and write every version of each.
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    let (mut vals, mut prev, mut cur) = (Vec::new(), Vec::new(), Vec::new());
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(t) = tensors.get(i) else { return Ok(()) };
                        weights::base_values(t, seed, i as u64, &mut vals);
                        for (k, v) in versions.iter().enumerate() {
                            let changes = match v.step {
                                Step::Same => false,
                                Step::FineTuneFrom(l) => t.layer.is_some_and(|x| x >= l),
                                Step::FineTuneAll | Step::Train | Step::Nudge => true,
                                Step::Adapter => t.attention,
                            };
                            match v.step {
                                _ if !changes => {}
                                Step::FineTuneFrom(_) | Step::FineTuneAll => weights::fine_tune(&mut vals, seed, i as u64),
                                Step::Adapter => {
                                    let (rows, cols) = (t.shape[0] as usize, t.shape[1] as usize);
                                    let mut rng = Rng::stream(&[seed, i as u64, k as u64, TAG_ADAPTER]);
                                    weights::low_rank_update(&mut vals, rows, cols, weights::ADAPTER_RANK, weights::ADAPTER_STEP, &mut rng);
                                }
                                Step::Train => {
                                    weights::training_step(&mut vals, &mut Rng::stream(&[seed, i as u64, k as u64, TAG_TRAIN]), weights::CHECKPOINT_STEP)
                                }
                                Step::Nudge => weights::training_step(&mut vals, &mut Rng::stream(&[seed, i as u64, k as u64, TAG_TRAIN]), weights::SMALL_STEP),
                                Step::Same => {}
                            }
                            if k == 0 || changes {
                                weights::to_bf16(&vals, &mut cur);
                            } else {
                                cur.clone_from(&prev);
                            }
                            let diff = if k == 0 { t.bytes() } else { weights::differing_bytes(&prev, &cur) };
                            if diff > 0 {
                                differing[k].fetch_add(diff, Ordering::Relaxed);
                                tensor_bytes[k].fetch_add(t.bytes(), Ordering::Relaxed);
                                tensor_count[k].fetch_add(1, Ordering::Relaxed);
                            }
                            let (f, off) = placed[k].at[i];
                            files[k][f].write_all_at(&cur, off)?;
                            std::mem::swap(&mut prev, &mut cur);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("generator thread panicked")?;
        }
        Ok(())
    })?;
    let mut truth = Vec::with_capacity(n);
    for k in 0..n {
        let bytes: u64 = placed[k].sizes.iter().sum();
        let outside = if k == 0 {
            bytes - tensor_bytes[0].load(Ordering::Relaxed)
        } else {
            changed_outside_tensors((&versions[k - 1], &placed[k - 1]), (&versions[k], &placed[k]))
        };
        truth.push(Truth {
            files: versions[k].files.len() as u64,
            bytes,
            changed_bytes: differing[k].load(Ordering::Relaxed) + outside,
            changed_tensor_bytes: tensor_bytes[k].load(Ordering::Relaxed),
            changed_tensors: tensor_count[k].load(Ordering::Relaxed),
        });
    }
    Ok(truth)
}

/// Writes a scenario's versions under `out` and returns one truth line per
/// version.
pub fn write(scenario: Scenario, size_mib: u64, seed: u64, checkpoints: usize, dims: Dims, out: &Path) -> Result<Vec<Value>> {
    let truth = if scenario == Scenario::Dataset {
        crate::dataset::write(size_mib, seed, out)?
    } else {
        let (tensors, layers) = weights::layout(size_mib, dims);
        let versions = plan(scenario, &tensors, layers, seed, checkpoints);
        write_models(&tensors, seed, &versions, out, true)?
    };
    Ok(truth
        .iter()
        .enumerate()
        .map(|(k, t)| {
            json!({ "scenario": scenario.name(), "version": k, "files": t.files, "bytes": t.bytes, "changed_bytes": t.changed_bytes,
                    "changed_tensor_bytes": t.changed_tensor_bytes, "changed_tensors": t.changed_tensors })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const TINY: Dims = Dims { hidden: 64, ffn: 176, vocab: 256 };

    /// Every tensor of a version directory, by name, read back through the
    /// safetensors headers; and the header bytes of each file.
    fn read_version(dir: &Path) -> (BTreeMap<String, Vec<u8>>, BTreeMap<String, Vec<u8>>) {
        let (mut tensors, mut headers) = (BTreeMap::new(), BTreeMap::new());
        for e in std::fs::read_dir(dir).expect("version directory") {
            let path = e.expect("entry").path();
            let name = path.file_name().expect("name").to_string_lossy().into_owned();
            if !name.ends_with(".safetensors") {
                continue;
            }
            let bytes = std::fs::read(&path).expect("read");
            let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
            let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).expect("header is JSON");
            let data = &bytes[8 + n..];
            let mut end = 0;
            for (k, v) in &header {
                if k == "__metadata__" {
                    continue;
                }
                let off = v["data_offsets"].as_array().expect("offsets");
                let (a, b) = (off[0].as_u64().expect("start") as usize, off[1].as_u64().expect("end") as usize);
                let elems: u64 = v["shape"].as_array().expect("shape").iter().map(|x| x.as_u64().expect("dim")).product();
                assert_eq!((b - a) as u64, elems * 2, "{k}: offsets disagree with the shape");
                end = end.max(b);
                assert!(tensors.insert(k.clone(), data[a..b].to_vec()).is_none(), "{k} stored twice");
            }
            assert_eq!(end, data.len(), "{name}: data does not end where the last tensor does");
            headers.insert(name, bytes[..8 + n].to_vec());
        }
        (tensors, headers)
    }

    fn run(s: Scenario, checkpoints: usize) -> (tempfile::TempDir, Vec<Value>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let truth = write(s, 1, 5, checkpoints, TINY, dir.path()).expect("write scenario");
        (dir, truth)
    }

    fn tensor_diff(a: &BTreeMap<String, Vec<u8>>, b: &BTreeMap<String, Vec<u8>>) -> (u64, u64) {
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "the versions hold different tensors");
        let mut bytes = 0;
        let mut tensors = 0;
        for (k, x) in a {
            let d = weights::differing_bytes(x, &b[k]);
            bytes += d;
            tensors += u64::from(d > 0);
        }
        (bytes, tensors)
    }

    #[test]
    fn tensor_truth_matches_the_files() {
        for (s, versions) in [(Scenario::Partial, 2), (Scenario::Full, 2), (Scenario::SmallStep, 2), (Scenario::Adapter, 2), (Scenario::Checkpoints, 4)] {
            let (dir, truth) = run(s, versions);
            assert_eq!(truth.len(), versions);
            for (k, t) in truth.iter().enumerate().skip(1) {
                let (a, ha) = read_version(&dir.path().join(format!("v{}", k - 1)));
                let (b, hb) = read_version(&dir.path().join(format!("v{k}")));
                assert_eq!(ha, hb, "{s:?}: headers changed");
                let (bytes, tensors) = tensor_diff(&a, &b);
                assert_eq!(t["changed_bytes"], bytes, "{s:?} v{k}");
                assert_eq!(t["changed_tensors"], tensors, "{s:?} v{k}");
                assert!(bytes > 0);
            }
        }
    }

    #[test]
    fn scenarios_change_what_they_say() {
        let layers = weights::layout(1, TINY).1;
        let (dir, _) = run(Scenario::Partial, 2);
        let (a, _) = read_version(&dir.path().join("v0"));
        let (b, _) = read_version(&dir.path().join("v1"));
        let first = layers - layers.div_ceil(4);
        for (k, x) in &a {
            let tuned = k.strip_prefix("model.layers.").and_then(|r| r.split('.').next()).and_then(|l| l.parse::<u64>().ok()).is_some_and(|l| l >= first);
            assert_eq!(x != &b[k], tuned, "partial: {k}");
        }
        let (dir, _) = run(Scenario::Full, 2);
        let (a, _) = read_version(&dir.path().join("v0"));
        let (b, _) = read_version(&dir.path().join("v1"));
        assert!(a.iter().all(|(k, x)| x != &b[k]), "full: a tensor stayed byte-identical");
        let (dir, _) = run(Scenario::Adapter, 2);
        let (a, _) = read_version(&dir.path().join("v0"));
        let (b, _) = read_version(&dir.path().join("v1"));
        for (k, x) in &a {
            assert_eq!(x != &b[k], k.contains("self_attn."), "adapter: {k}");
        }
    }

    #[test]
    fn layout_changes_move_tensors_without_changing_them() {
        let (dir, truth) = run(Scenario::Rename, 2);
        assert_eq!(truth[1]["changed_bytes"], 0);
        assert_eq!(std::fs::read(dir.path().join("v0/model.safetensors")).ok(), std::fs::read(dir.path().join("v1/consolidated.safetensors")).ok());

        let (dir, truth) = run(Scenario::Header, 2);
        let (a, ha) = read_version(&dir.path().join("v0"));
        let (b, hb) = read_version(&dir.path().join("v1"));
        assert_eq!(tensor_diff(&a, &b), (0, 0));
        let (old, new) = (&ha["model.safetensors"], &hb["model.safetensors"]);
        assert_eq!(new.len(), old.len() + 16, "the metadata key is 16 bytes and the padding stays");
        assert_eq!(truth[1]["changed_bytes"], weights::differing_bytes(&old[..8], &new[..8]) + 16);

        let (dir, truth) = run(Scenario::Reshard, 2);
        let (a, ha) = read_version(&dir.path().join("v0"));
        let (b, hb) = read_version(&dir.path().join("v1"));
        assert_eq!((ha.len(), hb.len()), (2, 3));
        assert_eq!(tensor_diff(&a, &b), (0, 0));
        let headers: u64 = hb.values().map(|h| h.len() as u64).sum();
        let index = std::fs::metadata(dir.path().join("v1/model.safetensors.index.json")).expect("index").len();
        let changed = truth[1]["changed_bytes"].as_u64().expect("number");
        assert!(changed > headers && changed <= headers + index, "reshard: {changed} outside ({headers}, {}]", headers + index);
    }

    #[test]
    fn scenarios_are_deterministic() {
        for s in [Scenario::Reshard, Scenario::Adapter, Scenario::Dataset] {
            let (a, ta) = run(s, 2);
            let (b, tb) = run(s, 2);
            assert_eq!(ta, tb);
            for v in ["v0", "v1"] {
                for e in std::fs::read_dir(a.path().join(v)).expect("dir") {
                    let name = e.expect("entry").file_name();
                    assert_eq!(std::fs::read(a.path().join(v).join(&name)).ok(), std::fs::read(b.path().join(v).join(&name)).ok(), "{s:?} {v}");
                }
            }
        }
    }

    #[test]
    fn partial_v1_is_the_model_command_with_a_quarter_tuned() {
        let (tensors, layers) = weights::layout(1, TINY);
        let (dir, _) = run(Scenario::Partial, 2);
        let single = tempfile::tempdir().expect("tempdir");
        let version = Version { files: single_file(&tensors), step: Step::FineTuneFrom(layers - (layers as f64 * 0.25).ceil() as u64) };
        write_models(&tensors, 5, &[version], single.path(), false).expect("write");
        assert_eq!(std::fs::read(dir.path().join("v1/model.safetensors")).ok(), std::fs::read(single.path().join(SINGLE)).ok());
    }

    fn single_file(tensors: &[Tensor]) -> Vec<FileSpec> {
        single((0..tensors.len()).collect(), weights::default_metadata())
    }

    #[test]
    fn dataset_truth_is_the_rows_that_differ() {
        let (dir, truth) = run(Scenario::Dataset, 2);
        let a = std::fs::read(dir.path().join("v0/data.jsonl")).expect("v0");
        let b = std::fs::read(dir.path().join("v1/data.jsonl")).expect("v1");
        let rows = |x: &[u8]| x.split_inclusive(|&c| c == b'\n').map(<[u8]>::to_vec).collect::<Vec<_>>();
        let (ra, rb) = (rows(&a), rows(&b));
        let changed: u64 = rb.iter().enumerate().filter(|(i, r)| ra.get(*i) != Some(r)).map(|(_, r)| r.len() as u64).sum();
        let edited = rb.iter().zip(&ra).filter(|(x, y)| x != y).count();
        assert_eq!(edited as u64, 10);
        assert!(rb.len() > ra.len());
        assert_eq!(truth[1]["changed_bytes"], changed);
        assert_eq!(truth[0]["bytes"], a.len() as u64);
        assert_eq!(truth[1]["bytes"], b.len() as u64);
        for r in &rb {
            serde_json::from_slice::<Value>(r).expect("every row is JSON");
        }
    }
}
