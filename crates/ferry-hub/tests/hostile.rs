//! Hostile clients against a real `ferry serve` process on loopback: bytes
//! that do not match their ids, decompression bombs, escaping and clashing
//! paths, lying and oversized frames, unknown frame types, requests for
//! gigabytes, floods of streams and connections, clients that go silent,
//! writes outside a token's repositories, token guessing and more
//! connections than the hub serves. Each is
//! refused with an error that says why (or its connection closed), the hub
//! keeps serving honest clients, and what it already stored is unharmed:
//! a revision pushed before the attack pulls back byte-identical, and the
//! hub's store passes fsck once the hub is stopped.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::revision::{Entry, Revision};
use ferry_core::Id;
use ferry_net::tls::Trust;
use ferry_net::{Client, ConnectOptions, NetError, TransportChoice};
use ferry_proto::{ErrorCode, Message};
use ferry_testkit::noise;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn ferry_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("ferry");
    assert!(bin.exists(), "build the ferry binary first (cargo build --release --workspace)");
    bin
}

/// Runs `ferry` and requires success; returns stdout.
fn ferry(store: &Path, args: &[&str]) -> String {
    let out = Command::new(ferry_bin()).arg("--store").arg(store).args(args).env_remove("FERRY_TOKEN").output().unwrap();
    assert!(out.status.success(), "ferry {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

struct Hub {
    child: Child,
    addr: String,
    token: String,
    store: PathBuf,
    dir: tempfile::TempDir,
    /// A revision pushed before any attack, and the files it holds.
    kept: (String, PathBuf),
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_hub() -> Hub {
    start_hub_with(&[], "127.0.0.1:0")
}

/// A hub with a write token for `org/*` and a revision of `org/kept`
/// already pushed to it.
fn start_hub_with(args: &[&str], listen: &str) -> Hub {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("hub");
    ferry(&store, &["init"]);
    let token = ferry(&store, &["token", "create", "--repo", "org/*", "--scope", "write"]).trim().to_owned();
    let mut child =
        Command::new(ferry_bin()).arg("--store").arg(&store).args(["--json", "serve", "--listen", listen]).args(args).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr = v["listen"].as_str().unwrap().to_owned();
    let (src, local) = (dir.path().join("kept-src"), dir.path().join("kept-local"));
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("model.bin"), noise(3 << 20, 42)).unwrap();
    std::fs::write(src.join("sub/config.json"), b"{\"kept\": true}").unwrap();
    ferry(&local, &["init"]);
    ferry(&local, &["commit", "org/kept", src.to_str().unwrap(), "-m", "kept"]);
    let pushed = client_cli(&local, &dir.path().join("known"), &token, &["--json", "push", &addr, "org/kept"]);
    assert!(pushed.status.success(), "{}", String::from_utf8_lossy(&pushed.stderr));
    let head = serde_json::from_slice::<serde_json::Value>(&pushed.stdout).unwrap()["head"].as_str().unwrap().to_owned();
    Hub { child, addr, token, store, dir, kept: (head, src) }
}

/// `ferry` as a client of the hub, with a token.
fn client_cli(store: &Path, known: &Path, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(ferry_bin()).arg("--store").arg(store).args(args).env("FERRY_KNOWN_HUBS", known).env("FERRY_TOKEN", token).output().unwrap()
}

impl Hub {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the hub stored before the attack is unharmed: it pulls back
    /// byte-identical, and once the hub is stopped its store passes fsck.
    fn check_unharmed(mut self) {
        let fresh = self.dir.path().join(format!("fresh-{}", std::process::id()));
        ferry(&fresh, &["init"]);
        let pulled = client_cli(&fresh, &self.dir.path().join("known"), &self.token, &["--json", "pull", &self.addr, "org/kept"]);
        assert!(pulled.status.success(), "pulling what was stored before the attack: {}", String::from_utf8_lossy(&pulled.stderr));
        let out = self.dir.path().join("kept-out");
        ferry(&fresh, &["export", &format!("org/kept@{}", self.kept.0), out.to_str().unwrap()]);
        for f in ["model.bin", "sub/config.json"] {
            assert!(std::fs::read(out.join(f)).unwrap() == std::fs::read(self.kept.1.join(f)).unwrap(), "{f} of the kept revision changed");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let fsck: serde_json::Value = serde_json::from_str(&ferry(&self.store, &["--json", "fsck"])).unwrap();
        assert_eq!(fsck["ok"], true, "{fsck}");
    }
}

fn peak_rss(pid: u32) -> u64 {
    ferry_tests::peak_rss(pid).expect("the hub is running")
}

async fn connect(hub: &Hub, dir: &Path, transport: TransportChoice) -> Client {
    Client::connect(&ConnectOptions { hub: hub.addr.clone(), token: Some(hub.token.clone()), transport, trust: Trust::KnownHubs(dir.join("known")) })
        .await
        .unwrap()
}

fn refused(r: Result<Vec<Message>, NetError>) -> (ErrorCode, String) {
    match r {
        Err(NetError::Remote { code, message }) => (code, message),
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
    hub.check_unharmed();
}

/// A revision encoded by hand, as `Revision::new` would refuse to: every
/// path names `file` (of `size` bytes).
fn encode_unchecked(paths: &[&str], file: Id, size: u64) -> Vec<u8> {
    fn put(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    }
    let mut out = b"FRV1".to_vec();
    out.push(0);
    put(&mut out, b"mallory");
    out.extend_from_slice(&0i64.to_le_bytes());
    put(&mut out, b"m");
    out.extend_from_slice(&(paths.len() as u32).to_le_bytes());
    for p in paths {
        put(&mut out, p.as_bytes());
        out.extend_from_slice(file.as_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.push(0);
    }
    out
}

/// A file of the revision the hub kept (`model.bin`, 3 MiB), as its entry.
async fn kept_file(hub: &Hub, c: &Client) -> Entry {
    let kept: Id = hub.kept.0.parse().unwrap();
    let revs = c.request(&Message::GetHistory { repo: "org/kept".into(), from: vec![kept], until: vec![], max: 1 }).await.unwrap();
    let Some(Message::Revisions { revisions }) = revs.first() else { panic!("{revs:?}") };
    Revision::decode(&revisions[0]).unwrap().entries[0].clone()
}

/// The branches of a repository on the hub.
async fn branches(c: &Client, repo: &str) -> Vec<(String, Id)> {
    match &c.request(&Message::ListRefs { repo: repo.into() }).await.unwrap()[..] {
        [Message::Refs { branches, .. }] => branches.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn revisions_with_escaping_or_clashing_paths_or_missing_data_are_refused() {
    let hub = start_hub();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let c = connect(&hub, dir.path(), TransportChoice::Quic).await;
        // A file the hub has, so that only the paths are wrong.
        let file = kept_file(&hub, &c).await;
        let update = |repo: &str, rev: Vec<u8>| Message::UpdateBranch {
            repo: repo.into(),
            branch: "main".into(),
            expected: None,
            new: ferry_core::revision::revision_id(&rev),
            revisions: vec![rev],
        };
        // The hand-made encoding is sound: with a decent path it is accepted.
        c.request(&update("org/control", encode_unchecked(&["fine.bin"], file.file_id, file.size))).await.unwrap();
        let long = "x".repeat(300);
        for (paths, why) in [
            (&["../../etc/pwn"][..], "'..' component"),
            (&["/etc/passwd"], "is absolute"),
            (&["a\0b"], "NUL byte"),
            (&["a\\..\\b"], "backslash"),
            (&[long.as_str()], "longer than 255"),
            (&["Model.bin", "model.bin"], "\"Model.bin\" and \"model.bin\" differ only in case"),
            (&["A", "a/b"], "differ only in case"),
            (&["a", "a/b"], "both a file and the directory"),
            (&["b", "a"], "not sorted"),
        ] {
            let (code, msg) = refused(c.request(&update("org/x", encode_unchecked(paths, file.file_id, file.size))).await);
            assert_eq!(code, ErrorCode::BadRequest, "{paths:?}: {msg}");
            assert!(msg.contains(why), "{paths:?}: {msg}");
            // Nothing of it was stored.
            let (code, _) = refused(c.request(&Message::ListRefs { repo: "org/x".into() }).await);
            assert_eq!(code, ErrorCode::NotFound, "{paths:?}: a refused revision created its repository");
        }
        // A well-formed revision whose file was never sent.
        let ok = Revision::new(vec![], "x".into(), 0, "m".into(), vec![Entry { path: "f".into(), file_id: Id::of_chunk(b"f"), size: 1, executable: false }])
            .unwrap();
        let (code, msg) = refused(c.request(&update("org/x", ok.encode())).await);
        assert_eq!(code, ErrorCode::Incomplete, "{msg}");
        // A node whose chunk is missing.
        let node = ferry_core::tree::Node { height: 1, children: vec![ferry_core::tree::Child { id: Id::of_chunk(b"never sent"), size: 10 }] };
        let (code, _) = refused(c.request(&Message::PutNodes { repo: "org/x".into(), nodes: vec![node.encode()] }).await);
        assert_eq!(code, ErrorCode::Incomplete);
    });
    hub.check_unharmed();
}

#[test]
fn a_revision_that_lies_about_a_files_size_is_refused_and_the_branch_stays() {
    let hub = start_hub();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let c = connect(&hub, dir.path(), TransportChoice::Quic).await;
        let kept: Id = hub.kept.0.parse().unwrap();
        // A stored 3 MiB file, claimed to be 50 MB.
        let file = kept_file(&hub, &c).await;
        let lie = encode_unchecked(&["model.bin"], file.file_id, 50_000_000);
        let lie_id = ferry_core::revision::revision_id(&lie);
        for req in [
            Message::PutRevisions { repo: "org/kept".into(), revisions: vec![lie.clone()] },
            Message::UpdateBranch { repo: "org/kept".into(), branch: "main".into(), expected: Some(kept), new: lie_id, revisions: vec![lie.clone()] },
            Message::UpdateBranch { repo: "org/kept".into(), branch: "big".into(), expected: None, new: lie_id, revisions: vec![lie.clone()] },
        ] {
            let (code, msg) = refused(c.request(&req).await);
            assert_eq!(code, ErrorCode::BadRequest, "{req:?}: {msg}");
            assert!(msg.contains("50000000") && msg.contains(&format!("holds {} bytes", file.size)), "{msg}");
        }
        assert_eq!(branches(&c, "org/kept").await, vec![("main".to_string(), kept)], "a lying revision moved a branch");
        let have = c.request(&Message::HaveRevisions { repo: "org/kept".into(), ids: vec![lie_id] }).await.unwrap();
        assert_eq!(have, vec![Message::Bitmap { bits: vec![false] }], "a lying revision was stored");
        // The same revision telling the truth is accepted.
        c.request(&Message::PutRevisions { repo: "org/kept".into(), revisions: vec![encode_unchecked(&["model.bin"], file.file_id, file.size)] })
            .await
            .unwrap();
    });
    hub.check_unharmed();
}

#[test]
fn a_missing_parent_or_an_unknown_new_head_is_incomplete() {
    let hub = start_hub();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let c = connect(&hub, dir.path(), TransportChoice::Quic).await;
        let file = kept_file(&hub, &c).await;
        let orphan = Revision::new(vec![Id::of_chunk(b"a parent never sent")], "x".into(), 0, "m".into(), vec![file]).unwrap();
        let update = |new: Id, revisions: Vec<Vec<u8>>| Message::UpdateBranch { repo: "org/x".into(), branch: "main".into(), expected: None, new, revisions };
        for (req, why) in [
            (Message::PutRevisions { repo: "org/x".into(), revisions: vec![orphan.encode()] }, "parent"),
            (update(orphan.id(), vec![orphan.encode()]), "parent"),
            (update(Id::of_chunk(b"no such revision"), vec![]), "new head"),
        ] {
            let (code, msg) = refused(c.request(&req).await);
            assert_eq!(code, ErrorCode::Incomplete, "{req:?}: {msg}");
            assert!(msg.contains(why) && msg.contains("neither stored nor sent"), "{msg}");
        }
        let (code, _) = refused(c.request(&Message::ListRefs { repo: "org/x".into() }).await);
        assert_eq!(code, ErrorCode::NotFound, "a refused update created its repository");
    });
    hub.check_unharmed();
}

#[test]
fn a_repository_or_branch_whose_name_differs_only_in_case_from_an_existing_one_is_refused() {
    let hub = start_hub();
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let c = connect(&hub, dir.path(), TransportChoice::Quic).await;
        let kept: Id = hub.kept.0.parse().unwrap();
        // The kept revision is stored, so only the names are wrong.
        let update =
            |repo: &str, branch: &str| Message::UpdateBranch { repo: repo.into(), branch: branch.into(), expected: None, new: kept, revisions: vec![] };
        for (repo, branch, existing) in [("org/KEPT", "main", "repository \"org/kept\""), ("org/kept", "MAIN", "branch \"main\"")] {
            let (code, msg) = refused(c.request(&update(repo, branch)).await);
            assert_eq!(code, ErrorCode::BadRequest, "{repo}@{branch}: {msg}");
            assert!(msg.contains("only in case") && msg.contains(existing), "{repo}@{branch}: {msg}");
        }
        let (code, _) = refused(c.request(&Message::ListRefs { repo: "org/KEPT".into() }).await);
        assert_eq!(code, ErrorCode::NotFound, "org/KEPT was created beside org/kept");
        assert_eq!(branches(&c, "org/kept").await, vec![("main".to_string(), kept)], "MAIN was created beside main");
        // Names that differ in more than case are taken.
        c.request(&update("org/kept2", "main")).await.unwrap();
        c.request(&update("org/kept", "main2")).await.unwrap();
    });
    hub.check_unharmed();
}

