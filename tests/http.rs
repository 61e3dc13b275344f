//! The HTTP door of a real `ferry serve`, driven by the clients people use:
//! huggingface_hub from PyPI, unmodified (`scripts/hf-venv` makes its
//! environment; `FERRY_HF_PYTHON` names its python), and curl.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_tests::{ferry, json, ok, Hub};

fn python() -> PathBuf {
    let p = std::env::var_os("FERRY_HF_PYTHON")
        .expect("FERRY_HF_PYTHON must name a python with huggingface_hub: run scripts/test, or export FERRY_HF_PYTHON=$(scripts/hf-venv)");
    PathBuf::from(p)
}

/// A hub serving a private `org/model` (three files in two directories)
/// over QUIC and HTTP; returns it, its HTTP address and the source folder.
fn hub_with_model(dir: &Path, extra: &[&str]) -> (Hub, String, PathBuf) {
    hub_with_files(dir, extra, &[])
}

/// Like `hub_with_model`, with more files of noise (path, length).
fn hub_with_files(dir: &Path, extra: &[&str], more: &[(&str, usize)]) -> (Hub, String, PathBuf) {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    for (i, (path, len)) in more.iter().enumerate() {
        std::fs::write(src.join(path), ferry_testkit::noise(*len, 100 + i as u64)).unwrap();
    }
    std::fs::write(src.join("model.safetensors"), ferry_testkit::noise(3 << 20, 7)).unwrap();
    std::fs::write(src.join("config.json"), b"{\"hidden\": 4096}\n").unwrap();
    std::fs::write(src.join("sub/notes with space.txt"), b"read me\n").unwrap();
    let store = dir.join("hub-store");
    ok(ferry(&store).arg("init"));
    ok(ferry(&store).args(["commit", "org/model"]).arg(&src).args(["-m", "first"]));
    let mut args = vec!["--http", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let hub = Hub::serve_with(store, "127.0.0.1:0", &args, None);
    let http = hub.http.clone().expect("the listening line names the HTTP door");
    (hub, http, src)
}

/// curl's answer: status, headers (lower-case names) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

fn curl(args: &[&str]) -> Answer {
    let out = Command::new("curl").args(["-s", "-D", "/dev/stderr", "-o", "-"]).args(args).output().expect("curl");
    let head = String::from_utf8_lossy(&out.stderr);
    // The last response's headers (after any interim ones).
    let block = head.split("\r\n\r\n").filter(|b| b.starts_with("HTTP/")).last().unwrap_or_default();
    let mut lines = block.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())).collect();
    Answer { status, headers, body: out.stdout }
}

/// One of this directory's huggingface_hub scripts against the door.
fn hf_script(script: &str, http: &str, repo: &str, folder: &Path, token: &str, extra: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(python());
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(script)).args([&format!("http://{http}"), repo]).arg(folder).arg(token).args(extra);
    cmd.output().unwrap()
}

