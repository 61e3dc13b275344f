//! `ferry-gen`: deterministic synthetic model files for demos and benchmarks.
//!
//! `ferry-gen model --size-mib 1024 --seed 1 --out v1/model.safetensors`
//! writes a safetensors file (u64 LE header length, JSON header, raw
//! tensors) of a Llama-shaped bf16 model whose weights are drawn like trained
//! weights (normal, std 0.02; norms near 1). `--changed-fraction 0.25`
//! writes the same model with the last quarter of its layers fine-tuned
//! (every weight nudged), the rest byte-identical.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// A safetensors model.
    Model {
        #[arg(long, default_value_t = 256)]
        size_mib: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Fraction of layers, counted from the last, that are fine-tuned.
        #[arg(long, default_value_t = 0.0)]
        changed_fraction: f64,
        /// Number of layers, counted from the last, that are fine-tuned
        /// (instead of --changed-fraction).
        #[arg(long, conflicts_with = "changed_fraction")]
        changed_layers: Option<u64>,
        #[arg(long)]
        out: PathBuf,
        /// Print the ground truth as one JSON line: file bytes, and bytes
        /// of the tensors that differ from the unchanged model.
        #[arg(long)]
        truth: bool,
    },
}

const HIDDEN: u64 = 1024;
const FFN: u64 = 2816;
const VOCAB: u64 = 8192;

struct Tensor {
    name: String,
    shape: Vec<u64>,
    /// Layer index (None for embeddings and the final norm).
    layer: Option<u64>,
    norm: bool,
}

impl Tensor {
    fn elems(&self) -> u64 {
        self.shape.iter().product()
    }
}

fn layout(size_mib: u64) -> (Vec<Tensor>, u64) {
    let layer_elems = 4 * HIDDEN * HIDDEN + 3 * HIDDEN * FFN + 2 * HIDDEN;
    let budget = (size_mib << 20) / 2;
    let layers = (budget.saturating_sub(2 * VOCAB * HIDDEN) / layer_elems).max(1);
    let mut t = vec![Tensor { name: "model.embed_tokens.weight".into(), shape: vec![VOCAB, HIDDEN], layer: None, norm: false }];
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        for (n, shape, norm) in [
            ("self_attn.q_proj.weight", vec![HIDDEN, HIDDEN], false),
            ("self_attn.k_proj.weight", vec![HIDDEN, HIDDEN], false),
            ("self_attn.v_proj.weight", vec![HIDDEN, HIDDEN], false),
            ("self_attn.o_proj.weight", vec![HIDDEN, HIDDEN], false),
            ("mlp.gate_proj.weight", vec![FFN, HIDDEN], false),
            ("mlp.up_proj.weight", vec![FFN, HIDDEN], false),
            ("mlp.down_proj.weight", vec![HIDDEN, FFN], false),
            ("input_layernorm.weight", vec![HIDDEN], true),
            ("post_attention_layernorm.weight", vec![HIDDEN], true),
        ] {
            t.push(Tensor { name: format!("{p}.{n}"), shape, layer: Some(l), norm });
        }
    }
    t.push(Tensor { name: "model.norm.weight".into(), shape: vec![HIDDEN], layer: None, norm: true });
    t.push(Tensor { name: "lm_head.weight".into(), shape: vec![VOCAB, HIDDEN], layer: None, norm: false });
    (t, layers)
}

/// xorshift64* — fast, deterministic, good enough for weights.
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Two standard normal samples (Box-Muller).
    fn normal2(&mut self) -> (f32, f32) {
        let r = self.next();
        let u1 = ((r >> 40) as f32 + 1.0) / (1u64 << 24) as f32;
        let u2 = ((r & 0xFF_FFFF) as f32) / (1u64 << 24) as f32;
        let m = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f32::consts::TAU * u2).sin_cos();
        (m * c, m * s)
    }
}

fn bf16(x: f32) -> [u8; 2] {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7FFF + ((b >> 16) & 1));
    ((rounded >> 16) as u16).to_le_bytes()
}

/// Appends tensor `t`'s bytes to `buf`.
fn gen_tensor(buf: &mut Vec<u8>, t: &Tensor, seed: u64, index: u64, tuned: bool) {
    let mut base = Rng::new(seed ^ (index << 20));
    let mut delta = Rng::new(seed ^ (index << 20) ^ 0xF1E7_0E5E);
    buf.reserve(t.elems() as usize * 2);
    let mut left = t.elems();
    while left > 0 {
        let (a, b) = base.normal2();
        let (mut a, mut b) = if t.norm { (1.0 + 0.05 * a, 1.0 + 0.05 * b) } else { (0.02 * a, 0.02 * b) };
        if tuned {
            let (da, db) = delta.normal2();
            a += 0.002 * da;
            b += 0.002 * db;
        }
        buf.extend_from_slice(&bf16(a));
        if left > 1 {
            buf.extend_from_slice(&bf16(b));
        }
        left = left.saturating_sub(2);
    }
}

fn model(size_mib: u64, seed: u64, changed: f64, changed_layers: Option<u64>, out: PathBuf, truth: bool) -> Result<()> {
    let (tensors, layers) = layout(size_mib);
    let tuned_layers = changed_layers.unwrap_or((layers as f64 * changed).ceil() as u64).min(layers);
    let first_tuned = layers - tuned_layers;
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({ "format": "pt" }));
    let mut off = 0u64;
    let mut offsets = Vec::with_capacity(tensors.len());
    for t in &tensors {
        let len = t.elems() * 2;
        header.insert(t.name.clone(), serde_json::json!({ "dtype": "BF16", "shape": t.shape, "data_offsets": [off, off + len] }));
        offsets.push(off);
        off += len;
    }
    let mut h = serde_json::to_vec(&header)?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::File::create(&out).with_context(|| format!("create {}", out.display()))?;
    let data_start = 8 + h.len() as u64;
    file.set_len(data_start + off)?;
    let mut head = Vec::with_capacity(8 + h.len());
    head.extend_from_slice(&(h.len() as u64).to_le_bytes());
    head.extend_from_slice(&h);
    file.write_all_at(&head, 0)?;
    // Tensors are independent (each has its own seeded generators), so
    // threads take them in turn and write each at its offset.
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    let mut buf = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(t) = tensors.get(i) else { return Ok(()) };
                        let tuned = t.layer.is_some_and(|l| l >= first_tuned);
                        buf.clear();
                        gen_tensor(&mut buf, t, seed, i as u64, tuned);
                        file.write_all_at(&buf, data_start + offsets[i])?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("generator thread panicked")?;
        }
        Ok(())
    })?;
    if truth {
        let changed: Vec<&Tensor> = tensors.iter().filter(|t| t.layer.is_some_and(|l| l >= first_tuned)).collect();
        let changed_bytes: u64 = changed.iter().map(|t| t.elems() * 2).sum();
        println!(
            "{}",
            serde_json::json!({ "bytes": data_start + off, "changed_bytes": changed_bytes, "changed_tensors": changed.len(), "tensors": tensors.len(), "layers": layers, "changed_layers": tuned_layers })
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().what {
        What::Model { size_mib, seed, changed_fraction, changed_layers, out, truth } => model(size_mib, seed, changed_fraction, changed_layers, out, truth),
    }
}
