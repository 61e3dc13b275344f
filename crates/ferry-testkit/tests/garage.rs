//! The Garage harness against the real binary, driven by a real S3 client:
//! curl, which signs requests with SigV4. One node stores and returns an
//! object; in three nodes with replication factor 3 an object written
//! through node 0 still reads and lists through node 1 with node 2 killed
//! (two of three are a quorum), and node 2 serves it again once restarted.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use ferry_testkit::{noise, Garage};

/// curl signing for the harness's key and region; returns the body, or
/// panics with curl's error and Garage's response.
fn s3(garage: &Garage, method: &str, url: &str, body: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new("curl")
        .args(["--silent", "--show-error", "--fail-with-body", "--max-time", "10", "--request", method])
        .arg("--aws-sigv4")
        .arg(format!("aws:amz:{}:s3", garage.region()))
        .arg("--user")
        .arg(format!("{}:{}", garage.access_key_id(), garage.secret_access_key()))
        // Garage requires the header, which curl 7.88 does not send.
        .args(["--header", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
        .args(body.map(|_| ["--data-binary", "@-"]).into_iter().flatten())
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run curl");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(body.unwrap_or_default()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{method} {url}: {}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    out.stdout
}

fn object_url(garage: &Garage, endpoint: &str, key: &str) -> String {
    format!("{endpoint}/{}/{key}", garage.bucket())
}

#[test]
fn single_node_stores_and_returns_an_object() {
    let started = Instant::now();
    let garage = Garage::single().unwrap();
    eprintln!("one node up in {:?}", started.elapsed());
    let body = noise(3 << 20, 1);
    let url = object_url(&garage, &garage.endpoint(), "models/a.bin");
    s3(&garage, "PUT", &url, Some(&body));
    assert!(s3(&garage, "GET", &url, None) == body, "the object read back differs");
}

#[test]
fn three_nodes_serve_with_one_down() {
    let started = Instant::now();
    let mut garage = Garage::cluster(3).unwrap();
    eprintln!("three nodes up in {:?}", started.elapsed());
    let endpoints = garage.endpoints();
    assert_eq!(endpoints.len(), 3);
    let body = noise(3 << 20, 2);
    s3(&garage, "PUT", &object_url(&garage, &endpoints[0], "models/b.bin"), Some(&body));

    garage.kill_node(2);
    assert!(s3(&garage, "GET", &object_url(&garage, &endpoints[1], "models/b.bin"), None) == body, "read through node 1 differs");
    let listing = String::from_utf8(s3(&garage, "GET", &format!("{}/{}?list-type=2", endpoints[1], garage.bucket()), None)).unwrap();
    assert!(listing.contains("<Key>models/b.bin</Key>"), "not listed through node 1: {listing}");

    let restarted = Instant::now();
    garage.restart_node(2).unwrap();
    eprintln!("node 2 back in {:?}", restarted.elapsed());
    assert!(s3(&garage, "GET", &object_url(&garage, &endpoints[2], "models/b.bin"), None) == body, "read through restarted node 2 differs");
}