/// The JSON a script printed, once it succeeded.
fn succeeded(out: std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "huggingface_hub failed:\n{}", String::from_utf8_lossy(&out.stderr));
    json(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn huggingface_hub_downloads_a_repository_every_way_it_offers() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, http, src) = hub_with_model(dir.path(), &[]);
    let token = hub.token("org/*", "read");
    let v = succeeded(hf_script("hf_client.py", &http, "org/model", &src, &token, &[]));
    let files = serde_json::json!(["config.json", "model.safetensors", "sub/notes with space.txt"]);
    assert_eq!(v["files"], files, "{v}");
    for way in ["snapshot", "by_commit", "local_dir", "dataset"] {
        assert_eq!(v[way], files, "{way}: {v}");
    }
    assert_eq!(v["siblings"]["model.safetensors"], 3 << 20);
    assert_eq!(v["sha"].as_str().unwrap().len(), 40, "a commit id as wide as git's: {v}");
    assert_eq!(v["missing_file"], "RemoteEntryNotFoundError");
    assert_eq!(v["missing_revision"], "RevisionNotFoundError");
    assert_eq!(v["missing_repo"], "RepositoryNotFoundError");
    assert_eq!(v["paths_info"], serde_json::json!([["RepoFile", "config.json"], ["RepoFolder", "sub"]]), "{v}");

    // `hf download`, the command line, with the endpoint from the environment.
    let hf = python().with_file_name("hf");
    let into = dir.path().join("cli-download");
    let out = Command::new(&hf)
        .args(["download", "org/model", "--local-dir"])
        .arg(&into)
        .envs([("HF_ENDPOINT", format!("http://{http}")), ("HF_TOKEN", token.clone()), ("HF_HOME", dir.path().join("hf-home").display().to_string())])
        .envs([("HF_HUB_DISABLE_TELEMETRY", "1"), ("HF_HUB_DISABLE_XET", "1"), ("HF_HUB_DISABLE_UPDATE_CHECK", "1")])
        .output()
        .unwrap();
    assert!(out.status.success(), "hf download: {}", String::from_utf8_lossy(&out.stderr));
    for f in ["model.safetensors", "config.json", "sub/notes with space.txt"] {
        assert!(std::fs::read(into.join(f)).unwrap() == std::fs::read(src.join(f)).unwrap(), "{f} differs");
    }
}

#[test]
fn resolve_serves_heads_and_byte_ranges_and_private_repositories_answer_as_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, http, src) = hub_with_model(dir.path(), &[]);
    let token = hub.token("org/*", "read");
    let auth = format!("Authorization: Bearer {token}");
    let url = format!("http://{http}/org/model/resolve/main/model.safetensors");
    let file = std::fs::read(src.join("model.safetensors")).unwrap();

    let head = curl(&["-I", "-H", &auth, &url]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("3145728"));
    assert_eq!(head.header("accept-ranges"), Some("bytes"));
    let commit = head.header("x-repo-commit").unwrap().to_owned();
    assert!(head.header("etag").is_some());
    for (range, want) in [("1000-1999", 1000..2000), ("3145000-", 3145000..3145728), ("-100", 3145628..3145728), ("0-0", 0..1)] {
        let a = curl(&["-H", &auth, "-r", range, &url]);
        assert_eq!(a.status, 206, "{range}");
        assert!(a.body == file[want.clone()], "bytes {range}");
        assert_eq!(a.header("content-range").unwrap(), format!("bytes {}-{}/3145728", want.start, want.end - 1));
    }
    let past = curl(&["-H", &auth, "-r", "4000000-", &url]);
    assert_eq!((past.status, past.header("content-range")), (416, Some("bytes */3145728")));
    // By commit id, and by a short one.
    for rev in [commit.as_str(), &commit[..12]] {
        let a = curl(&["-H", &auth, &format!("http://{http}/org/model/resolve/{rev}/config.json")]);
        assert_eq!((a.status, a.body.as_slice()), (200, &b"{\"hidden\": 4096}\n"[..]), "{rev}");
    }
    // A path with a space, percent-encoded as clients send it.
    let a = curl(&["-H", &auth, &format!("http://{http}/org/model/resolve/main/sub/notes%20with%20space.txt")]);
    assert_eq!(a.body, b"read me\n");

    // Without a token the private repository is "not found", word for word
    // as a repository that does not exist.
    let private = curl(&[&url]);
    let missing = curl(&[&format!("http://{http}/org/nothing/resolve/main/model.safetensors")]);
    assert_eq!((private.status, private.header("x-error-code")), (404, Some("RepoNotFound")));
    assert_eq!(String::from_utf8_lossy(&private.body).replace("org/model", "org/nothing"), String::from_utf8_lossy(&missing.body));
    let info = curl(&[&format!("http://{http}/api/models/org/model")]);
    assert_eq!((info.status, info.header("x-error-code")), (404, Some("RepoNotFound")));
    // A wrong token is refused as such; a revoked one at its next request.
    assert_eq!(curl(&["-H", "Authorization: Bearer nope", &url]).status, 401);
    let id = json(&ok(ferry(&hub.store).args(["--json", "token", "list"])))[0]["id"].as_str().unwrap().to_owned();
    ok(ferry(&hub.store).args(["token", "revoke", &id]));
    let revoked = curl(&["-H", &auth, &url]);
    assert!(matches!(revoked.status, 401 | 404), "a revoked token still reads: {}", revoked.status);

    // Metrics count requests by route, never naming a repository.
    let metrics = String::from_utf8(curl(&[&format!("http://{http}/metrics")]).body).unwrap();
    assert!(metrics.contains("ferry_http_requests_total{route=\"/{owner}/{name}/resolve/{rev}/{*path}\",status=\"206\"} 4"), "{metrics}");
    assert!(metrics.contains("ferry_http_bytes_sent_total"), "{metrics}");
    assert!(!metrics.contains("org/"), "metrics name a repository:\n{metrics}");
    assert_eq!(curl(&[&format!("http://{http}/health")]).body, b"ok\n");
}

