//! `protocol/cli-json.md` and what `ferry --json` prints agree: every field
//! a command prints is documented for it, with the documented type, and
//! every field documented as always present is printed.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use ferry_tests::*;
use serde_json::Value;

/// A documented field: its type as written in the table, and whether it may be absent.
struct Documented {
    ty: String,
    optional: bool,
}

/// The field table under `### {section}` in the document.
fn documented(section: &str) -> BTreeMap<String, Documented> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/cli-json.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let heading = format!("\n### {section}\n");
    let start = doc.find(&heading).unwrap_or_else(|| panic!("cli-json.md has no section {section:?}")) + heading.len();
    let body = &doc[start..];
    let body = &body[..body.find("\n#").unwrap_or(body.len())];
    let mut fields = BTreeMap::new();
    for row in body.lines().filter(|l| l.starts_with("| `")) {
        let cols: Vec<&str> = row.split('|').map(str::trim).collect();
        assert!(cols.len() >= 4, "{section}: malformed row {row:?}");
        let name = cols[1].trim_matches('`').to_owned();
        let (ty, optional) = match cols[2].strip_suffix(", optional") {
            Some(t) => (t.to_owned(), true),
            None => (cols[2].to_owned(), false),
        };
        assert!(fields.insert(name.clone(), Documented { ty, optional }).is_none(), "{section}: {name} documented twice");
    }
    assert!(!fields.is_empty(), "{section}: no field table");
    fields
}

