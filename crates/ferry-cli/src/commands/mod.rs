//! One module per command (or close family of commands). Each parses its
//! own arguments, does its work through the library crates and returns a
//! typed result for `crate::output`.

pub mod access;
pub mod branch;
pub mod cat;
pub mod commit;
pub mod export;
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
pub mod transfer;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