#[test]
fn writes_outside_the_tokens_repositories_are_refused_and_store_nothing() {
    let hub = start_hub();
    let dir = tempfile::tempdir().unwrap();
    let read_token = ferry(&hub.store, &["token", "create", "--repo", "org/kept", "--scope", "read"]).trim().to_owned();
    // With the ferry CLI: a push to a repository the token does not cover,
    // and a push with a read token.
    let local = dir.path().join("local");
    ferry(&local, &["init"]);
    ferry(&local, &["commit", "other/x", hub.kept.1.to_str().unwrap(), "-m", "m"]);
    ferry(&local, &["commit", "org/kept", hub.kept.1.to_str().unwrap(), "-m", "m2", "--branch", "side"]);
    let known = dir.path().join("known");
    let out = client_cli(&local, &known, &hub.token, &["push", &hub.addr, "other/x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not found (or your token does not grant access to it)"), "{err}");
    let out = client_cli(&local, &known, &read_token, &["push", &hub.addr, "org/kept", "--branch", "side"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("you may read org/kept but not write to it"), "{err}");
    rt().block_on(async {
        // Request by request, as a hostile client would.
        let raw = noise(50_000, 3);
        let id = Id::of_chunk(&raw);
        let rec = ferry_core::codec::Encoder::new(1).encode(&raw);
        let node = ferry_core::tree::Node { height: 1, children: vec![ferry_core::tree::Child { id, size: raw.len() as u64 }] };
        let rev =
            Revision::new(vec![], "m".into(), 0, "m".into(), vec![Entry { path: "f".into(), file_id: node.id(), size: raw.len() as u64, executable: false }])
                .unwrap();
        let writes = |repo: &str| {
            vec![
                Message::PutChunks { repo: repo.into(), chunks: vec![(id, rec.clone())] },
                Message::PutNodes { repo: repo.into(), nodes: vec![node.encode()] },
                Message::HaveChunks { repo: repo.into(), ids: vec![id] },
                Message::UpdateBranch { repo: repo.into(), branch: "main".into(), expected: None, new: rev.id(), revisions: vec![rev.encode()] },
            ]
        };
        let c = connect(&hub, dir.path(), TransportChoice::Quic).await;
        for req in writes("evil/x") {
            let (code, msg) = refused(c.request(&req).await);
            assert_eq!(code, ErrorCode::NotFound, "{req:?}: {msg}");
        }
        let reader = Client::connect(&ConnectOptions {
            hub: hub.addr.clone(),
            token: Some(read_token.clone()),
            transport: TransportChoice::Tcp,
            trust: Trust::KnownHubs(dir.path().join("known")),
        })
        .await
        .unwrap();
        for req in writes("org/kept") {
            let (code, msg) = refused(reader.request(&req).await);
            assert_eq!(code, ErrorCode::Forbidden, "{req:?}: {msg}");
        }
        // None of it was stored.
        let have = c.request(&Message::HaveChunks { repo: "org/x".into(), ids: vec![id] }).await.unwrap();
        assert_eq!(have, vec![Message::Bitmap { bits: vec![false] }], "a refused write stored its chunk");
    });
    hub.check_unharmed();
}

/// TLS that accepts any certificate, for raw connections.
fn any_cert_tls() -> rustls::ClientConfig {
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
            ferry_net::tls::provider().signature_verification_algorithms.supported_schemes()
        }
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(ferry_net::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ferry_proto::ALPN.to_vec()];
    cfg
}

