//! One module per command (or close family of commands). Each parses its
//! own arguments, does its work through the library crates and returns a
//! typed result for `crate::output`.

pub mod access;
pub mod audit;
pub mod branch;
pub mod cat;
pub mod commit;
pub mod export;
pub mod forget;
pub mod fsck;
pub mod gc;
pub mod init;
pub mod log;
pub mod ls;
pub mod mirror;
pub mod remote;
pub mod repos;
pub mod serve;
pub mod stats;
pub mod tag;
pub mod transfer;

pub use ferry_core::time::unix_now;
