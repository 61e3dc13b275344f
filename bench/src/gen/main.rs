//! `ferry-gen`: deterministic synthetic model files and benchmark scenarios.
//!
//! `ferry-gen model --size-mib 1024 --seed 1 --out v1/model.safetensors`
//! writes a safetensors file (u64 LE header length, JSON header, raw
//! tensors) of a Llama-shaped bf16 model whose weights are drawn like trained
//! weights (normal, std 0.02; norms near 1). `--changed-fraction 0.25`
//! writes the same model with the last quarter of its layers fine-tuned
//! (every weight nudged), the rest byte-identical.
//!
//! `ferry-gen scenario partial --size-mib 1024 --seed 1 --out DIR` writes the
//! versions of one benchmark scenario as `DIR/v0`, `DIR/v1`, … and prints
//! one JSON line of ground truth per version (see `scenario.rs` for what
//! counts as changed, and `ferry-gen scenario --help` for the scenarios).

mod dataset;
mod scenario;
mod weights;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use scenario::{FileSpec, Scenario, Step, Version};
use weights::Dims;

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
    /// The versions of one benchmark scenario, as directories v0, v1, …
    /// under --out; prints one JSON line of ground truth per version
    /// (bytes, changed_bytes: the bytes that really differ from the
    /// previous version, changed_tensor_bytes, changed_tensors).
    Scenario {
        #[arg(value_enum)]
        name: Scenario,
        /// Size of v0 (a model, or the dataset).
        #[arg(long, default_value_t = 256)]
        size_mib: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Number of versions of the checkpoints scenario.
        #[arg(long, default_value_t = 10)]
        checkpoints: usize,
        #[arg(long)]
        out: PathBuf,
    },
}

fn model(size_mib: u64, seed: u64, changed: f64, changed_layers: Option<u64>, out: PathBuf, truth: bool) -> Result<()> {
    let (tensors, layers) = weights::layout(size_mib, Dims::DEFAULT);
    let tuned_layers = changed_layers.unwrap_or((layers as f64 * changed).ceil() as u64).min(layers);
    let first_tuned = layers - tuned_layers;
    let dir = out.parent().filter(|d| !d.as_os_str().is_empty()).map_or_else(|| PathBuf::from("."), |d| d.to_owned());
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model.safetensors".into());
    let version = Version {
        files: vec![FileSpec::SafeTensors { name, order: (0..tensors.len()).collect(), metadata: weights::default_metadata() }],
        step: if tuned_layers > 0 { Step::FineTuneFrom(first_tuned) } else { Step::Same },
    };
    let written = scenario::write_models(&tensors, seed, &[version], &dir, false)?;
    if truth {
        let changed: Vec<_> = tensors.iter().filter(|t| t.layer.is_some_and(|l| l >= first_tuned)).collect();
        let changed_bytes: u64 = changed.iter().map(|t| t.bytes()).sum();
        println!(
            "{}",
            serde_json::json!({ "bytes": written[0].bytes, "changed_bytes": changed_bytes, "changed_tensors": changed.len(), "tensors": tensors.len(), "layers": layers, "changed_layers": tuned_layers })
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().what {
        What::Model { size_mib, seed, changed_fraction, changed_layers, out, truth } => model(size_mib, seed, changed_fraction, changed_layers, out, truth),
        What::Scenario { name, size_mib, seed, checkpoints, out } => {
            for line in scenario::write(name, size_mib, seed, checkpoints, Dims::DEFAULT, &out)? {
                println!("{line}");
            }
            Ok(())
        }
    }
}
