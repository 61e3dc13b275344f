//! ferry-http: the hub's HTTP door. It speaks the Hugging Face Hub's file
//! API (what huggingface_hub and `hf download` call: see [`hf`]) over the
//! same hub service, store and tokens as the QUIC door, and serves
//! `/metrics` (Prometheus text) and `/health` beside it.
//!
//! Architecture invariants:
//! - Every request authenticates on its own (`Authorization: Bearer`, or
//!   anonymous) and is answered by a fresh service session, so a revoked
//!   token stops working at its next request; missing and forbidden
//!   repositories answer the same, with the Hub's `X-Error-Code`.
//! - A file body streams from the store a piece at a time behind a small
//!   channel, every chunk verified before a byte of it is sent; a slow
//!   client slows its own read, never fills the hub's memory.
//! - Metrics name routes by their pattern, never by the path asked, so no
//!   repository name shows in them.

#![warn(missing_docs)]

mod error;
pub mod hf;
pub mod lfs;
mod metrics;
pub mod rest;
pub mod upload;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use ferry_service::{Grant, HubService, Session};

pub use error::{HttpError, Missing};
pub use metrics::Metrics;

/// What every handler shares: the service and the door's counters.
pub struct Door {
    service: Arc<HubService>,
    metrics: Arc<Metrics>,
    /// Whether clients reach it over TLS (the scheme of URLs it hands out).
    tls: bool,
    /// Signs the transfer URLs the LFS batch hands out (drawn at start:
    /// URLs do not outlive the process).
    url_key: ring::hmac::Key,
    /// Places for file bodies in flight (each holds a read or ingest
    /// pipeline: a few MiB).
    transfers: Arc<tokio::sync::Semaphore>,
}

/// File bodies the door sends or receives at once; more wait their turn
/// (up to `TRANSFER_WAIT`, then "busy"). Each costs up to about 20 MiB (a
/// read batch of 64 chunks, or the ingest pipeline's buffers), so the door
/// holds at most about 1.3 GiB for file bodies.
pub const MAX_TRANSFERS: usize = 64;

/// How long a transfer waits for a place before it is told the hub is busy.
const TRANSFER_WAIT: Duration = Duration::from_secs(10);

/// A file body in flight: a place among `MAX_TRANSFERS`, and the gauge.
pub(crate) struct Transfer {
    _place: tokio::sync::OwnedSemaphorePermit,
    _gauge: metrics::InFlight,
}

impl Door {
    /// Waits for a place for a file body.
    pub(crate) async fn transfer(&self) -> Result<Transfer, HttpError> {
        let place = tokio::time::timeout(TRANSFER_WAIT, self.transfers.clone().acquire_owned()).await;
        match place {
            Ok(Ok(place)) => Ok(Transfer { _place: place, _gauge: self.metrics.transfer() }),
            _ => Err(HttpError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "busy",
                format!("the hub is busy: {MAX_TRANSFERS} file transfers are in flight; retry in a moment"),
            )),
        }
    }
}

/// The routes of the door over `service` (`tls`: whether clients reach it
/// over HTTPS).
pub fn router(service: Arc<HubService>, tls: bool) -> Router {
    let url_key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new()).expect("the system's random numbers");
    let transfers = Arc::new(tokio::sync::Semaphore::new(MAX_TRANSFERS));
    let door = Arc::new(Door { service, metrics: Arc::new(Metrics::default()), tls, url_key, transfers });
    let mut r = Router::new();
    for (pattern, methods) in routes() {
        r = r.route(&pattern, methods);
    }
    r.fallback(|| async { HttpError::new(StatusCode::NOT_FOUND, "no_route", "no such endpoint on this hub") })
        .layer(axum::middleware::from_fn_with_state(door.clone(), observe))
        .with_state(door)
}

/// Every route pattern the door serves (axum's syntax), as the route index
/// of `protocol/http.md` lists them.
pub fn route_patterns() -> Vec<String> {
    routes().into_iter().map(|r| r.0).collect()
}