/// A raw TLS-over-TCP connection, to send bytes no honest client would.
async fn raw_tls(hub: &Hub) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(&hub.addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(any_cert_tls())).connect(rustls::pki_types::ServerName::try_from("hub.example").unwrap(), tcp).await.unwrap()
}

/// A raw QUIC connection that has said Hello with `token`: streams are the
/// test's to open (or not).
async fn raw_quic(hub: &Hub, token: &str) -> quinn::Connection {
    raw_quic_to(&hub.addr, token).await
}

async fn raw_quic_to(addr: &str, token: &str) -> quinn::Connection {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(any_cert_tls()).unwrap();
    let mut ep = quinn::Endpoint::client("0.0.0.0:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = ep.connect(addr.parse().unwrap(), "hub.example").unwrap().await.unwrap();
    let hello = Message::Hello { versions: vec![ferry_proto::VERSION], token: token.into(), client: "hostile".into() };
    let reply = ask(&conn, &hello).await;
    assert!(matches!(reply.first(), Some(Message::Welcome { .. })), "{reply:?}");
    conn
}

/// One request on its own stream; every frame of the answer.
async fn ask(conn: &quinn::Connection, req: &Message) -> Vec<Message> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&req.to_frame()).await.unwrap();
    send.finish().unwrap();
    let mut out = Vec::new();
    while let Some(m) = read_frame(&mut recv).await {
        out.push(m);
    }
    out
}

/// Walks `repo` from revision `head` down to its chunks on `conn`, as a
/// pull does (what the hub then lets the connection read by id); returns
/// the chunks, with their sizes.
async fn walk_to_chunks(conn: &quinn::Connection, repo: &str, head: Id) -> Vec<(Id, u64)> {
    let revs = ask(conn, &Message::GetHistory { repo: repo.into(), from: vec![head], until: vec![], max: 1 }).await;
    let Some(Message::Revisions { revisions }) = revs.first() else { panic!("{revs:?}") };
    let mut level: Vec<Id> = Revision::decode(&revisions[0]).unwrap().entries.iter().map(|e| e.file_id).collect();
    let mut chunks = Vec::new();
    while !level.is_empty() {
        let mut next = Vec::new();
        for m in ask(conn, &Message::GetNodes { repo: repo.into(), ids: level }).await {
            match m {
                Message::Nodes { nodes } => {
                    for bytes in nodes {
                        let node = ferry_core::tree::Node::decode(&bytes).unwrap();
                        for c in node.children {
                            if node.height == 1 {
                                chunks.push((c.id, c.size));
                            } else {
                                next.push(c.id);
                            }
                        }
                    }
                }
                Message::Done => {}
                other => panic!("{other:?}"),
            }
        }
        level = next;
    }
    chunks
}

