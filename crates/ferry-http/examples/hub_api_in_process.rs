//! The HTTP door's routes answered in-process (no socket): a store with one
//! revision, a read token, and the requests huggingface_hub makes for a
//! download: repository info, then a HEAD and a ranged GET of a file.
//!
//! cargo run --release -p ferry-http --example hub_api_in_process

use std::io::Cursor;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use ferry_core::revision::{Entry, Revision};
use ferry_service::{Access, AccessFile, HubService, Scope};
use ferry_store::Store;
use tower::ServiceExt;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(Store::init(dir.path())?);
    let session = store.write_session();
    let file = session.ingest(Cursor::new(b"0123456789 weights".to_vec()), &())?;
    let entry = Entry { path: "model.bin".into(), file_id: file.file_id, size: file.size, executable: false };
    session.commit("org/demo", "main", None, &Revision::new(vec![], "demo".into(), 0, "first".into(), vec![entry])?)?;
    drop(session);
    let token = AccessFile::edit(dir.path(), |a| a.create_token("org/*", Scope::Read, 0))?;
    let app = ferry_http::router(Arc::new(HubService::new(store, Arc::new(Access::for_store(dir.path())))), false);

    let ask = |method: &str, uri: &str, range: Option<&str>| {
        let mut r = Request::builder().method(method).uri(uri).header("authorization", format!("Bearer {token}"));
        if let Some(range) = range {
            r = r.header("range", range);
        }
        r.body(Body::empty()).expect("a valid request")
    };
    let info = app.clone().oneshot(ask("GET", "/api/models/org/demo", None)).await?;
    let body = axum::body::to_bytes(info.into_body(), 1 << 20).await?;
    let json: serde_json::Value = serde_json::from_slice(&body)?;
    println!("org/demo at commit {}: {}", json["sha"], json["siblings"]);

    let head = app.clone().oneshot(ask("HEAD", "/org/demo/resolve/main/model.bin", None)).await?;
    println!("HEAD: {} bytes, ETag {:?}", head.headers()["content-length"].to_str()?, head.headers()["etag"]);
    let part = app.clone().oneshot(ask("GET", "/org/demo/resolve/main/model.bin", Some("bytes=0-9"))).await?;
    let status = part.status();
    let bytes = axum::body::to_bytes(part.into_body(), 1 << 20).await?;
    println!("GET bytes=0-9: {status} {:?}", String::from_utf8_lossy(&bytes));
    assert_eq!(&bytes[..], b"0123456789");

    let anonymous = app.oneshot(Request::get("/org/demo/resolve/main/model.bin").body(Body::empty())?).await?;
    println!("without a token: {} {:?}", anonymous.status(), anonymous.headers().get("x-error-code"));
    Ok(())
}