/// The one table of routes: pattern and handlers.
fn routes() -> Vec<(String, axum::routing::MethodRouter<Arc<Door>>)> {
    let resolve = || get(hf::resolve_file).head(hf::resolve_file);
    let mut t: Vec<(String, axum::routing::MethodRouter<Arc<Door>>)> = vec![
        ("/health".into(), get(|| async { "ok\n" })),
        ("/metrics".into(), get(render_metrics)),
        ("/{owner}/{name}/resolve/{rev}/{*path}".into(), resolve()),
        ("/datasets/{owner}/{name}/resolve/{rev}/{*path}".into(), resolve()),
        ("/models/{owner}/{name}/resolve/{rev}/{*path}".into(), resolve()),
        ("/v1/repos".into(), get(rest::repos)),
        ("/v1/events".into(), get(rest::events)),
        ("/api/repos/create".into(), post(upload::create_repo)),
        ("/api/validate-yaml".into(), post(upload::validate_yaml)),
    ];
    let v1 = "/v1/repos/{owner}/{name}";
    t.extend([
        (v1.to_owned(), axum::routing::delete(rest::delete_repo)),
        (format!("{v1}/revisions/{{rev}}"), get(rest::revision)),
        (format!("{v1}/history/{{rev}}"), get(rest::history)),
        (format!("{v1}/files/{{rev}}/{{*path}}"), resolve()),
        (format!("{v1}/files"), post(rest::upload)),
        (format!("{v1}/commits"), post(rest::commit)),
        (format!("{v1}/branches/{{branch}}"), axum::routing::delete(rest::delete_branch)),
    ]);
    for prefix in ["", "/datasets"] {
        let lfs = format!("{prefix}/{{owner}}/{{name}}/info/lfs");
        t.extend([
            (format!("{lfs}/objects/batch"), post(lfs::batch)),
            (format!("{lfs}/objects/verify"), post(lfs::verify)),
            (format!("{lfs}/objects/{{oid}}"), get(lfs::get_object).put(lfs::put_object)),
            (format!("{lfs}/locks/verify"), post(lfs::no_locks)),
        ]);
    }
    for kind in ["models", "datasets"] {
        let repo = format!("/api/{kind}/{{owner}}/{{name}}");
        t.extend([
            (format!("{repo}/preupload/{{rev}}"), post(upload::preupload)),
            (format!("{repo}/commit/{{rev}}"), post(upload::commit)),
            (format!("{repo}/branch/{{branch}}"), post(upload::create_branch)),
            (format!("{repo}/tag/{{rev}}"), post(upload::create_tag).delete(upload::delete_tag)),
            (format!("{repo}/xet-write-token/{{rev}}"), get(upload::no_xet)),
            (format!("{repo}/refs"), get(hf::refs)),
            (repo.clone(), get(hf::repo_info)),
            (format!("{repo}/revision/{{rev}}"), get(hf::repo_info)),
            (format!("{repo}/tree/{{rev}}"), get(hf::tree)),
            (format!("{repo}/tree/{{rev}}/{{*path}}"), get(hf::tree)),
            (format!("{repo}/paths-info/{{rev}}"), post(hf::paths_info)),
        ]);
    }
    t
}

async fn render_metrics(State(door): State<Arc<Door>>) -> Response {
    let door2 = door.clone();
    let text = tokio::task::spawn_blocking(move || door2.metrics.render(&door2.service)).await.unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Counts every request by route and status, and logs it.
async fn observe(State(door): State<Arc<Door>>, req: Request, next: Next) -> Response {
    let route: &'static str = match req.extensions().get::<MatchedPath>() {
        Some(p) => intern(p.as_str()),
        None => "unmatched",
    };
    let (method, started) = (req.method().clone(), Instant::now());
    let peer = req.extensions().get::<Peer>().map_or(String::new(), |p| p.0.to_string());
    let response = next.run(req).await;
    let status = response.status().as_u16();
    door.metrics.request(route, status);
    tracing::info!(target: "ferry::http", %method, route, status, %peer, millis = started.elapsed().as_millis() as u64, "request");
    response
}

/// Route patterns are few and fixed: keep one `'static` copy of each.
fn intern(s: &str) -> &'static str {
    static SEEN: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(k) = seen.iter().find(|k| **k == s) {
        return k;
    }
    let k: &'static str = Box::leak(s.to_owned().into_boxed_str());
    seen.push(k);
    k
}

/// The address a request came from (set by the accept loop).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub IpAddr);

