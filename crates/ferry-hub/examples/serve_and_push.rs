//! A hub on loopback serving a store, a client pushing a revision to it,
//! and another store pulling it back and reading a byte range remotely.
//!
//! cargo run --release -p ferry-hub --example serve_and_push

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use ferry_core::revision::{Entry, Revision};
use ferry_net::tls::{Identity, Trust};
use ferry_net::{Client, ConnectOptions, TransportChoice};
use ferry_service::{Access, AccessFile, HubService, Scope};
use ferry_store::Store;
use ferry_transfer::{pull, push, read_range, PullOptions, PushOptions};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (hub_dir, laptop_dir, other_dir) = (tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?);

    // The hub: a store, a write token, and the door on a free loopback port.
    let hub_store = Arc::new(Store::init(hub_dir.path())?);
    let token = AccessFile::edit(hub_dir.path(), |a| a.create_token("org/*", Scope::Write, 0))?;
    let service = Arc::new(HubService::new(hub_store, Arc::new(Access::for_store(hub_dir.path()))));
    let identity = Identity::load_or_create(hub_dir.path())?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let opts = ferry_hub::ServeOptions {
        listen: "127.0.0.1:0".parse()?,
        idle_timeout: Duration::from_secs(30),
        max_connections: 64,
        max_unauthenticated: 16,
        memory_budget: ferry_hub::DEFAULT_MEMORY_BUDGET,
    };
    tokio::spawn(async move {
        let _ = ferry_hub::serve(service, &identity, opts, |addr| {
            let _ = tx.send(addr);
        })
        .await;
    });
    let addr = rx.await?;
    println!("hub listening on {addr}");

    // A local store with one revision.
    let laptop = Arc::new(Store::init(laptop_dir.path())?);
    let session = laptop.write_session();
    let bytes: Vec<u8> = (0..4u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let file = session.ingest(Cursor::new(bytes.clone()), &())?;
    let entry = Entry { path: "model.bin".into(), file_id: file.file_id, size: file.size, executable: false };
    session.commit("org/model", "main", None, &Revision::new(vec![], "demo".into(), 0, "v1".into(), vec![entry])?)?;
    drop(session);

    let connect = ConnectOptions {
        hub: addr.to_string(),
        token: Some(token),
        transport: TransportChoice::Auto,
        trust: Trust::KnownHubs(laptop_dir.path().join("known_hubs")),
    };
    let client = Client::connect(&connect).await?;
    println!("connected over {}; pinned certificate {}", client.transport(), client.pinned().unwrap_or("(already known)"));
    let pushed = push(&client, &laptop, &PushOptions { repo: "org/model".into(), branch: "main".into() }, &()).await?;
    println!("pushed {} chunks ({} bytes on the wire)", pushed.chunks_moved, pushed.wire_bytes_sent);

    let other = Arc::new(Store::init(other_dir.path())?);
    let pulled = pull(&client, &other, &PullOptions { repo: "org/model".into(), branch: "main".into(), include: vec![] }, &()).await?;
    println!("pulled {} chunks into another store", pulled.chunks_moved);

    let mut range = Vec::new();
    let size = read_range(&client, "org/model", "main", "model.bin", Some((1000, Some(1016))), &mut range).await?;
    assert_eq!(range, bytes[1000..1016]);
    println!("read bytes 1000..1016 of {size} remotely: {range:02x?}");
    client.close().await;
    Ok(())
}
