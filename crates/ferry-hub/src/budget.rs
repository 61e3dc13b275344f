//! The door's memory budget: how much all connections together may make the
//! hub hold, and how much one may.
//!
//! Two pools, each half of the budget. *Windows*: an authenticated QUIC
//! connection reserves its receive and send windows (what quinn buffers if
//! the peer writes faster than the hub reads, or reads slower than it
//! writes), the largest that leaves room for others. *Frames*: each request
//! reserves its payload twice (the bytes and the decoded message) plus what
//! its answer may hold at once (three frames for the answers sent a frame
//! at a time), until it is answered. A connection holds at most
//! [`CONNECTION_FRAMES`] of frames (its further requests wait their turn);
//! a request that cannot get its share of the pool within [`BUDGET_WAIT`]
//! is answered busy.

use std::sync::Arc;
use std::time::Duration;

use ferry_net::wire::Header;
use ferry_proto::{message::tag, MAX_FRAME_LEN};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The default of [`ServeOptions::memory_budget`](crate::ServeOptions).
pub const DEFAULT_MEMORY_BUDGET: usize = 1 << 30;

/// The smallest budget a hub runs with: one connection's smallest windows
/// and one connection's frames.
pub const MIN_MEMORY_BUDGET: usize = 2 * (2 * MIN_WINDOW as usize + CONNECTION_FRAMES);

/// Frames one connection's requests may hold at once: four answers sent a
/// frame at a time.
pub const CONNECTION_FRAMES: usize = 12 * MAX_FRAME_LEN;

/// How long a request waits for its share of the frame pool before it is
/// answered busy.
pub const BUDGET_WAIT: Duration = Duration::from_secs(10);

/// Connection windows range from this (a LAN's round trip at 1 Gbit/s) ...
const MIN_WINDOW: u32 = 128 << 10;
/// ... to this (`ferry_net::CONNECTION_WINDOW`).
const MAX_WINDOW: u32 = ferry_net::CONNECTION_WINDOW;
/// A new connection takes at most this fraction of the free window pool,
/// so that the next ones still get useful windows.
const WINDOW_SHARE: usize = 8;

/// Semaphores count permits in u32: the pools count KiB.
const UNIT: usize = 1 << 10;

fn units(bytes: usize) -> u32 {
    bytes.div_ceil(UNIT).min(u32::MAX as usize) as u32
}

/// The door's two pools.
pub(crate) struct Budget {
    windows: Arc<Semaphore>,
    frames: Arc<Semaphore>,
    /// What every connection place not yet taken is kept of the window
    /// pool: the smallest windows.
    places: usize,
}

/// What a request holds of the frame budget: released when dropped.
pub(crate) struct Held {
    _pool: OwnedSemaphorePermit,
    _connection: OwnedSemaphorePermit,
}

impl Budget {
    /// A budget of `total` bytes for a door of `places` connections.
    pub(crate) fn new(total: usize, places: usize) -> Budget {
        let half = total.max(MIN_MEMORY_BUDGET) / 2;
        Budget { windows: Arc::new(Semaphore::new(half / UNIT)), frames: Arc::new(Semaphore::new(half / UNIT)), places }
    }

    /// Windows for a newly authenticated QUIC connection (each way) and
    /// their reservation, or None if even the smallest do not fit.
    /// `others` is how many connection places are still free besides this
    /// one's: each keeps the smallest windows' worth, so that a few early
    /// connections cannot leave the rest of the places without windows.
    pub(crate) fn windows(&self, others: usize) -> Option<(u32, OwnedSemaphorePermit)> {
        let free = self.windows.available_permits() * UNIT;
        let spare = free.saturating_sub(others.min(self.places) * 2 * MIN_WINDOW as usize);
        let mut window = MAX_WINDOW;
        while window > MIN_WINDOW && 2 * window as usize > spare / WINDOW_SHARE {
            window /= 2;
        }
        let permit = self.windows.clone().try_acquire_many_owned(units(2 * window as usize)).ok()?;
        Some((window, permit))
    }

