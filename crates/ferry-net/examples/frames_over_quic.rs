//! ferry-net on its own: a toy server built from its pieces (identity,
//! transport settings, frames on streams) that welcomes any Hello and
//! refuses every request, and the real client connecting to it, pinning
//! its certificate and sending a request.
//!
//! cargo run --release -p ferry-net --example frames_over_quic

use std::sync::Arc;

use ferry_net::tls::{Identity, Trust};
use ferry_net::wire::{read_message_patiently, write_message, Impatient};
use ferry_net::{Client, ConnectOptions, TransportChoice};
use ferry_proto::{ErrorCode, Message};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let identity = Identity::load_or_create(dir.path())?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(identity.server_config()?)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(ferry_net::transport_config()));
    let socket = ferry_net::udp_socket("127.0.0.1:0".parse()?)?;
    let endpoint = quinn::Endpoint::new(ferry_net::endpoint_config(None), Some(config), socket, Arc::new(quinn::TokioRuntime))?;
    let addr = endpoint.local_addr()?;

    tokio::spawn(async move {
        let Some(incoming) = endpoint.accept().await else { return };
        let Ok(conn) = incoming.await else { return };
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let answer = match read_message_patiently(&mut recv, &Impatient).await {
                Ok(Some(Message::Hello { .. })) => vec![Message::Welcome { version: ferry_proto::VERSION, server: "toy".into() }, Message::Done],
                _ => vec![Message::Error { code: ErrorCode::NotFound, message: "this toy server holds nothing".into() }],
            };
            for m in &answer {
                let _ = write_message(&mut send, m).await;
            }
            let _ = send.finish();
        }
    });

    let opts = ConnectOptions { hub: addr.to_string(), token: None, transport: TransportChoice::Quic, trust: Trust::KnownHubs(dir.path().join("known_hubs")) };
    let client = Client::connect(&opts).await?;
    println!("connected to {addr} over {}; pinned {}", client.transport(), client.pinned().unwrap_or("nothing"));
    println!("the server's identity is {}", identity.fingerprint);
    match client.request(&Message::ListRefs { repo: "org/model".into() }).await {
        Err(e) => println!("ListRefs: {e} (code {:?})", e.remote_code()),
        Ok(frames) => println!("ListRefs: {} frames", frames.len()),
    }
    client.close().await;
    Ok(())
}
