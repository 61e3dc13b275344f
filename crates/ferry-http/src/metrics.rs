//! Counters for `/metrics`, in the Prometheus text exposition format.
//!
//! A handful of counters updated with relaxed atomics on every request:
//! no registry, no locks on the hot path. Requests are counted by route
//! (the route's pattern, never the path asked: names of private
//! repositories must not show) and status.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferry_service::HubService;

/// What the door has done since it started.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    bytes_out: AtomicU64,
    bytes_in: AtomicU64,
    in_flight: AtomicU64,
}

impl Metrics {
    /// A request to `route` ended with `status`.
    pub fn request(&self, route: &'static str, status: u16) {
        *self.requests.lock().unwrap_or_else(|p| p.into_inner()).entry((route, status)).or_default() += 1;
    }

    /// File bytes sent to a client.
    pub fn sent(&self, bytes: u64) {
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    /// File bytes received from a client.
    pub fn received(&self, bytes: u64) {
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A transfer (a file body being sent or received) started; it ends
    /// when the guard is dropped.
    pub fn transfer(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// The exposition text, with the service's and the store's figures.
    pub fn render(&self, service: &HubService) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family("ferry_http_requests_total", "counter", "HTTP requests answered, by route and status.");
        for ((route, status), n) in self.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "ferry_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        let mut one = |name: &str, kind: &str, help: &str, value: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        one("ferry_http_bytes_sent_total", "counter", "File bytes sent in answers.", self.bytes_out.load(Ordering::Relaxed) as f64);
        one("ferry_http_bytes_received_total", "counter", "File bytes received in uploads.", self.bytes_in.load(Ordering::Relaxed) as f64);
        one("ferry_http_transfers_in_flight", "gauge", "File bodies being sent or received now.", self.in_flight.load(Ordering::Relaxed) as f64);
        let c = service.counters();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        one("ferry_chunks_stored_total", "counter", "Chunks clients sent that the hub did not hold.", get(&c.chunks_stored) as f64);
        one("ferry_chunks_deduplicated_total", "counter", "Chunks clients sent that the hub already held.", get(&c.chunks_deduplicated) as f64);
        one("ferry_gc_runs_total", "counter", "Garbage collections run.", get(&c.gc_runs) as f64);
        one("ferry_gc_seconds_total", "counter", "Time spent collecting garbage, in seconds.", get(&c.gc_millis) as f64 / 1000.0);
        one("ferry_store_disk_bytes", "gauge", "Size of the store directory on disk.", service.store().disk_bytes() as f64);
        out
    }
}

/// A transfer in progress (see [`Metrics::transfer`]).
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