    /// A new connection's own cap on frames.
    pub(crate) fn connection() -> Arc<Semaphore> {
        Arc::new(Semaphore::new(CONNECTION_FRAMES / UNIT))
    }

    /// Reserves what the request whose header was just read may make the
    /// hub hold: waits for the connection's cap as long as it takes (the
    /// connection's own requests are ahead), then up to [`BUDGET_WAIT`] for
    /// the pool. None: the hub is out of budget.
    pub(crate) async fn request(&self, connection: &Arc<Semaphore>, header: Header) -> Option<Held> {
        let need = units(request_cost(header)).min(units(CONNECTION_FRAMES));
        let own = connection.clone().acquire_many_owned(need).await.ok()?;
        let pool = tokio::time::timeout(BUDGET_WAIT, self.frames.clone().acquire_many_owned(need)).await.ok()?.ok()?;
        Some(Held { _pool: pool, _connection: own })
    }
}

/// The most a request may make the hub hold while it is answered: its
/// payload and the decoded message, and the answer frames in memory at once.
fn request_cost(header: Header) -> usize {
    let answer = match header.kind {
        // Built and sent a frame at a time: the records of one being read
        // and built, one queued, one being encoded and written.
        tag::GET_HISTORY | tag::GET_NODES | tag::GET_CHUNKS => 3 * MAX_FRAME_LEN,
        // One frame at most.
        tag::LIST_REFS | tag::LIST_REPOS => MAX_FRAME_LEN,
        // A bit per id asked about.
        tag::HAVE_REVISIONS | tag::HAVE_NODES | tag::HAVE_CHUNKS => header.len / 256 + UNIT,
        _ => UNIT,
    };
    2 * header.len + answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_shrink_as_connections_take_them_and_run_out() {
        const PLACES: usize = 1024;
        let budget = Budget::new(DEFAULT_MEMORY_BUDGET, PLACES);
        let mut held = Vec::new();
        let mut sizes = Vec::new();
        while let Some((w, permit)) = budget.windows(PLACES.saturating_sub(held.len() + 1)) {
            sizes.push(w);
            held.push(permit);
        }
        assert_eq!(sizes[0], 16 << 20, "a lone connection gets large windows");
        assert!(sizes.len() >= PLACES, "every place gets windows: {}", sizes.len());
        assert!(sizes.windows(2).all(|p| p[1] <= p[0]));
        assert_eq!(*sizes.last().unwrap(), MIN_WINDOW);
        let reserved: usize = sizes.iter().map(|w| 2 * *w as usize).sum();
        assert!(reserved <= DEFAULT_MEMORY_BUDGET / 2, "{reserved}");
        held.pop();
        assert!(budget.windows(0).is_some(), "a closed connection's windows are free again");
    }

    #[tokio::test(start_paused = true)]
    async fn connections_are_capped_and_a_request_that_finds_the_pool_spent_is_refused() {
        let pull_cost = 3 * MAX_FRAME_LEN;
        let budget = Budget::new(MIN_MEMORY_BUDGET + 2 * pull_cost, 3);
        let pull = Header { kind: tag::GET_CHUNKS, len: 0 };
        let (a, b, c) = (Budget::connection(), Budget::connection(), Budget::connection());
        let mut held_by_a = Vec::new();
        // Time is paused: a request that would wait forever times out at once.
        while let Ok(Some(h)) = tokio::time::timeout(Duration::from_secs(60), budget.request(&a, pull)).await {
            held_by_a.push(h);
        }
        assert_eq!(held_by_a.len(), CONNECTION_FRAMES / request_cost(pull), "one connection is capped, not refused");
        let held_by_b = budget.request(&b, pull).await.expect("another connection gets what is left");
        assert!(budget.request(&c, pull).await.is_none(), "the pool is spent: busy after BUDGET_WAIT");
        held_by_a.clear();
        assert!(budget.request(&c, pull).await.is_some(), "what a connection held is free again");
        drop(held_by_b);
    }
}