/// Every field path in a printed value (`a`, `a.b`, `a[]`, `a[].b`) with
/// the values found there. A top-level array stands for its elements.
fn printed(v: &Value) -> BTreeMap<String, Vec<Value>> {
    fn object(v: &Value, prefix: &str, out: &mut BTreeMap<String, Vec<Value>>) {
        let Value::Object(m) = v else { return };
        for (k, x) in m {
            let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            out.entry(path.clone()).or_default().push(x.clone());
            match x {
                Value::Object(_) => object(x, &path, out),
                Value::Array(items) => {
                    for item in items.iter().filter(|i| i.is_object()) {
                        out.entry(format!("{path}[]")).or_default().push(item.clone());
                        object(item, &format!("{path}[]"), out);
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = BTreeMap::new();
    match v {
        Value::Array(items) => {
            assert!(!items.is_empty(), "an empty listing shows no fields: {v}");
            items.iter().for_each(|i| object(i, "", &mut out));
        }
        _ => object(v, "", &mut out),
    }
    out
}

fn is_id(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

fn has_type(ty: &str, v: &Value) -> bool {
    match ty {
        "string" | "path" => v.is_string(),
        "id" => is_id(v),
        "id or null" => v.is_null() || is_id(v),
        "integer" => v.is_u64() || v.is_i64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        t if t.starts_with("array") => v.is_array(),
        t => panic!("cli-json.md uses an unknown type {t:?}"),
    }
}

/// Checks one printed value against the section that documents it.
fn agrees(section: &str, v: &Value) {
    let doc = documented(section);
    let got = printed(v);
    // `a[]` (the elements of `a`) is a path only for finding parents.
    for (path, values) in got.iter().filter(|(p, _)| !p.ends_with("[]")) {
        let d = doc.get(path).unwrap_or_else(|| panic!("{section}: prints {path:?}, which cli-json.md does not document: {v}"));
        for x in values {
            assert!(has_type(&d.ty, x), "{section}: {path} is documented as {} but printed as {x}", d.ty);
        }
    }
    for (path, d) in &doc {
        // A field inside an object or array is required only where its parent is printed.
        let parent = path.rsplit_once('.').map(|p| p.0);
        if !d.optional && parent.is_none_or(|p| got.contains_key(p)) {
            assert!(got.contains_key(path), "{section}: cli-json.md documents {path:?}, which is not printed: {v}");
        }
    }
}

fn write(dir: &Path, rel: &str, data: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// `ferry --json serve` with extra arguments, its stderr going to `log`;
/// returns the hub and its listening line.
fn serve(store: &Path, extra: &[&str], log: &Path) -> (Hub, Value) {
    let stderr = std::fs::File::create(log).unwrap();
    let mut child = ferry(store)
        .args(["--json", "serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start ferry serve");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let v = json(&line);
    let hub = Hub {
        child,
        addr: v["listen"].as_str().unwrap().to_owned(),
        store: store.to_owned(),
        fingerprint: v["fingerprint"].as_str().unwrap().to_owned(),
        http: None,
    };
    (hub, v)
}

#[test]
fn local_commands_print_what_the_document_says() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let src = tmp.path().join("src");
    write(&src, "model.bin", &noise(1 << 20, 1));
    write(&src, "config.json", b"{}");

    agrees("init", &json(&ok(ferry(&store).args(["--json", "init"]))));
    let committed = run(ferry(&store).args(["--json", "commit", "org/m"]).arg(&src).args(["-m", "one"]));
    assert!(committed.status.success(), "{}", stderr(&committed));
    // Progress: status lines on stderr, the last one complete.
    let lines: Vec<Value> = stderr(&committed).lines().filter(|l| l.starts_with('{')).map(json).collect();
    assert!(!lines.is_empty(), "no progress lines: {}", stderr(&committed));
    for l in &lines {
        agrees("progress", l);
    }
    let last = lines.last().unwrap();
    assert_eq!((last["progress"].as_str(), last["bytes"].as_u64()), (Some("hashing"), last["total"].as_u64()), "{last}");
    let commit = json(&String::from_utf8_lossy(&committed.stdout));
    agrees("commit", &commit);
    write(&src, "model.bin", &noise(1 << 20, 2));
    ok(ferry(&store).args(["commit", "org/m"]).arg(&src).args(["-m", "two"]));
    agrees("log", &json(&ok(ferry(&store).args(["--json", "log", "org/m"]))));
    agrees("ls", &json(&ok(ferry(&store).args(["--json", "ls", "org/m"]))));
    agrees("export", &json(&ok(ferry(&store).args(["--json", "export", "org/m"]).arg(tmp.path().join("out")))));
    agrees("stats", &json(&ok(ferry(&store).args(["--json", "stats"]))));
    agrees("fsck", &json(&ok(ferry(&store).args(["--json", "fsck"]))));
    agrees("repos", &json(&ok(ferry(&store).args(["--json", "repos"]))));
    // A store on a bucket (here a local directory), and one rebuilt from it.
    let bucket = format!("file://{}", tmp.path().join("bucket").display());
    let on_bucket = tmp.path().join("on-bucket");
    agrees("init", &json(&ok(ferry(&on_bucket).args(["--json", "init", "--backend", &bucket]))));
    ok(ferry(&on_bucket).args(["commit", "org/m"]).arg(&src).args(["-m", "one"]));
    std::fs::remove_dir_all(&on_bucket).unwrap();
    let rebuilt = json(&ok(ferry(&tmp.path().join("rebuilt")).args(["--json", "rebuild", "--backend", &bucket])));
    agrees("rebuild", &rebuilt);
    assert_eq!((rebuilt["branches"].as_u64(), rebuilt["backend"].as_str()), (Some(1), Some("bucket")));
    let revision = commit["revision"].as_str().unwrap();
    agrees("branch create", &json(&ok(ferry(&store).args(["--json", "branch", "create", "org/m", "old", revision]))));
    agrees("branch list", &json(&ok(ferry(&store).args(["--json", "branch", "list", "org/m"]))));
    agrees("branch delete", &json(&ok(ferry(&store).args(["--json", "branch", "delete", "org/m", "old"]))));
    agrees("tag create and tag delete", &json(&ok(ferry(&store).args(["--json", "tag", "create", "org/m", "v1"]))));
    agrees("tag list", &json(&ok(ferry(&store).args(["--json", "tag", "list", "org/m"]))));
    agrees("tag create and tag delete", &json(&ok(ferry(&store).args(["--json", "tag", "delete", "org/m", "v1"]))));
    let forget = json(&ok(ferry(&store).args(["--json", "forget", "org/m", "--keep-last", "1", "--dry-run"])));
    assert!(!forget["forgotten"].as_array().unwrap().is_empty(), "{forget}");
    agrees("forget", &forget);
    agrees("gc", &json(&ok(ferry(&store).args(["--json", "gc"]))));

    let created = json(&ok(ferry(&store).args(["--json", "token", "create", "--repo", "org/*", "--scope", "read", "--name", "ci", "--expires", "30d"])));
    agrees("token create", &created);
    let tokens = json(&ok(ferry(&store).args(["--json", "token", "list"])));
    agrees("token list", &tokens);
    agrees("token revoke", &json(&ok(ferry(&store).args(["--json", "token", "revoke", tokens[0]["id"].as_str().unwrap()]))));
    agrees("visibility", &json(&ok(ferry(&store).args(["--json", "visibility", "org/*", "public"]))));

    let failed = fails(ferry(&store).args(["--json", "ls", "org/nope"]));
    agrees("error", &json(&String::from_utf8_lossy(&failed.stdout)));
}

#[test]
fn hub_commands_print_what_the_document_says() {
    let tmp = tempfile::tempdir().unwrap();
    let (eu_store, us_store, local, copy) = (tmp.path().join("eu"), tmp.path().join("us"), tmp.path().join("local"), tmp.path().join("copy"));
    for s in [&eu_store, &us_store, &local, &copy] {
        ok(ferry(s).arg("init"));
    }
    let gc_log = tmp.path().join("eu.err");
    let (eu, listening) = serve(&eu_store, &["--gc-every", "1s", "--http", "127.0.0.1:0"], &gc_log);
    agrees("serve: listening", &listening);
    let (us, _) = serve(&us_store, &[], &tmp.path().join("us.err"));
    let eu_token = eu.token("org/*", "write");
    let us_token = us.token("org/*", "write");

    let src = tmp.path().join("src");
    write(&src, "model.bin", &noise(1 << 20, 3));
    ok(ferry(&local).args(["commit", "org/m"]).arg(&src).args(["-m", "one"]));
    agrees("push, pull and upload", &json(&ok(client(&local, Some(&eu_token)).args(["--json", "push", &eu.addr, "org/m"]))));
    agrees("push, pull and upload", &json(&ok(client(&copy, Some(&eu_token)).args(["--json", "pull", &eu.addr, "org/m"]))));
    let mirrored =
        json(&ok(client(&local, None).env("FERRY_FROM_TOKEN", &eu_token).env("FERRY_TO_TOKEN", &us_token).args(["--json", "mirror", &eu.addr, &us.addr])));
    assert_eq!(mirrored["branches_updated"], 1, "{mirrored}");
    agrees("mirror", &mirrored);
    agrees("push, pull and upload", &json(&ok(client(&copy, Some(&eu_token)).args(["--json", "upload", &eu.addr, "org/up"]).arg(&src))));
    agrees("download", &json(&ok(client(&copy, Some(&eu_token)).args(["--json", "download", &eu.addr, "org/up"]).arg(tmp.path().join("down")))));
    let config = tmp.path().join("config.toml");
    let configured = || {
        let mut c = client(&copy, Some(&eu_token));
        c.env("FERRY_CONFIG", &config);
        c
    };
    agrees("remote", &json(&ok(configured().args(["--json", "remote", "add", "eu", &eu.addr]))));
    agrees("login and logout", &json(&ok(configured().args(["--json", "login", "eu"]))));
    agrees("remote", &json(&ok(configured().args(["--json", "remote", "list"]))));
    agrees("login and logout", &json(&ok(configured().args(["--json", "logout", "eu"]))));
    let admin = eu.token("org/*", "admin");
    agrees("repo delete", &json(&ok(client(&copy, Some(&admin)).args(["--json", "repo", "delete", "org/up", "--hub", &eu.addr]))));
    let audit = json(&ok(ferry(&eu_store).args(["--json", "audit"])));
    assert_eq!(audit.as_array().unwrap().len(), 3, "{audit}");
    agrees("audit", &audit);

    let started = Instant::now();
    let gc = loop {
        let text = std::fs::read_to_string(&gc_log).unwrap();
        if let Some(line) = text.lines().find(|l| l.starts_with('{')) {
            break json(line);
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the hub reported no gc run: {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    agrees("serve: gc", &gc);
}