/// The largest chunk of the revision the hub kept, shown to `conn`.
async fn largest_kept_chunk(hub: &Hub, conn: &quinn::Connection) -> Id {
    let chunks = walk_to_chunks(conn, "org/kept", hub.kept.0.parse().unwrap()).await;
    chunks.iter().max_by_key(|c| c.1).unwrap().0
}

/// Chunks in the answers to a GetChunks.
fn chunks_in(answer: &[Message]) -> usize {
    answer.iter().map(|m| if let Message::Chunks { chunks } = m { chunks.len() } else { 0 }).sum()
}

/// The next frame on a stream, None at its end.
async fn read_frame(recv: &mut quinn::RecvStream) -> Option<Message> {
    let mut h = [0u8; ferry_proto::frame::HEADER_LEN];
    recv.read_exact(&mut h).await.ok()?;
    let (kind, len) = ferry_proto::frame::decode_header(&h).unwrap();
    let mut payload = vec![0u8; len];
    recv.read_exact(&mut payload).await.unwrap();
    Some(Message::decode(kind, &payload).unwrap())
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
    hub.check_unharmed();
}

#[test]
fn a_request_for_gigabytes_costs_the_hub_a_frame_of_memory_not_the_gigabytes() {
    const STREAMS: usize = 4;
    let hub = start_hub();
    let before = peak_rss(hub.pid());
    rt().block_on(async {
        // The largest chunk of a kept file (incompressible noise), asked
        // 16 384 times in one request (gigabytes of answer), on four
        // streams at once, by a client that reads one frame and stops.
        let conn = raw_quic(&hub, &hub.token).await;
        let id = largest_kept_chunk(&hub, &conn).await;
        let mut streams = Vec::new();
        for _ in 0..STREAMS {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(&Message::GetChunks { repo: "org/kept".into(), ids: vec![id; 16_384] }.to_frame()).await.unwrap();
            send.finish().unwrap();
            streams.push(tokio::spawn(async move {
                match read_frame(&mut recv).await {
                    Some(Message::Chunks { chunks }) => assert!(chunks.iter().all(|(i, r)| *i == id && ferry_core::codec::decode_verified(i, r).is_ok())),
                    other => panic!("expected chunks, got {other:?}"),
                }
                recv
            }));
        }
        let mut stalled = Vec::new();
        for s in streams {
            stalled.push(s.await.unwrap());
        }
        // Give the hub time to build whatever it builds.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let peak = peak_rss(hub.pid());
        assert!(peak < before + (1 << 30), "the hub's peak RSS went from {} MiB to {} MiB", before >> 20, peak >> 20);
        drop(stalled);
        conn.close(0u32.into(), b"done");
        // An honest client asking the same still gets every copy (on a new
        // connection: the first may have been idle for longer than the
        // hub waits).
        let conn = raw_quic(&hub, &hub.token).await;
        largest_kept_chunk(&hub, &conn).await;
        assert_eq!(chunks_in(&ask(&conn, &Message::GetChunks { repo: "org/kept".into(), ids: vec![id; 100] }).await), 100);
    });
    hub.check_unharmed();
}

#[test]
fn token_holders_that_ask_for_gigabytes_on_many_connections_hold_the_hub_to_its_memory_budget() {
    const BUDGET_MIB: u64 = 256;
    const CONNECTIONS: usize = 12;
    const STREAMS: usize = 16;
    let hub = start_hub_with(&["--memory-budget-mib", &BUDGET_MIB.to_string()], "127.0.0.1:0");
    rt().block_on(async {
        let before = peak_rss(hub.pid());
        // Every connection asks for 4 GiB on every stream it may open, and
        // reads at most the first frame of each answer.
        let mut conns = Vec::new();
        let mut firsts = Vec::new();
        // Each connection is first shown the chunk it will ask for.
        let mut shown = Vec::new();
        for _ in 0..CONNECTIONS {
            let conn = raw_quic(&hub, &hub.token).await;
            let id = largest_kept_chunk(&hub, &conn).await;
            shown.push((conn, id));
        }
        for (conn, id) in shown {
            for _ in 0..STREAMS {
                // Opened, written and read in a task of its own: a request
                // waiting for its turn is not read, so its writer waits too.
                let conn = conn.clone();
                firsts.push(tokio::spawn(async move {
                    let mut streams = None;
                    let ask = async {
                        let (send, recv) = streams.insert(conn.open_bi().await.unwrap());
                        // A request answered busy is not read: the hub stops
                        // the stream, and the answer is what tells.
                        let _ = send.write_all(&Message::GetChunks { repo: "org/kept".into(), ids: vec![id; 16_384] }.to_frame()).await;
                        let _ = send.finish();
                        read_frame(recv).await
                    };
                    let first = tokio::time::timeout(Duration::from_secs(20), ask).await;
                    (first, streams)
                }));
            }
            conns.push(conn);
        }
        let (mut served, mut busy, mut waiting) = (0, 0, 0);
        let mut stalled = Vec::new();
        for f in firsts {
            let (first, streams) = f.await.unwrap();
            match first {
                Ok(Some(Message::Chunks { .. })) => served += 1,
                Ok(Some(Message::Error { code: ErrorCode::RateLimited, message })) if message.contains("memory budget") => busy += 1,
                Err(_) => waiting += 1,
                other => panic!("expected chunks, a busy answer or a wait; got {other:?}"),
            }
            stalled.push(streams);
        }
        let peak = peak_rss(hub.pid());
        assert!(served > 0 && busy > 0, "served {served}, busy {busy}, still waiting {waiting}");
        assert!(
            peak < before + ((BUDGET_MIB + 96) << 20),
            "the hub's peak RSS went from {} MiB to {} MiB under a {BUDGET_MIB} MiB budget",
            before >> 20,
            peak >> 20
        );
        drop(stalled);
        for conn in conns {
            conn.close(0u32.into(), b"done");
        }
        // Once they are gone, an honest client is served in full.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let conn = raw_quic(&hub, &hub.token).await;
        let id = largest_kept_chunk(&hub, &conn).await;
        assert_eq!(chunks_in(&ask(&conn, &Message::GetChunks { repo: "org/kept".into(), ids: vec![id; 100] }).await), 100);
        eprintln!("memory budget {BUDGET_MIB} MiB: peak RSS {} -> {} MiB; {served} answers served, {busy} busy, {waiting} queued", before >> 20, peak >> 20);
    });
    hub.check_unharmed();
}

