//! The HTTP door's parsing of what clients send: arbitrary requests
//! (method, target, headers, body) answered by the door's router over a
//! real store that holds one repository, in process. Whatever arrives, the
//! door answers the caller's mistakes as the caller's (never a 5xx but
//! "busy" and "not implemented"), reads the whole answer without a panic, and stores nothing it
//! did not verify (the store is checked after each write it accepted).
//! A long poll or an event stream is cut short after 2 s.
//!
//! Input: `flags:u8  target '\n'  (name ':' value '\n')*  '\n'  body`;
//! flags bits 0-2 pick the method, bit 3 sends a write token, bit 4 a read
//! token.
#![no_main]

use std::io::Cursor;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::Request;
use ferry_core::revision::{Entry, Revision};
use ferry_service::{Access, AccessFile, HubService, Scope};
use ferry_store::Store;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct Door {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    store: Arc<Store>,
    write: String,
    read: String,
    _dir: tempfile::TempDir,
}

fn door() -> &'static Door {
    static DOOR: OnceLock<Door> = OnceLock::new();
    DOOR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Arc::new(Store::init(dir.path()).expect("a new store"));
        let session = store.write_session();
        let file = session.ingest(Cursor::new(b"0123456789 weights".repeat(100)), &()).expect("ingest");
        let entry = Entry { path: "model.bin".into(), file_id: file.file_id, size: file.size, executable: false };
        let rev = Revision::new(vec![], "fuzz".into(), 0, "first".into(), vec![entry]).expect("a revision");
        session.commit("org/demo", "main", None, &rev).expect("commit");
        drop(session);
        let write = AccessFile::edit(dir.path(), |a| a.create_token("org/*", Scope::Write, 0)).expect("token");
        let read = AccessFile::edit(dir.path(), |a| a.create_token("org/demo", Scope::Read, 0)).expect("token");
        let service = Arc::new(HubService::new(store.clone(), Arc::new(Access::for_store(dir.path()))));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
        let router = ferry_http::router(service, false);
        Door { runtime, router, store, write, read, _dir: dir }
    })
}

const METHODS: [&str; 8] = ["GET", "HEAD", "POST", "PUT", "DELETE", "GET", "POST", "OPTIONS"];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let Some(nl) = rest.iter().position(|&b| b == b'\n') else { return };
    let (target, mut rest) = (&rest[..nl], &rest[nl + 1..]);
    let Ok(target) = std::str::from_utf8(target) else { return };
    let method = METHODS[usize::from(flags & 7)];
    let mut req = Request::builder().method(method).uri(target);
    // Headers, one per line, up to an empty line.
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..nl];
        rest = &rest[nl + 1..];
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else { return };
        req = req.header(&line[..colon], line[colon + 1..].trim_ascii());
    }
    let d = door();
    if flags & 8 != 0 {
        req = req.header("authorization", format!("Bearer {}", d.write));
    } else if flags & 16 != 0 {
        req = req.header("authorization", format!("Bearer {}", d.read));
    }
    let Ok(req) = req.body(Body::from(rest.to_vec())) else { return };
    let status = d.runtime.block_on(async {
        let exchange = async {
            let resp = d.router.clone().oneshot(req).await.expect("the router answers every request");
            let status = resp.status();
            // 501: what the door declines by design (Xet, LFS locks).
            assert!(!status.is_server_error() || matches!(status.as_u16(), 501 | 503), "{method} {target}: {status}");
            let _ = axum::body::to_bytes(resp.into_body(), 64 << 20).await;
            status
        };
        // A long poll and the event stream wait on purpose: cut them short.
        tokio::time::timeout(std::time::Duration::from_secs(2), exchange).await.ok()
    });
    // A write that was accepted must leave the store whole.
    if flags & 8 != 0 && method != "GET" && status.is_some_and(|s| s.is_success()) {
        let report = d.store.fsck(&|_| {}).expect("fsck runs");
        assert!(report.problems.is_empty(), "{method} {target} left the store with problems: {:?}", report.problems);
    }
});