#[test]
fn sigterm_lets_downloads_in_flight_finish_and_refuses_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (mut hub, http, _) = hub_with_files(dir.path(), &[], &[("big.bin", 48 << 20)]);
    ok(ferry(&hub.store).args(["visibility", "org/*", "public"]));
    let url = format!("http://{http}/org/model/resolve/main/big.bin");
    // 48 MiB at 16 MiB/s, far more than socket buffers hold: the hub is
    // still sending when it is told to stop.
    let mut slow = Command::new("curl").args(["-s", "--limit-rate", "16M", "-o", "-", &url]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert!(slow.try_wait().unwrap().is_none(), "the download ended before the test could stop the hub");
    unsafe { libc::kill(hub.child.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(300));
    let refused = Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{http}/health")]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&refused.stdout), "000", "a new connection after SIGTERM was served");
    let got = slow.wait_with_output().unwrap();
    assert_eq!(got.stdout.len(), 48 << 20, "the download in flight was cut");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = hub.child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the hub did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn both_doors_present_a_certificate_chain_from_a_certificate_authority() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let openssl = |args: &[&str]| ok(Command::new("openssl").current_dir(d).args(args));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test ca",
    ]);
    openssl(&["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "hub.key", "-out", "hub.csr", "-subj", "/CN=localhost"]);
    std::fs::write(d.join("ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    openssl(&["x509", "-req", "-in", "hub.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "hub.pem", "-days", "2", "-extfile", "ext"]);
    let (cert, key, ca) = (d.join("hub.pem"), d.join("hub.key"), d.join("ca.pem"));
    let (hub, http, src) = hub_with_model(d, &["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    ok(ferry(&hub.store).args(["visibility", "org/*", "public"]));
    let port = http.rsplit(':').next().unwrap();
    // HTTPS, verified against the authority (no pinning, no -k).
    let a = curl(&["--cacert", ca.to_str().unwrap(), &format!("https://localhost:{port}/org/model/resolve/main/config.json")]);
    assert_eq!((a.status, a.body.as_slice()), (200, &b"{\"hidden\": 4096}\n"[..]));
    // The QUIC door shows the same chain: a client trusting the authority pulls.
    let client = d.join("client-store");
    ok(ferry(&client).arg("init"));
    ok(ferry_tests::client(&client, None).args(["pull", "--ca", ca.to_str().unwrap(), &format!("localhost:{}", hub.port()), "org/model"]));
    let out = d.join("out");
    ok(ferry(&client).args(["export", "org/model@main"]).arg(&out));
    assert!(std::fs::read(out.join("model.safetensors")).unwrap() == std::fs::read(src.join("model.safetensors")).unwrap());
    // Without --ca, a client trusts the system's authorities (here the
    // test's, through SSL_CERT_FILE): it pulls, and pins nothing.
    let system = d.join("system-store");
    ok(ferry(&system).arg("init"));
    ok(ferry_tests::client(&system, None).env("SSL_CERT_FILE", &ca).args(["pull", &format!("localhost:{}", hub.port()), "org/model"]));
    assert!(!system.with_extension("known_hubs").exists(), "a certificate the authorities vouch for was pinned");
    // An unknown authority is taken on first use and pinned, as before.
    let pinned = d.join("pinned-store");
    ok(ferry(&pinned).arg("init"));
    ok(ferry_tests::client(&pinned, None).env("SSL_CERT_FILE", d.join("hub.pem")).args(["pull", &format!("localhost:{}", hub.port()), "org/model"]));
    assert!(std::fs::read_to_string(pinned.with_extension("known_hubs")).unwrap().contains(&hub.fingerprint));
    // A key that does not go with the certificate stops the hub at start.
    let store = hub.store.clone();
    drop(hub);
    let bad = ferry(&store)
        .args(["serve", "--listen", "127.0.0.1:0", "--cert", cert.to_str().unwrap(), "--key", d.join("ca.key").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("does not go with"), "{}", String::from_utf8_lossy(&bad.stderr));
}

/// A hub with an empty store and a write token for `org/*`.
fn empty_hub(dir: &Path) -> (Hub, String, String) {
    let store = dir.join("hub-store");
    ok(ferry(&store).arg("init"));
    let hub = Hub::serve_with(store, "127.0.0.1:0", &["--http", "127.0.0.1:0"], None);
    let http = hub.http.clone().unwrap();
    let token = hub.token("org/*", "write");
    (hub, http, token)
}

fn run_upload(http: &str, repo: &str, folder: &Path, token: &str, xet: bool) -> serde_json::Value {
    succeeded(hf_script("hf_upload.py", http, repo, folder, token, if xet { &["xet"] } else { &[] }))
}

#[test]
fn a_connection_carries_the_next_request_after_a_body_the_door_has_no_use_for() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let (mut hub, http, _) = empty_hub(dir.path());
    for path in ["/api/validate-yaml", "/org/m.git/info/lfs/locks/verify"] {
        let mut c = std::net::TcpStream::connect(&http).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let body = b"{\"content\": \"---\\nlicense: mit\\n---\\n\", \"repoType\": \"model\"}";
        // The body comes after the head has been answered, as a client that
        // writes them apart may send it.
        write!(c, "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        c.write_all(body).unwrap();
        let mut got = vec![0; 4096];
        let n = c.read(&mut got).unwrap();
        assert!(String::from_utf8_lossy(&got[..n]).starts_with("HTTP/1.1 "), "{path}");
        std::thread::sleep(Duration::from_millis(200));
        // The same connection takes the next request.
        let next = c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        next.unwrap_or_else(|e| panic!("{path}: the door closed the connection after answering: {e}"));
        let n = c.read(&mut got).unwrap_or(0);
        assert!(String::from_utf8_lossy(&got[..n]).starts_with("HTTP/1.1 200"), "{path}: the door closed the connection after answering");
    }
    hub.kill();
}

#[test]
fn huggingface_hub_uploads_through_the_door_and_a_second_version_stores_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut hub, http, token) = empty_hub(dir.path());
    let folder = dir.path().join("upload");
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    // Over the 10 MiB that travel inside a commit: this one goes by LFS.
    std::fs::write(folder.join("model.safetensors"), ferry_testkit::noise(12 << 20, 3)).unwrap();
    std::fs::write(folder.join("config.json"), b"{\"hidden\": 4096}\n").unwrap();
    std::fs::write(folder.join("README.md"), b"---\nlicense: mit\n---\n# a model\n").unwrap();
    std::fs::write(folder.join("sub/tokenizer.json"), ferry_testkit::noise(300_000, 4)).unwrap();
    let v = run_upload(&http, "org/uploaded", &folder, &token, false);
    let want = serde_json::json!(["README.md", "config.json", "model.safetensors", "sub/tokenizer.json"]);
    assert_eq!(v["created"], format!("http://{http}/org/uploaded"), "{v}");
    assert_eq!(v["created_again"], v["created"]);
    assert_eq!(v["first_download"], want, "{v}");
    assert_eq!(v["second_download"], want, "{v}");
    assert_eq!(v["first_still"], want, "the first version changed: {v}");
    assert_eq!(v["branch_files"], serde_json::json!(["README.md", "branch.txt", "config.json", "model.safetensors", "sub/tokenizer.json"]));
    assert_eq!(v["main_files"], want);
    assert_eq!(v["refs"], serde_json::json!(["experiment", "main"]));
    assert_eq!(v["tags"], serde_json::json!(["v1.0"]), "{v}");
    assert_eq!(v["tag_download"], want, "{v}");
    assert_eq!(v["tag_deleted_by_writer"], 403, "{v}");
    assert_eq!(v["stale_parent"], 412, "a commit on a stale parent: {v}");
    // The large file shows as an LFS file, named by its SHA-256.
    let sum = ok(Command::new("sha256sum").arg(folder.join("model.safetensors")));
    assert_eq!(v["lfs"], serde_json::json!({ "model.safetensors": sum.split_whitespace().next().unwrap() }), "{v}");
    // The second upload re-sent every file; the hub stored only the new
    // chunks (the changed config), and the large file not at all.
    let metrics = String::from_utf8(curl(&[&format!("http://{http}/metrics")]).body).unwrap();
    let figure = |name: &str| metrics.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.parse::<f64>().ok()).unwrap();
    let (stored, deduplicated) = (figure("ferry_chunks_stored_total"), figure("ferry_chunks_deduplicated_total"));
    assert!(deduplicated >= 2.0, "stored {stored}, deduplicated {deduplicated}");
    assert!(stored < 12.0 * 16.0 + 20.0, "the large file was stored twice: {stored} chunks");
    // Xet left on, as huggingface_hub installs it: small files go through.
    let small = dir.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    std::fs::copy(folder.join("config.json"), small.join("config.json")).unwrap();
    let v = run_upload(&http, "org/small", &small, &token, true);
    assert_eq!(v["first_download"], serde_json::json!(["config.json"]), "{v}");
    // A reader may not upload.
    let reader = hub.token("org/*", "read");
    assert!(!hf_script("hf_upload.py", &http, "org/uploaded", &small, &reader, &[]).status.success());
    // What the door stored passes fsck.
    let store = hub.store.clone();
    hub.kill();
    assert_eq!(json(&ok(ferry(&store).args(["--json", "fsck"])))["ok"], true);
}

#[test]
fn git_lfs_pushes_and_pulls_objects_through_the_door() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_hub, http, token) = empty_hub(d);
    let git = |cwd: &Path, args: &[&str]| {
        let out = Command::new("git").current_dir(cwd).args(["-c", "user.name=t", "-c", "user.email=t@example.com"]).args(args).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let lfs_url = format!("lfs.url=http://{http}/org/lfs-model.git/info/lfs");
    let header = format!("http.extraHeader=Authorization: Bearer {token}");
    git(d, &["init", "-q", "--bare", "origin.git"]);
    git(d, &["init", "-q", "work"]);
    let work = d.join("work");
    git(&work, &["lfs", "install", "--local"]);
    git(&work, &["lfs", "track", "*.bin"]);
    let weights = ferry_testkit::noise(6 << 20, 11);
    std::fs::write(work.join("weights.bin"), &weights).unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "weights"]);
    git(&work, &["remote", "add", "origin", "../origin.git"]);
    git(&work, &["-c", &lfs_url, "-c", &header, "push", "-q", "origin", "HEAD:main"]);
    // A clone elsewhere fetches the object from the door.
    git(d, &["clone", "-q", "-b", "main", "origin.git", "copy"]);
    let copy = d.join("copy");
    git(&copy, &["lfs", "install", "--local"]);
    git(&copy, &["-c", &lfs_url, "-c", &header, "lfs", "pull"]);
    assert!(std::fs::read(copy.join("weights.bin")).unwrap() == weights, "git lfs pull did not bring the object back");
    // Without the token, nothing (with git-lfs's own copy gone too).
    std::fs::remove_file(copy.join("weights.bin")).unwrap();
    std::fs::remove_dir_all(copy.join(".git/lfs/objects")).unwrap();
    let out = Command::new("git").current_dir(&copy).args(["-c", &lfs_url, "lfs", "pull"]).env("GIT_TERMINAL_PROMPT", "0").output().unwrap();
    let got = std::fs::read(copy.join("weights.bin")).unwrap_or_default();
    assert!(got != weights, "an anonymous pull got a private object: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_rest_api_serves_a_hub_server_that_keeps_its_bytes_in_ferry() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, http, token) = empty_hub(dir.path());
    let auth = format!("Authorization: Bearer {token}");
    let api = |path: &str| format!("http://{http}/v1{path}");
    let body = |a: &Answer| json(&String::from_utf8_lossy(&a.body));
    let weights = dir.path().join("w.bin");
    std::fs::write(&weights, ferry_testkit::noise(5 << 20, 21)).unwrap();
    // Stream a file in, then commit it as the first revision of a branch.
    let up = curl(&["-H", &auth, "--data-binary", &format!("@{}", weights.display()), &api("/repos/org/app/files")]);
    assert_eq!(up.status, 200, "{}", String::from_utf8_lossy(&up.body));
    let sha = body(&up)["sha256"].as_str().unwrap().to_owned();
    let commit = |expected: Option<&str>, files: serde_json::Value, delete: serde_json::Value| {
        let req = serde_json::json!({ "branch": "main", "expected": expected, "message": "m", "files": files, "delete": delete });
        curl(&["-H", &auth, "-H", "content-type: application/json", "--data", &req.to_string(), &api("/repos/org/app/commits")])
    };
    let listed = body(&curl(&["-H", &auth, &api("/repos")]));
    let position = listed["position"].as_str().unwrap().to_owned();
    let first = commit(None, serde_json::json!({ "w.bin": sha }), serde_json::json!([]));
    assert_eq!(first.status, 200, "{}", String::from_utf8_lossy(&first.body));
    let first_id = body(&first)["id"].as_str().unwrap().to_owned();
    // A follower waiting on the change feed learns of the next commit.
    let waiter = {
        let (url, auth) = (api(&format!("/repos?since={}&wait=10", body(&curl(&["-H", &auth, &api("/repos")]))["position"].as_str().unwrap())), auth.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            (curl(&["-H", &auth, &url]), started.elapsed())
        })
    };
    let events = Command::new("curl")
        .args(["-s", "-N", "--max-time", "4", "-H", &auth, &api(&format!("/events?since={position}"))])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(dir.path().join("cfg.json"), b"{}").unwrap();
    let small = curl(&["-H", &auth, "--data-binary", &format!("@{}", dir.path().join("cfg.json").display()), &api("/repos/org/app/files")]);
    let small_sha = body(&small)["sha256"].as_str().unwrap().to_owned();
    let second = commit(Some(&first_id), serde_json::json!({ "config.json": small_sha }), serde_json::json!([]));
    assert_eq!(second.status, 200, "{}", String::from_utf8_lossy(&second.body));
    let (woke, after) = waiter.join().unwrap();
    assert!(after < Duration::from_secs(8), "the long poll did not wake for a commit");
    assert_eq!(body(&woke)["repos"][0]["name"], "org/app", "{}", String::from_utf8_lossy(&woke.body));
    let streamed = String::from_utf8(events.wait_with_output().unwrap().stdout).unwrap();
    assert!(streamed.contains("event: change") && streamed.contains("org/app"), "server-sent events: {streamed:?}");
    // The revision lists its files with their SHA-256; ranges read back.
    let rev = body(&curl(&["-H", &auth, &api("/repos/org/app/revisions/main")]));
    let files: Vec<&str> = rev["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(files, ["config.json", "w.bin"]);
    assert_eq!(rev["files"][1]["sha256"], sha.as_str());
    let part = curl(&["-H", &auth, "-r", "100-199", &api("/repos/org/app/files/main/w.bin")]);
    assert!(part.body == std::fs::read(&weights).unwrap()[100..200]);
    let history = body(&curl(&["-H", &auth, &api("/repos/org/app/history/main")]));
    assert_eq!(history.as_array().unwrap().len(), 2);
    // A commit from a stale head is refused; so is one naming an unknown file.
    assert_eq!(commit(Some(&first_id), serde_json::json!({}), serde_json::json!(["w.bin"])).status, 409);
    let unknown = "0".repeat(64);
    assert_eq!(commit(rev["id"].as_str(), serde_json::json!({ "x": unknown }), serde_json::json!([])).status, 422);
    // Deleting the repository takes an admin token.
    assert_eq!(curl(&["-X", "DELETE", "-H", &auth, &api("/repos/org/app")]).status, 403);
    // Deleting the branch from its head.
    let del = curl(&["-X", "DELETE", "-H", &auth, &api(&format!("/repos/org/app/branches/main?expected={}", rev["id"].as_str().unwrap()))]);
    assert_eq!(del.status, 204, "{}", String::from_utf8_lossy(&del.body));
    let gone = curl(&["-H", &auth, &api("/repos/org/app/revisions/main")]);
    assert_eq!(gone.status, 404);
    let admin = format!("Authorization: Bearer {}", hub.token("org/*", "admin"));
    assert_eq!(curl(&["-X", "DELETE", "-H", &admin, &api("/repos/org/app")]).status, 404, "the repository outlived its last branch");
    // Errors are JSON with a stable code.
    assert_eq!(body(&curl(&["-H", "Authorization: Bearer wrong", &api("/repos")]))["code"], "unauthorized");
}

#[test]
fn a_pushed_file_gets_its_sha256_and_serves_as_an_lfs_file() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, http, token) = empty_hub(dir.path());
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("model.bin"), ferry_testkit::noise(11 << 20, 31)).unwrap();
    let local = dir.path().join("local");
    ok(ferry(&local).arg("init"));
    ok(ferry(&local).args(["commit", "org/pushed"]).arg(&src).args(["-m", "v1"]));
    ok(ferry_tests::client(&local, Some(&token)).args(["push", &hub.addr, "org/pushed"]));
    let sum = ok(Command::new("sha256sum").arg(src.join("model.bin")));
    let sha = sum.split_whitespace().next().unwrap();
    // The hub hashes pushed files in the background: soon the Hub's
    // clients see an LFS file named by its SHA-256.
    let auth = format!("Authorization: Bearer {token}");
    let url = format!("http://{http}/org/pushed/resolve/main/model.bin");
    let started = Instant::now();
    loop {
        let head = curl(&["-I", "-H", &auth, &url]);
        if head.header("x-linked-etag") == Some(&format!("\"{sha}\"")) {
            assert_eq!(head.header("x-linked-size"), Some("11534336"));
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no SHA-256 for a pushed file: {:?}", head.headers);
        std::thread::sleep(Duration::from_millis(200));
    }
    // And Git LFS can fetch it by that name.
    let batch = serde_json::json!({ "operation": "download", "objects": [{ "oid": sha, "size": 11534336 }] });
    let a = curl(&[
        "-H",
        &auth,
        "-H",
        "content-type: application/vnd.git-lfs+json",
        "--data",
        &batch.to_string(),
        &format!("http://{http}/org/pushed.git/info/lfs/objects/batch"),
    ]);
    let v = json(&String::from_utf8_lossy(&a.body));
    let href = v["objects"][0]["actions"]["download"]["href"].as_str().unwrap_or_else(|| panic!("{v}")).to_owned();
    let got = curl(&[&href]);
    assert!(got.body == std::fs::read(src.join("model.bin")).unwrap());
}
