//! Starts a Garage store on loopback for the benchmark scripts (the same
//! harness the tests use), prints one JSON line (S3 endpoint, region,
//! bucket, key; the admin endpoint and token, for its metrics) and keeps it
//! running until its stdin closes.
//!
//!     ferry-garage-node [--nodes N]

use std::io::Read;

use anyhow::Result;
use clap::Parser;
use ferry_testkit::Garage;

#[derive(Parser)]
struct Args {
    /// Nodes in the cluster (replication factor 3 when there are 3 or more).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let garage = Garage::cluster(args.nodes)?;
    let line = serde_json::json!({
        "endpoint": garage.endpoint(),
        "region": garage.region(),
        "bucket": garage.bucket(),
        "access_key_id": garage.access_key_id(),
        "secret_access_key": garage.secret_access_key(),
        "admin_endpoint": garage.admin_endpoints()[0],
        "admin_token": garage.admin_token(),
    });
    println!("{line}");
    // Until whoever started it closes our stdin (or exits).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(garage);
    Ok(())
}