/// A new revision pushed with the ferry CLI and pulled back into another
/// store, byte-identical: the hub serves honest clients.
fn honest_round_trip(hub: &Hub, addr: &str, name: &str) {
    let dir = hub.dir.path().join(name);
    let (src, a, b, out) = (dir.join("src"), dir.join("a"), dir.join("b"), dir.join("out"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("w.bin"), noise(2 << 20, name.len() as u64 + 100)).unwrap();
    ferry(&a, &["init"]);
    ferry(&b, &["init"]);
    ferry(&a, &["commit", "org/honest", src.to_str().unwrap(), "-m", name, "--branch", name]);
    let known = dir.join("known");
    for (store, verb) in [(&a, "push"), (&b, "pull")] {
        let r = client_cli(store, &known, &hub.token, &[verb, addr, "org/honest", "--branch", name]);
        assert!(r.status.success(), "an honest {verb} failed: {}", String::from_utf8_lossy(&r.stderr));
    }
    ferry(&b, &["export", &format!("org/honest@{name}"), out.to_str().unwrap()]);
    assert!(std::fs::read(out.join("w.bin")).unwrap() == std::fs::read(src.join("w.bin")).unwrap());
}

#[test]
fn token_guessing_is_rate_limited_per_address_and_the_right_token_works_elsewhere_and_afterwards() {
    // Dual-stack, so that one machine can come from two addresses: 127.0.0.1 and ::1.
    let hub = start_hub_with(&[], "[::]:0");
    let port = hub.addr.rsplit(':').next().unwrap().to_owned();
    let (v4, v6) = (format!("127.0.0.1:{port}"), format!("[::1]:{port}"));
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    rt().block_on(async {
        let known = dir.path().join("known");
        let attempt = async |addr: &str, token: &str, transport| {
            Client::connect(&ConnectOptions { hub: addr.into(), token: Some(token.into()), transport, trust: Trust::KnownHubs(known.clone()) }).await
        };
        let mut codes = Vec::new();
        for i in 0..7 {
            match attempt(&v4, &format!("fy_0123456789abcdef_guess{i}"), if i % 2 == 0 { TransportChoice::Quic } else { TransportChoice::Tcp }).await {
                Err(NetError::Remote { code, message }) => codes.push((code, message)),
                Err(e) => panic!("guess {i}: {e}"),
                Ok(_) => panic!("guess {i} was let in"),
            }
        }
        assert!(codes[..5].iter().all(|c| c.0 == ErrorCode::Unauthorized && c.1.contains("not valid")), "{codes:?}");
        assert!(codes[5..].iter().all(|c| c.0 == ErrorCode::RateLimited && c.1.contains("wait a minute")), "{codes:?}");
        // From that address even the right token waits out the minute...
        match attempt(&v4, &hub.token, TransportChoice::Quic).await {
            Err(NetError::Remote { code: ErrorCode::RateLimited, .. }) => {}
            other => panic!("the right token from a rate-limited address: {:?}", other.map(|_| "let in")),
        }
        // ...while from another address it works at once, on either transport.
        for transport in [TransportChoice::Quic, TransportChoice::Tcp] {
            let c = attempt(&v6, &hub.token, transport).await.unwrap();
            assert!(matches!(c.request(&Message::ListRefs { repo: "org/kept".into() }).await.unwrap()[..], [Message::Refs { .. }]));
        }
    });
    honest_round_trip(&hub, &v6, "from-v6");
    // And after the minute, from the first address again.
    std::thread::sleep(Duration::from_secs(62).saturating_sub(started.elapsed()));
    honest_round_trip(&hub, &v4, "after-the-minute");
    hub.check_unharmed();
}

#[test]
fn floods_of_connections_and_streams_and_silent_clients_are_cut_off_while_honest_clients_carry_on() {
    let hub = start_hub_with(&["--idle-timeout", "2s"], "127.0.0.1:0");
    let before = peak_rss(hub.pid());
    rt().block_on(async {
        // Connections that say Hello and then nothing (their QUIC stacks still
        // answer keep-alives), opened a few at a time: one address may hold
        // only a few handshakes at once.
        let mut silent = Vec::new();
        for _ in 0..25 {
            let mut tasks = Vec::new();
            for _ in 0..8 {
                let (addr, token) = (hub.addr.clone(), hub.token.clone());
                tasks.push(tokio::spawn(async move { raw_quic_to(&addr, &token).await }));
            }
            for t in tasks {
                silent.push(t.await.unwrap());
            }
        }
        // One that opens every stream it may, sends a byte on each and goes quiet.
        let flood = raw_quic(&hub, &hub.token).await;
        let mut held = Vec::new();
        while let Ok(opened) = tokio::time::timeout(Duration::from_secs(1), flood.open_bi()).await {
            let (mut send, recv) = opened.unwrap();
            send.write_all(&[0x21]).await.unwrap();
            held.push((send, recv));
            assert!(held.len() <= 16, "the hub granted a 17th stream on one connection");
        }
        eprintln!("the flooding connection got {} streams", held.len());
        // TCP: a TLS connection that never says Hello, and a TCP connection that never starts TLS.
        let mut no_hello = raw_tls(&hub).await;
        let mut no_tls = tokio::net::TcpStream::connect(&hub.addr).await.unwrap();
        // Meanwhile, honest clients push and pull.
        tokio::task::block_in_place(|| honest_round_trip(&hub, &hub.addr, "during-the-flood"));
        // The hub lets go of every one of them: the silent after the idle
        // timeout, the flood once its reads timed out (30 s) and it idled.
        for (i, c) in silent.iter().enumerate() {
            match tokio::time::timeout(Duration::from_secs(60), c.closed()).await {
                Ok(quinn::ConnectionError::ApplicationClosed(close)) => assert_eq!(&close.reason[..], b"idle"),
                Ok(other) => panic!("silent connection {i} ended with {other}"),
                Err(_) => panic!("silent connection {i} is still open after a minute"),
            }
        }
        assert!(tokio::time::timeout(Duration::from_secs(90), flood.closed()).await.is_ok(), "the flooding connection is still open");
        let mut buf = Vec::new();
        assert!(tokio::time::timeout(Duration::from_secs(60), no_hello.read_to_end(&mut buf)).await.is_ok(), "a TLS connection without Hello is still open");
        assert!(tokio::time::timeout(Duration::from_secs(60), no_tls.read_to_end(&mut buf)).await.is_ok(), "a TCP connection without TLS is still open");
        drop(held);
    });
    let peak = peak_rss(hub.pid());
    eprintln!("hub peak RSS {} MiB before the floods, {} MiB after", before >> 20, peak >> 20);
    assert!(peak < before + (512 << 20), "the floods took the hub's peak RSS from {} MiB to {} MiB", before >> 20, peak >> 20);
    honest_round_trip(&hub, &hub.addr, "after-the-flood");
    hub.check_unharmed();
}

#[test]
fn a_hub_at_its_connection_limit_says_it_is_busy_and_serves_again_once_a_place_is_free() {
    let hub = start_hub_with(&["--max-connections", "2"], "127.0.0.1:0");
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let known = dir.path().join("known");
        let attempt = async |transport| {
            Client::connect(&ConnectOptions { hub: hub.addr.clone(), token: Some(hub.token.clone()), transport, trust: Trust::KnownHubs(known.clone()) }).await
        };
        // The push that start_hub_with made closed its connection on the way
        // out, so both places are free for these two.
        let a = raw_quic(&hub, &hub.token).await;
        let b = raw_quic(&hub, &hub.token).await;
        for transport in [TransportChoice::Quic, TransportChoice::Tcp, TransportChoice::Auto] {
            match attempt(transport).await {
                Err(NetError::Remote { code: ErrorCode::RateLimited, message }) => {
                    assert!(message.contains("busy") && message.contains("limit of 2 connections"), "{message}")
                }
                other => panic!("a third connection over {transport:?}: {:?}", other.map(|_| "let in")),
            }
        }
        // Those holding a place are served as before.
        assert!(matches!(ask(&a, &Message::ListRefs { repo: "org/kept".into() }).await[..], [Message::Refs { .. }, ..]));
        a.close(0u32.into(), b"done");
        let deadline = Instant::now() + Duration::from_secs(10);
        let c = loop {
            match attempt(TransportChoice::Quic).await {
                Ok(c) => break c,
                Err(NetError::Remote { code: ErrorCode::RateLimited, .. }) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("no place after a connection closed: {e}"),
            }
        };
        assert!(matches!(c.request(&Message::ListRefs { repo: "org/kept".into() }).await.unwrap()[..], [Message::Refs { .. }]));
        c.close().await;
        b.close(0u32.into(), b"done");
    });
    // A command-line client frees its place when it ends: one after another,
    // more of them than there are places, each finds one at once.
    for i in 0..3 {
        let store = dir.path().join(format!("cli-{i}"));
        ferry(&store, &["init"]);
        let r = client_cli(&store, &dir.path().join("known"), &hub.token, &["pull", &hub.addr, "org/kept"]);
        assert!(r.status.success(), "pull {i}: {}", String::from_utf8_lossy(&r.stderr));
    }
    hub.check_unharmed();
}