/// Who is asking: the bearer token presented (if any) and from where.
pub struct Caller {
    token: String,
    peer: IpAddr,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, HttpError> {
        let peer = parts.extensions.get::<Peer>().map_or(IpAddr::from([127, 0, 0, 1]), |p| p.0);
        let token = match parts.headers.get(header::AUTHORIZATION) {
            None => String::new(),
            Some(v) => {
                let v = v.to_str().map_err(|_| unauthorized())?;
                let (scheme, value) = v.split_once(' ').ok_or_else(unauthorized)?;
                if scheme.eq_ignore_ascii_case("bearer") {
                    value.trim().to_owned()
                } else if scheme.eq_ignore_ascii_case("basic") {
                    // Git's credential helpers send user:token; the user
                    // is ignored.
                    use base64::Engine;
                    let decoded = base64::engine::general_purpose::STANDARD.decode(value.trim()).map_err(|_| unauthorized())?;
                    let pair = String::from_utf8(decoded).map_err(|_| unauthorized())?;
                    pair.split_once(':').map(|x| x.1.to_owned()).ok_or_else(unauthorized)?
                } else {
                    return Err(unauthorized());
                }
            }
        };
        Ok(Caller { token, peer })
    }
}

fn unauthorized() -> HttpError {
    HttpError::new(StatusCode::UNAUTHORIZED, "unauthorized", "send the token as `Authorization: Bearer <token>` (or as the password of Basic)")
}

impl Caller {
    /// A session for this caller (anonymous without a token).
    pub async fn session(&self, door: &Door) -> Result<Session, HttpError> {
        let grant = if self.token.is_empty() {
            Grant::Anonymous
        } else {
            door.service.authenticate(&self.token, self.peer).await.map_err(error::service_error(Missing::Repo))?
        };
        Ok(door.service.session(grant).from_address(self.peer))
    }
}

/// How the door listens.
pub struct HttpOptions {
    /// The socket to accept on (bound by the caller, which can then say
    /// where it listens before serving).
    pub listener: tokio::net::TcpListener,
    /// TLS (a certificate chain and key); plain HTTP without it.
    pub tls: Option<rustls::ServerConfig>,
    /// On shutdown, how long requests in flight may take to finish.
    pub drain: Duration,
}

/// Serves the door until `shutdown` resolves, then stops accepting and
/// lets requests in flight finish (at most `opts.drain`).
pub async fn serve(service: Arc<HubService>, opts: HttpOptions, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let listener = opts.listener;
    let app = router(service, opts.tls.is_some());
    let tls = opts.tls.map(|mut c| {
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(c))
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let tracker = connections::Tracker::default();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("http accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let stop = stop_rx.clone();
        let guard = tracker.enter();
        tokio::spawn(async move {
            let _guard = guard;
            match tls {
                None => serve_connection(hyper_util::rt::TokioIo::new(tcp), app, peer, stop).await,
                Some(acceptor) => {
                    if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        serve_connection(hyper_util::rt::TokioIo::new(stream), app, peer, stop).await;
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(opts.drain, tracker.wait()).await;
    Ok(())
}

/// Serves one HTTP/1.1 connection until it ends, or finishes its request
/// in flight and closes once `stop` turns true.
async fn serve_connection<I>(io: I, app: Router, peer: SocketAddr, mut stop: tokio::sync::watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(Peer(peer.ip()));
        tower::ServiceExt::oneshot(app.clone(), req.map(axum::body::Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, svc);
    let mut conn = std::pin::pin!(conn);
    let res = tokio::select! {
        res = conn.as_mut() => res,
        () = async { drop(stop.wait_for(|s| *s).await) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        tracing::debug!("http connection from {peer}: {e}");
    }
}

/// Counts connections in progress, so shutdown can wait for them.
mod connections {
    use std::sync::Arc;

    /// Connections being served.
    #[derive(Default, Clone)]
    pub struct Tracker(Arc<tokio::sync::Notify>, Arc<std::sync::atomic::AtomicUsize>);

    /// One connection; the tracker is told when it drops.
    pub struct Entered(Tracker);

    impl Tracker {
        pub fn enter(&self) -> Entered {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Entered(self.clone())
        }
        pub async fn wait(&self) {
            loop {
                let notified = self.0.notified();
                if self.1.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        }
    }

    impl Drop for Entered {
        fn drop(&mut self) {
            if self.0 .1.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                self.0 .0.notify_waiters();
            }
        }
    }
}
