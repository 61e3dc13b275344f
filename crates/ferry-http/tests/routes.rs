//! `protocol/http.md`'s route index and the router agree: every route the
//! router has is listed, every listed route is served with each listed
//! method (never the `no_route` fallback, never 405), and a method not
//! listed for a route is refused with 405.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use ferry_service::{Access, HubService};
use ferry_store::Store;
use tower::ServiceExt;

/// The index: (methods, route) per row of §8.
fn documented() -> Vec<(Vec<Method>, String)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../protocol/http.md");
    let text = std::fs::read_to_string(path).unwrap();
    let index = text.split("## 8. Route index").nth(1).expect("http.md has a route index");
    index
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim().trim_matches('|').split('|').map(str::trim).collect();
            let route = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let methods = cells[0].split(',').map(|m| m.trim().parse::<Method>().expect("a method")).collect();
            Some((methods, route.to_owned()))
        })
        .collect()
}

/// A concrete path for a route pattern.
fn fill(route: &str) -> String {
    route
        .replace("{owner}", "org")
        .replace("{name}", "demo")
        .replace("{rev}", "main")
        .replace("{branch}", "b")
        .replace("{oid}", &"0".repeat(64))
        .replace("{*path}", "dir/model.bin")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_index_and_the_router_agree() {
    let rows = documented();
    let listed: BTreeSet<String> = rows.iter().map(|r| r.1.clone()).collect();
    assert_eq!(listed.len(), rows.len(), "a route is listed twice");
    let served: BTreeSet<String> = ferry_http::route_patterns().into_iter().collect();
    assert_eq!(served.difference(&listed).collect::<Vec<_>>(), Vec::<&String>::new(), "routes the router has and http.md does not list");
    assert_eq!(listed.difference(&served).collect::<Vec<_>>(), Vec::<&String>::new(), "routes http.md lists and the router does not have");

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::init(dir.path()).unwrap());
    let app = ferry_http::router(Arc::new(HubService::new(store, Arc::new(Access::for_store(dir.path())))), false);
    let all = [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::DELETE];
    for (methods, route) in &rows {
        let uri = fill(route);
        for m in &all {
            let req = Request::builder().method(m.clone()).uri(&uri).body(Body::empty()).unwrap();
            // The event stream answers its headers at once and then waits.
            let resp = app.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20);
            let body = tokio::time::timeout(std::time::Duration::from_millis(200), body).await.ok().and_then(Result::ok).unwrap_or_default();
            let fallback = String::from_utf8_lossy(&body).contains("\"no_route\"");
            assert!(!fallback, "{m} {uri}: answered by the fallback, not the route {route}");
            // HEAD is served wherever GET is.
            let listed = methods.contains(m) || (*m == Method::HEAD && methods.contains(&Method::GET));
            if listed {
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{m} {uri}: listed for {route} but refused");
            } else {
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{m} {uri}: served by {route}, which does not list it");
            }
        }
    }
}