/// A QUIC connection from `local` (a loopback address) that has done its
/// TLS handshake and nothing else.
async fn bare_quic_from(addr: &str, local: &str) -> quinn::Connection {
    try_bare_quic_from(addr, local).await.expect("the hub refused a QUIC handshake")
}

async fn try_bare_quic_from(addr: &str, local: &str) -> Result<quinn::Connection, ()> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(any_cert_tls()).unwrap();
    let mut ep = quinn::Endpoint::client(format!("{local}:0").parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    ep.connect(addr.parse().unwrap(), "hub.example").unwrap().await.map_err(|_| ())
}

/// A TLS-over-TCP connection from `local` (a loopback address).
async fn raw_tls_from(addr: &str, local: &str, cfg: rustls::ClientConfig) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{local}:0").parse().unwrap())?;
    let tcp = socket.connect(addr.parse().unwrap()).await?;
    tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(rustls::pki_types::ServerName::try_from("hub.example").unwrap(), tcp).await
}

/// The application close code a QUIC connection ended with.
async fn close_code(conn: &quinn::Connection) -> Option<u64> {
    match tokio::time::timeout(Duration::from_secs(5), conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(c)) => Some(c.error_code.into_inner()),
        _ => None,
    }
}

/// Frames the hub sent on a TLS stream until it closed (or 15 s passed).
async fn frames_until_closed(s: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<Message> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out)).await;
    let mut d = ferry_proto::FrameDecoder::new();
    d.push(&out);
    let mut frames = Vec::new();
    while let Ok(Some((kind, payload))) = d.next_frame() {
        frames.push(Message::decode(kind, &payload).unwrap());
    }
    frames
}

fn hello(token: &str) -> Message {
    Message::Hello { versions: vec![ferry_proto::VERSION], token: token.into(), client: "hostile".into() }
}

#[test]
fn a_revoked_token_loses_its_rights_on_open_connections_and_they_are_closed_within_seconds() {
    let hub = start_hub();
    let dir = tempfile::tempdir().unwrap();
    let token = ferry(&hub.store, &["token", "create", "--repo", "org/*", "--scope", "write"]).trim().to_owned();
    let id = token.split('_').nth(1).unwrap().to_owned();
    rt().block_on(async {
        let quic = raw_quic(&hub, &token).await;
        let mut tcp = raw_tls(&hub).await;
        tcp.write_all(&hello(&token).to_frame()).await.unwrap();
        let mut d = ferry_proto::FrameDecoder::new();
        let mut buf = vec![0u8; 4096];
        while d.next_frame().unwrap().is_none() {
            let n = tcp.read(&mut buf).await.unwrap();
            d.push(&buf[..n]);
        }
        assert!(matches!(ask(&quic, &Message::ListRefs { repo: "org/kept".into() }).await[..], [Message::Refs { .. }, ..]));
        ferry(&hub.store, &["token", "revoke", &id]);
        let revoked = Instant::now();
        // The QUIC connection is closed with the "revoked" code, the TCP one
        // told so and closed, both within a few seconds.
        assert_eq!(close_code(&quic).await, Some(6), "QUIC close code after the token was revoked");
        let frames = frames_until_closed(&mut tcp).await;
        assert!(frames.iter().any(|m| matches!(m, Message::Error { code: ErrorCode::Unauthorized, message } if message.contains("revoked"))), "{frames:?}");
        assert!(revoked.elapsed() < Duration::from_secs(5), "closed only after {:?}", revoked.elapsed());
        // A new connection with it is refused; the hub's other tokens work.
        let again = Client::connect(&ConnectOptions {
            hub: hub.addr.clone(),
            token: Some(token.clone()),
            transport: TransportChoice::Quic,
            trust: Trust::KnownHubs(dir.path().join("known")),
        })
        .await;
        assert!(matches!(again, Err(NetError::Remote { code: ErrorCode::Unauthorized, .. })), "{:?}", again.map(|_| ()));
    });
    hub.check_unharmed();
}

