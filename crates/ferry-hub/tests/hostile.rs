//! Hostile clients against a real `ferry serve` process on loopback: bytes
//! that do not match their ids, decompression bombs, escaping paths, lying
//! and oversized frames, unknown frame types, and clients that go silent.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use ferry_core::revision::{Entry, Revision};
use ferry_core::Id;
use ferry_hub::tls::Trust;
use ferry_hub::{Client, ConnectOptions, HubError, TransportChoice};
use ferry_proto::{ErrorCode, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn ferry_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("ferry");
    assert!(bin.exists(), "build the ferry binary first (cargo build --release --workspace)");
    bin
}

struct Hub {
    child: Child,
    addr: String,
    token: String,
    _dir: tempfile::TempDir,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_hub() -> Hub {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("hub");
    let run = |args: &[&str]| {
        let out = Command::new(ferry_bin()).arg("--store").arg(&store).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["init"]);
    let token = run(&["token", "create", "--repo", "org/*", "--scope", "write"]).trim().to_owned();
    let mut child =
        Command::new(ferry_bin()).arg("--store").arg(&store).args(["--json", "serve", "--listen", "127.0.0.1:0"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    Hub { child, addr: v["listen"].as_str().unwrap().to_owned(), token, _dir: dir }
}

async fn connect(hub: &Hub, dir: &Path, transport: TransportChoice) -> Client {
    Client::connect(&ConnectOptions { hub: hub.addr.clone(), token: Some(hub.token.clone()), transport, trust: Trust::KnownHubs(dir.join("known")) })
        .await
        .unwrap()
}

fn refused(r: Result<Vec<Message>, HubError>) -> (ErrorCode, String) {
    match r {
        Err(HubError::Remote { code, message }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

#[test]
fn chunks_that_do_not_match_their_ids_and_bombs_are_refused_and_nothing_is_stored() {
    let hub = start_hub();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let c = connect(&hub, dir.path(), TransportChoice::Quic).await;
        let good = ferry_core::codec::Encoder::new(1).encode(b"honest bytes");
        let good_id = Id::of_chunk(b"honest bytes");
        let liar = Id::of_chunk(b"other bytes");
        // One bad chunk in a batch: the whole batch is refused.
        let (code, msg) = refused(c.request(&Message::PutChunks { repo: "org/x".into(), chunks: vec![(good_id, good.clone()), (liar, good.clone())] }).await);
        assert_eq!(code, ErrorCode::Corrupt, "{msg}");
        assert!(msg.contains("failed verification") && msg.contains("nothing"), "{msg}");
        let have = c.request(&Message::HaveChunks { repo: "org/x".into(), ids: vec![good_id] }).await.unwrap();
        assert_eq!(have, vec![Message::Bitmap { bits: vec![false] }], "a chunk from a refused batch was stored");
        // A zstd frame that inflates past its declared length.
        let bomb_payload = zstd::bulk::compress(&vec![0u8; 4 << 20], 19).unwrap();
        let mut bomb = vec![1u8];
        bomb.extend_from_slice(&(256u32 * 1024).to_le_bytes());
        bomb.extend_from_slice(&bomb_payload);
        let (code, msg) = refused(c.request(&Message::PutChunks { repo: "org/x".into(), chunks: vec![(Id::of_chunk(&vec![0u8; 256 * 1024]), bomb)] }).await);
        assert_eq!(code, ErrorCode::BadRequest, "{msg}");
    });
}

#[test]
fn revisions_with_escaping_paths_or_missing_data_are_refused() {
    let hub = start_hub();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let c = connect(&hub, dir.path(), TransportChoice::Quic).await;
        // Build the encoding by hand: Revision::new would refuse it.
        let ok = Revision::new(
            vec![],
            "x".into(),
            0,
            "m".into(),
            vec![Entry { path: "aaaaaaaaaaaaa".into(), file_id: Id::of_chunk(b"f"), size: 1, executable: false }],
        )
        .unwrap();
        let evil = ok.encode().to_vec();
        let at = evil.windows(13).position(|w| w == b"aaaaaaaaaaaaa").unwrap();
        let mut evil = evil;
        evil[at..at + 13].copy_from_slice(b"../../etc/pwn");
        let id = ferry_core::revision::revision_id(&evil);
        let (code, msg) =
            refused(c.request(&Message::UpdateBranch { repo: "org/x".into(), branch: "main".into(), expected: None, new: id, revisions: vec![evil] }).await);
        assert_eq!(code, ErrorCode::BadRequest, "{msg}");
        assert!(msg.contains("path"), "{msg}");
        // A well-formed revision whose file was never sent.
        let (code, msg) = refused(
            c.request(&Message::UpdateBranch { repo: "org/x".into(), branch: "main".into(), expected: None, new: ok.id(), revisions: vec![ok.encode()] }).await,
        );
        assert_eq!(code, ErrorCode::Incomplete, "{msg}");
        // A node whose chunk is missing.
        let node = ferry_core::tree::Node { height: 1, children: vec![ferry_core::tree::Child { id: Id::of_chunk(b"never sent"), size: 10 }] };
        let (code, _) = refused(c.request(&Message::PutNodes { repo: "org/x".into(), nodes: vec![node.encode()] }).await);
        assert_eq!(code, ErrorCode::Incomplete);
        // Other repositories are not writable with an org/* token.
        let (code, _) = refused(c.request(&Message::HaveChunks { repo: "evil/x".into(), ids: vec![] }).await);
        assert_eq!(code, ErrorCode::NotFound);
    });
}

/// A raw TLS-over-TCP connection, to send bytes no honest client would.
async fn raw_tls(hub: &Hub) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    #[derive(Debug)]
    struct AnyCert;
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            ferry_hub::tls::provider().signature_verification_algorithms.supported_schemes()
        }
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(ferry_hub::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ferry_proto::ALPN.to_vec()];
    let tcp = tokio::net::TcpStream::connect(&hub.addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(rustls::pki_types::ServerName::try_from("hub.example").unwrap(), tcp).await.unwrap()
}

async fn read_all(s: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    let mut out = Vec::new();
    let r = tokio::time::timeout(std::time::Duration::from_secs(40), s.read_to_end(&mut out)).await;
    let _ = r;
    out
}

#[test]
fn malformed_frames_get_an_error_or_a_closed_connection_and_the_hub_survives() {
    let hub = start_hub();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        // Unknown frame type instead of Hello.
        let mut s = raw_tls(&hub).await;
        s.write_all(&[0x7f, 0, 0, 0, 0]).await.unwrap();
        let reply = read_all(&mut s).await;
        let mut d = ferry_proto::FrameDecoder::new();
        d.push(&reply);
        let (kind, payload) = d.next_frame().unwrap().expect("an error frame");
        let m = Message::decode(kind, &payload).unwrap();
        assert!(matches!(m, Message::Error { code: ErrorCode::BadRequest, .. }) || reply.is_empty(), "{m:?}");
        // A frame header claiming more than the limit.
        let mut s = raw_tls(&hub).await;
        s.write_all(&[0x01, 0xff, 0xff, 0xff, 0x7f]).await.unwrap();
        let reply = read_all(&mut s).await;
        assert!(reply.is_empty() || reply[0] == ferry_proto::message::tag::ERROR);
        // A lying length: 1000 bytes announced, 10 sent, then silence. The
        // hub must not wait forever (its read timeout is 30 s).
        let mut s = raw_tls(&hub).await;
        s.write_all(&[0x01, 0xe8, 0x03, 0, 0]).await.unwrap();
        s.write_all(&[0u8; 10]).await.unwrap();
        let started = std::time::Instant::now();
        let _ = read_all(&mut s).await;
        assert!(started.elapsed() < std::time::Duration::from_secs(39), "a silent client held its connection open");
        // The hub still serves honest clients.
        let c = connect(&hub, dir.path(), TransportChoice::Tcp).await;
        let r = c.request(&Message::HaveChunks { repo: "org/x".into(), ids: vec![Id::of_chunk(b"z")] }).await.unwrap();
        assert_eq!(r, vec![Message::Bitmap { bits: vec![false] }]);
    });
}
