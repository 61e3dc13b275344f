//! Dev-only support for ferry's tests, benches and fuzz targets; never a
//! dependency of anything shipped.
//!
//! - [`noise`], [`Rng`] and the other generators: deterministic data, so a
//!   failing run can be repeated byte for byte.
//! - [`transfer`] (feature `transfer`): two in-memory ends that answer the
//!   requests of `ferry_proto::transfer::Transfer`, as a store would.
//! - `TempStore` (feature `store`): a store in a temporary directory.

#![warn(missing_docs)]

mod data;
#[cfg(feature = "store")]
mod store;
#[cfg(feature = "transfer")]
pub mod transfer;

pub use data::{noise, xorshift64_bytes, Rng, StarRng};
#[cfg(feature = "store")]
pub use store::TempStore;