#[test]
fn a_stranger_before_hello_costs_the_hub_a_few_kib() {
    let hub = start_hub();
    rt().block_on(async {
        // A Hello header claiming 8 MiB is refused on its header.
        let mut s = raw_tls(&hub).await;
        let mut header = vec![0x01];
        header.extend_from_slice(&(8u32 << 20).to_le_bytes());
        s.write_all(&header).await.unwrap();
        let frames = frames_until_closed(&mut s).await;
        assert!(matches!(&frames[..], [Message::Error { code: ErrorCode::BadRequest, message }] if message.contains("at most 1024")), "{frames:?}");
        // Strangers that never finish Hello: half over QUIC streaming data
        // (the hub's flow control stops each within a few KiB), half over
        // TLS/TCP with a Hello header and a trickle of its payload.
        // FERRY_STRANGERS=1024 measures the hub's default connection limit.
        let strangers: usize = std::env::var("FERRY_STRANGERS").ok().and_then(|v| v.parse().ok()).unwrap_or(48);
        // Resident now, not peak: pushing the kept revision peaked higher.
        let rss = || ferry_tests::rss(hub.pid()).expect("the hub is running");
        let before = rss();
        let mut quic = Vec::new();
        let mut tcp = Vec::new();
        for i in 0..strangers {
            let local = format!("127.0.0.{}", 3 + i / 12);
            if i % 2 == 0 {
                // Past the hub's limit for strangers, a handshake is refused.
                let Ok(conn) = tokio::time::timeout(Duration::from_secs(5), try_bare_quic_from(&hub.addr, &local)).await.unwrap_or(Err(())) else {
                    continue;
                };
                let Ok((mut send, _recv)) = conn.open_bi().await else { continue };
                // The write may complete into this side's own send buffer;
                // what leaves it is bounded by the credit the hub grants.
                let _ = tokio::time::timeout(Duration::from_millis(100), send.write_all(&vec![0x01u8; 2 << 20])).await;
                quic.push((conn, send));
            } else if let Ok(mut s) = raw_tls_from(&hub.addr, &local, any_cert_tls()).await {
                let mut partial = vec![0x01];
                partial.extend_from_slice(&600u32.to_le_bytes());
                partial.extend_from_slice(&[0u8; 100]);
                let _ = s.write_all(&partial).await;
                tcp.push(s);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (i, (conn, _)) in quic.iter().enumerate() {
            let sent = conn.stats().udp_tx.bytes;
            assert!(sent < 256 << 10, "connection {i} got {} KiB to the hub before Hello", sent >> 10);
        }
        let grown = rss().saturating_sub(before);
        assert!(grown < (16 << 20) + strangers as u64 * (64 << 10), "{strangers} strangers grew the hub by {} MiB", grown >> 20);
        ferry_tests::report(
            "hostile-strangers",
            &format!(
                "{strangers} strangers before Hello: {} held by the hub over QUIC streaming 2 MiB each, {} over TLS/TCP trickling a Hello, the rest refused before TLS; the hub's resident memory grew by {} KiB ({} KiB per stranger held)",
                quic.len(),
                tcp.len(),
                grown >> 10,
                (grown >> 10) / (quic.len() + tcp.len()).max(1) as u64
            ),
        );
    });
    hub.check_unharmed();
}

#[test]
fn slow_hellos_cannot_take_the_places_of_authenticated_clients() {
    let hub = start_hub_with(&["--max-connections", "8"], "127.0.0.1:0");
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        // From another address, as many slow Hellos as the hub would let in
        // (and more): each sends a byte a second.
        let frame = hello("").to_frame();
        let mut slow = Vec::new();
        for _ in 0..24 {
            if let Ok(s) = raw_tls_from(&hub.addr, "127.0.0.2", any_cert_tls()).await {
                slow.push(s);
            }
        }
        assert!(!slow.is_empty() && slow.len() <= ferry_hub::MAX_HANDSHAKES_PER_ADDRESS, "{} handshakes let in from one address", slow.len());
        let started = Instant::now();
        let trickle = async {
            for byte in &frame {
                for s in slow.iter_mut() {
                    let _ = s.write_all(&[*byte]).await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        // Meanwhile honest clients are served.
        let honest = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            for _ in 0..3 {
                let c = connect(&hub, dir.path(), TransportChoice::Quic).await;
                assert!(matches!(c.request(&Message::ListRefs { repo: "org/kept".into() }).await.unwrap()[..], [Message::Refs { .. }]));
                c.close().await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(13), async { tokio::join!(trickle, honest) }).await;
        // The slow ones were cut off at the Hello deadline.
        for s in slow.iter_mut() {
            let frames = frames_until_closed(s).await;
            assert!(matches!(&frames[..], [Message::Error { code: ErrorCode::BadRequest, message }] if message.contains("Hello")), "{frames:?}");
        }
        assert!(started.elapsed() < Duration::from_secs(frame.len() as u64 + 5), "a Hello sent a byte a second was waited for to its end");
    });
    hub.check_unharmed();
}

#[test]
fn the_change_feed_says_nothing_of_repositories_the_caller_may_not_read() {
    let hub = start_hub();
    let dir = tempfile::tempdir().unwrap();
    let secret = ferry(&hub.store, &["token", "create", "--repo", "secret/*", "--scope", "write"]).trim().to_owned();
    let reader = ferry(&hub.store, &["token", "create", "--repo", "org/*", "--scope", "read"]).trim().to_owned();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let local = dir.path().join("local");
    ferry(&local, &["init"]);
    rt().block_on(async {
        for token in ["", reader.as_str()] {
            let conn = raw_quic(&hub, token).await;
            let list =
                |since: u64, hub_id: [u8; 16], wait_ms: u32| Message::ListRepos { pattern: "*/*".into(), after: String::new(), since, hub: hub_id, wait_ms };
            let first = ask(&conn, &list(0, [0; 16], 0)).await;
            let Some(Message::Repos { hub: id, seq, .. }) = first.first().cloned() else { panic!("{first:?}") };
            // A push to a private repository while the caller long-polls.
            let n = seq + 1;
            std::fs::write(src.join("f.bin"), noise(1000, n)).unwrap();
            ferry(&local, &["commit", &format!("secret/x{n}"), src.to_str().unwrap(), "-m", "private"]);
            let request = list(seq, id, 3000);
            let poll = ask(&conn, &request);
            let push = async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let out = client_cli(&local, &dir.path().join("known"), &secret, &["push", &hub.addr, &format!("secret/x{n}")]);
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            };
            let started = Instant::now();
            let (answer, ()) = tokio::join!(poll, push);
            assert!(started.elapsed() >= Duration::from_millis(2500), "the long poll woke after {:?} for a private push", started.elapsed());
            match &answer[..] {
                [Message::Repos { seq: after, repos, .. }, Message::Done] => {
                    assert_eq!(*after, seq, "the feed position moved with a private repository");
                    assert!(repos.is_empty(), "{repos:?}");
                }
                other => panic!("{other:?}"),
            }
        }
    });
    hub.check_unharmed();
}

#[test]
fn handshakes_the_hub_refuses_say_why_with_an_error_frame_and_a_close_code_of_their_own() {
    let hub = start_hub();
    rt().block_on(async {
        let first_stream = async |conn: &quinn::Connection, bytes: &[u8]| {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(bytes).await.unwrap();
            send.finish().unwrap();
            read_frame(&mut recv).await
        };
        // An undecodable Hello, a wrong version, a bad token.
        let garbage = [0x01, 3, 0, 0, 0, 9, 9, 9];
        let old = Message::Hello { versions: vec![99], token: String::new(), client: "old".into() }.to_frame();
        let bad = hello("fy_nope_nope").to_frame();
        for (bytes, code, close) in [(&garbage[..], ErrorCode::BadRequest, 5), (&old, ErrorCode::UnsupportedVersion, 4), (&bad, ErrorCode::Unauthorized, 3)] {
            let conn = bare_quic_from(&hub.addr, "127.0.0.1").await;
            let reply = first_stream(&conn, bytes).await;
            assert!(matches!(&reply, Some(Message::Error { code: c, .. }) if *c == code), "{reply:?}");
            assert_eq!(close_code(&conn).await, Some(close), "close code after {code:?}");
        }
        // A request stream that ends before a request gets an answer.
        let conn = raw_quic(&hub, &hub.token).await;
        let reply = first_stream(&conn, &[]).await;
        assert!(matches!(reply, Some(Message::Error { code: ErrorCode::BadRequest, .. })), "{reply:?}");
        // TLS over TCP without ALPN ferry/1 is not served.
        let mut no_alpn = any_cert_tls();
        no_alpn.alpn_protocols.clear();
        if let Ok(mut s) = raw_tls_from(&hub.addr, "127.0.0.1", no_alpn).await {
            let _ = s.write_all(&hello(&hub.token).to_frame()).await;
            let frames = frames_until_closed(&mut s).await;
            assert!(!frames.iter().any(|m| matches!(m, Message::Welcome { .. })), "welcomed without ALPN: {frames:?}");
        }
    });
    hub.check_unharmed();
}

#[test]
fn objects_of_a_private_repository_cannot_be_read_by_id_through_another() {
    let hub = start_hub();
    let dir = tempfile::tempdir().unwrap();
    let secret = ferry(&hub.store, &["token", "create", "--repo", "secret/*", "--scope", "write"]).trim().to_owned();
    let reader = ferry(&hub.store, &["token", "create", "--repo", "org/*", "--scope", "read"]).trim().to_owned();
    ferry(&hub.store, &["visibility", "org/*", "public"]);
    // A private repository whose ids leaked (the attacker holds the file,
    // or was told its ids), and one chunk it shares with org/kept.
    let (src, local) = (dir.path().join("src"), dir.path().join("local"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("weights.bin"), noise(1 << 20, 77)).unwrap();
    ferry(&local, &["init"]);
    ferry(&local, &["commit", "secret/x", src.to_str().unwrap(), "-m", "private"]);
    let out = client_cli(&local, &dir.path().join("known"), &secret, &["--json", "push", &hub.addr, "secret/x"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rev: Id = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["head"].as_str().unwrap().parse().unwrap();
    rt().block_on(async {
        let owner = raw_quic(&hub, &secret).await;
        let secret_chunks = walk_to_chunks(&owner, "secret/x", rev).await;
        let revs = ask(&owner, &Message::GetHistory { repo: "secret/x".into(), from: vec![rev], until: vec![], max: 1 }).await;
        let Some(Message::Revisions { revisions }) = revs.first() else { panic!("{revs:?}") };
        let root = Revision::decode(&revisions[0]).unwrap().entries[0].file_id;
        let chunk = secret_chunks[0].0;
        let unknown = Id::of_chunk(b"never stored");
        for token in ["", reader.as_str(), hub.token.as_str()] {
            let conn = raw_quic(&hub, token).await;
            // Allowed to read org/kept, and shown all of it first.
            let kept = walk_to_chunks(&conn, "org/kept", hub.kept.0.parse().unwrap()).await;
            assert!(!kept.is_empty());
            for repo in ["org/kept", "secret/x"] {
                let private = ask(&conn, &Message::GetChunks { repo: repo.into(), ids: vec![chunk] }).await;
                let missing = ask(&conn, &Message::GetChunks { repo: repo.into(), ids: vec![unknown] }).await;
                assert!(
                    matches!(&private[..], [Message::Error { code: ErrorCode::NotFound, .. }]),
                    "{token:?} read a private chunk through {repo}: {private:?}"
                );
                assert_eq!(same_words(&private, &chunk, &unknown), same_words(&missing, &unknown, &unknown), "a private chunk answers unlike a missing one");
                let node = ask(&conn, &Message::GetNodes { repo: repo.into(), ids: vec![root] }).await;
                assert!(matches!(&node[..], [Message::Error { code: ErrorCode::NotFound, .. }]), "{token:?} read a private node through {repo}: {node:?}");
                let history = ask(&conn, &Message::GetHistory { repo: repo.into(), from: vec![rev], until: vec![], max: 8 }).await;
                assert!(
                    matches!(&history[..], [Message::Error { code: ErrorCode::NotFound, .. }] | [Message::Done]),
                    "{token:?} read a private revision through {repo}: {history:?}"
                );
            }
            // A reader is not told whether the hub holds a revision outside
            // the repository it names.
            if token != hub.token {
                let have = ask(&conn, &Message::HaveRevisions { repo: "org/kept".into(), ids: vec![rev, hub.kept.0.parse().unwrap()] }).await;
                assert_eq!(have.first(), Some(&Message::Bitmap { bits: vec![false, true] }), "{token:?}");
            }
            // What it was shown it may read.
            let ids: Vec<Id> = kept.iter().map(|c| c.0).collect();
            assert_eq!(chunks_in(&ask(&conn, &Message::GetChunks { repo: "org/kept".into(), ids: ids.clone() }).await), ids.len());
        }
        // The owner reads its own.
        assert_eq!(chunks_in(&ask(&owner, &Message::GetChunks { repo: "secret/x".into(), ids: vec![chunk] }).await), 1);
    });
    hub.check_unharmed();
}

/// An error answer with `id` written as `as_id`: two answers that differ
/// only in the id they name read the same.
fn same_words(answer: &[Message], id: &Id, as_id: &Id) -> String {
    format!("{answer:?}").replace(&id.to_string(), &as_id.to_string())
}
