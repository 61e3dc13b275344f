//! Dev-only support for ferry's tests, benches and fuzz targets; never a
//! dependency of anything shipped.
//!
//! - [`noise`], [`Rng`] and the other generators: deterministic data, so a
//!   failing run can be repeated byte for byte.
//! - [`transfer`] (feature `transfer`): two in-memory ends that answer the
//!   requests of `ferry_proto::transfer::Transfer`, as a store would.
//! - `TempStore` (feature `store`): a store in a temporary directory.
//! - `Garage` (feature `garage`): a real Garage S3 store on loopback, one
//!   node or a cluster whose nodes can be killed and restarted.

#![warn(missing_docs)]

mod data;
#[cfg(feature = "garage")]
mod garage;
#[cfg(feature = "store")]
mod store;
#[cfg(feature = "transfer")]
pub mod transfer;

pub use data::{bf16_nudged, bf16_weights, noise, safetensors_file, xorshift64_bytes, Rng, StarRng};
#[cfg(feature = "garage")]
pub use garage::Garage;
#[cfg(feature = "store")]
pub use store::{chunks_of, TempStore};
