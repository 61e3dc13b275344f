//! Upload and download end to end: a real hub, real `ferry upload` and
//! `ferry download` processes with no store on the client.

use std::path::Path;

use ferry_testkit::{bf16_nudged, bf16_weights, safetensors_file};
use ferry_tests::*;

fn write(dir: &Path, rel: &str, data: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// A model of three 2 MiB tensors.
fn model(t: &[Vec<u8>]) -> Vec<u8> {
    safetensors_file("", &[("a", &t[0]), ("b", &t[1]), ("c", &t[2])])
}

fn n(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// Files left under temporary names anywhere below `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    read_tree(dir).into_keys().filter(|k| k.contains(".ferry-download")).collect()
}

#[test]
fn upload_and_download_move_only_what_changed_with_no_store_on_the_client() {
    let tmp = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(tmp.path());
    let token = hub.token("org/*", "write");
    // The client's "store" is never created: upload and download need none.
    let me = tmp.path().join("no-store");
    let src = tmp.path().join("src");
    let tensors: Vec<Vec<u8>> = (0..3).map(|i| bf16_weights(1 << 20, i)).collect();
    write(&src, "model.safetensors", &model(&tensors));
    write(&src, "config.json", b"{\"layers\": 3}");
    write(&src, "tokenizer/vocab.txt", &noise(300_000, 4));
    write(&src, "run.sh", b"#!/bin/sh\necho hi\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let v0 = read_tree(&src);
    let size: u64 = v0.values().map(|f| f.len() as u64).sum();

    // -q: the first connection pins the hub's certificate without a note.
    let first = run(client(&me, Some(&token)).args(["-q", "--json", "upload", &hub.addr, "org/m"]).arg(&src).args(["-m", "v0"]));
    assert!(first.status.success() && !stderr(&first).contains("pinned"), "{}", stderr(&first));
    let up = json(&String::from_utf8_lossy(&first.stdout));
    assert!(n(&up, "raw_bytes_moved") >= size - 1000, "{up}");
    // Every chunk went while the files were still being scanned: the
    // transfer after the scan found them all there.
    assert_eq!(n(&up, "chunks_sent_while_scanning"), n(&up, "chunks_moved"), "{up}");
    let head0 = up["head"].as_str().unwrap().to_owned();
    let again = json(&ok(client(&me, Some(&token)).args(["--json", "upload", &hub.addr, "org/m"]).arg(&src)));
    assert_eq!(again["up_to_date"], true, "{again}");

    let out = tmp.path().join("out");
    let d = json(&ok(client(&me, Some(&token)).args(["--json", "download", &hub.addr, "org/m"]).arg(&out)));
    assert_eq!((n(&d, "files"), n(&d, "bytes")), (4, size), "{d}");
    assert_eq!(read_tree(&out), v0);
    assert!(std::fs::metadata(out.join("run.sh")).unwrap().permissions().mode() & 0o111 != 0, "the executable bit travels");

    // A new version with one tensor changed: the upload and the download
    // into the directory holding the old one move about that tensor.
    let mut tuned = tensors.clone();
    tuned[1] = bf16_nudged(&tensors[1], 0.002, 9);
    write(&src, "model.safetensors", &model(&tuned));
    let up = json(&ok(client(&me, Some(&token)).args(["--json", "upload", &hub.addr, "org/m"]).arg(&src).args(["-m", "v1"])));
    let changed = tuned[1].len() as u64;
    assert!((changed..changed + 200_000).contains(&n(&up, "raw_bytes_moved")), "{up}");
    assert_eq!(n(&up, "chunks_sent_while_scanning"), n(&up, "chunks_moved"), "{up}");
    let d = json(&ok(client(&me, Some(&token)).args(["--json", "download", &hub.addr, "org/m"]).arg(&out)));
    assert!((changed..changed + 200_000).contains(&n(&d, "raw_bytes_fetched")), "{d}");
    assert_eq!(n(&d, "files_unchanged"), 3, "{d}");
    assert_eq!(n(&d, "bytes_cloned"), 0, "no reflinks on this filesystem: {d}");
    assert_eq!(read_tree(&out), read_tree(&src));
    let d = json(&ok(client(&me, Some(&token)).args(["--json", "download", &hub.addr, "org/m"]).arg(&out)));
    assert_eq!((n(&d, "files_unchanged"), n(&d, "chunks_fetched")), (4, 0), "{d}");

    // The first revision, seeded from the second: only the old tensor comes.
    let old = tmp.path().join("old");
    let d = json(&ok(client(&me, Some(&token)).args(["--json", "download", &hub.addr, &format!("org/m@{head0}")]).arg(&old).arg("--seed").arg(&out)));
    assert!(n(&d, "raw_bytes_fetched") < changed + 200_000, "{d}");
    assert_eq!(read_tree(&old), v0);
    // Only some files.
    let some = tmp.path().join("some");
    ok(client(&me, Some(&token)).args(["download", &hub.addr, "org/m", "--include", "*.json", "--include", "tokenizer/*"]).arg(&some));
    assert_eq!(read_tree(&some).into_keys().collect::<Vec<_>>(), ["config.json", "tokenizer/vocab.txt"]);
    for dir in [&out, &old, &some] {
        assert!(leftovers(dir).is_empty());
    }
    assert!(!me.exists(), "no store was made on the client");

    // An interrupted download leaves the file under a temporary name; the
    // chunks written stay and a re-run fetches only the rest.
    let resumed = tmp.path().join("resumed");
    let whole = std::fs::read(src.join("model.safetensors")).unwrap();
    let mut half = whole.clone();
    half[whole.len() / 2..].fill(0);
    write(&resumed, ".model.safetensors.ferry-download", &half);
    let d = json(&ok(client(&me, Some(&token)).args(["--json", "download", &hub.addr, "org/m", "--include", "*.safetensors"]).arg(&resumed)));
    assert!(n(&d, "raw_bytes_fetched") < whole.len() as u64 * 55 / 100, "{d}");
    assert_eq!(std::fs::read(resumed.join("model.safetensors")).unwrap(), whole);
    assert!(leftovers(&resumed).is_empty());

    // A reader that may not see the repository learns nothing of it.
    let other = hub.token("elsewhere/*", "read");
    let denied = fails(client(&me, Some(&other)).args(["download", &hub.addr, "org/m"]).arg(tmp.path().join("denied")));
    let missing = fails(client(&me, Some(&other)).args(["download", &hub.addr, "elsewhere/none"]).arg(tmp.path().join("denied")));
    assert_eq!(denied.status.code(), Some(4), "{}", stderr(&denied));
    assert_eq!(missing.status.code(), Some(4), "{}", stderr(&missing));
    hub.kill();
    assert_eq!(json(&ok(ferry(&hub.store).args(["--json", "fsck"])))["ok"], true);
    assert_eq!(json(&ok(ferry(&hub.store).args(["--json", "log", "org/m"]))).as_array().unwrap().len(), 2);
}

#[test]
fn on_a_filesystem_with_reflinks_a_new_version_shares_the_old_files_bytes_instead_of_copying_them() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(xfs) = Reflinks::mount(tmp.path()) else { return };
    let mut hub = Hub::start(tmp.path());
    let token = hub.token("org/*", "write");
    let me = tmp.path().join("no-store");
    let src = tmp.path().join("src");
    let tensors: Vec<Vec<u8>> = (0..4).map(|i| bf16_weights(1 << 20, i)).collect();
    write(&src, "model.safetensors", &model(&tensors));
    ok(client(&me, Some(&token)).args(["upload", &hub.addr, "org/m"]).arg(&src));
    let out = xfs.dir.join("model");
    ok(client(&me, Some(&token)).args(["download", &hub.addr, "org/m"]).arg(&out));

    let mut tuned = tensors.clone();
    tuned[2] = bf16_nudged(&tensors[2], 0.002, 9);
    write(&src, "model.safetensors", &model(&tuned));
    ok(client(&me, Some(&token)).args(["upload", &hub.addr, "org/m"]).arg(&src));
    let d = json(&ok(client(&me, Some(&token)).args(["--json", "download", &hub.addr, "org/m"]).arg(&out)));
    // The three tensors that stayed (and the header) were shared, not copied.
    let changed = tuned[2].len() as u64;
    let size = n(&d, "bytes");
    assert!(n(&d, "bytes_cloned") >= size - changed - 200_000, "{d}");
    assert!(n(&d, "raw_bytes_fetched") < changed + 200_000, "{d}");
    assert_eq!(read_tree(&out), read_tree(&src));
    assert!(leftovers(&out).is_empty());
    hub.kill();
}

#[test]
fn a_fine_tune_downloads_as_deltas_against_the_base_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(tmp.path());
    let token = hub.token("org/*", "write");
    let src = tmp.path().join("src");
    let base: Vec<Vec<u8>> = (0..3).map(|i| bf16_weights(1 << 20, i)).collect();
    write(&src, "model.safetensors", &model(&base));
    // Committed and pushed from a store, the fine-tune is kept as deltas
    // against its base on the hub.
    let a = tmp.path().join("a");
    ok(ferry(&a).arg("init"));
    ok(ferry(&a).args(["commit", "org/m"]).arg(&src).args(["-m", "base"]));
    ok(client(&a, Some(&token)).args(["push", &hub.addr, "org/m"]));
    let me = tmp.path().join("no-store");
    let out = tmp.path().join("out");
    ok(client(&me, Some(&token)).args(["download", &hub.addr, "org/m"]).arg(&out));
    let tuned: Vec<Vec<u8>> = base.iter().enumerate().map(|(i, t)| bf16_nudged(t, 0.002, 10 + i as u64)).collect();
    write(&src, "model.safetensors", &model(&tuned));
    ok(ferry(&a).args(["commit", "org/m"]).arg(&src).args(["-m", "tuned"]));
    ok(client(&a, Some(&token)).args(["push", &hub.addr, "org/m"]));

    let d = json(&ok(client(&me, Some(&token)).args(["--json", "download", &hub.addr, "org/m"]).arg(&out)));
    let size = n(&d, "bytes");
    assert!(n(&d, "deltas") > 0, "{d}");
    assert!(n(&d, "record_bytes_fetched") * 100 < size * 60, "{d}");
    assert!(n(&d, "wire_bytes_received") * 100 < size * 60, "{d}");
    assert_eq!(read_tree(&out), read_tree(&src));
}

#[test]
fn a_named_remote_and_a_saved_token_stand_in_for_host_port_and_the_token() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::start(tmp.path());
    let token = hub.token("org/*", "write");
    let config = tmp.path().join("cfg/config.toml");
    let me = tmp.path().join("no-store");
    let cmd = || {
        let mut c = client(&me, None);
        c.env("FERRY_CONFIG", &config);
        c
    };
    let login = |t: &str| {
        let mut child = cmd()
            .args(["login", "eu"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{t}").unwrap();
        child.wait_with_output().unwrap()
    };
    ok(cmd().args(["remote", "add", "eu", &hub.addr]));
    let listed = json(&ok(cmd().args(["--json", "remote", "list"])));
    assert_eq!(listed[0]["hub"], hub.addr.as_str());
    assert_eq!(listed[0]["logged_in"], false);

    // A token the hub does not know is not saved.
    let bad = login("fy_0000000000000000_notatoken");
    assert!(!bad.status.success());
    let saved = config.parent().unwrap().join("tokens/eu");
    assert!(!saved.exists());
    let good = login(&token);
    assert!(good.status.success(), "{}", stderr(&good));
    assert_eq!(std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!String::from_utf8_lossy(&good.stdout).contains(&token), "a token is never printed");

    // The name replaces host:port, the saved token FERRY_TOKEN.
    let src = tmp.path().join("src");
    write(&src, "config.json", b"{}");
    ok(cmd().args(["upload", "eu", "org/m"]).arg(&src));
    let out = tmp.path().join("out");
    ok(cmd().args(["download", "eu", "org/m"]).arg(&out));
    assert_eq!(read_tree(&out), read_tree(&src));
    // A token file others can read is used, with a warning.
    std::fs::set_permissions(&saved, std::fs::Permissions::from_mode(0o644)).unwrap();
    let warned = run(cmd().args(["download", "eu", "org/m"]).arg(&out));
    assert!(warned.status.success() && stderr(&warned).contains("readable by others"), "{}", stderr(&warned));

    // Logged out, the private repository is out of reach.
    ok(cmd().args(["logout", "eu"]));
    let denied = fails(cmd().args(["download", "eu", "org/m"]).arg(&out));
    assert_eq!(denied.status.code(), Some(4), "{}", stderr(&denied));
    // A configuration file that does not parse is named, with the line.
    std::fs::write(&config, "[remotes.eu]\nhub = \"a:1\"\nhubb = 3\n").unwrap();
    let broken = fails(cmd().args(["download", "eu", "org/m"]).arg(&out));
    assert_eq!(broken.status.code(), Some(2), "{}", stderr(&broken));
    assert!(stderr(&broken).contains("config.toml") && stderr(&broken).contains("line 3"), "{}", stderr(&broken));
}

#[test]
fn serve_takes_every_flag_from_the_configuration_file_and_flags_win_over_it() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("hub-store");
    ok(ferry(&store).arg("init"));
    let config = tmp.path().join("hub.toml");
    let text = format!(
        "author = \"Config Author <ca@example.org>\"\n\n[serve]\nstore = {:?}\nlisten = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nidle-timeout = \"40s\"\nmax-connections = 64\n",
        store.display().to_string()
    );
    std::fs::write(&config, text).unwrap();
    let bare = || {
        let mut c = std::process::Command::new(ferry_bin());
        c.env_remove("FERRY_STORE").env_remove("FERRY_AUTHOR").env_remove("FERRY_CONFIG").arg("--config").arg(&config);
        c
    };
    // The store, the listening address and the HTTP door all come from the file.
    let mut serve = bare();
    serve.args(["--json", "serve"]);
    let hub = Hub::spawn(serve, store.clone());
    assert!(hub.http.is_some(), "the file's http setting was not applied");
    let token = hub.token("org/*", "write");
    let src = tmp.path().join("src");
    write(&src, "f", b"weights");
    ok(client(&tmp.path().join("none"), Some(&token)).args(["upload", &hub.addr, "org/m"]).arg(&src));
    drop(hub);
    // A flag beats the file.
    let mut serve = bare();
    serve.args(["--json", "serve", "--http", "127.0.0.1:0", "--listen", "127.0.0.1:0"]);
    let hub = Hub::spawn(serve, store.clone());
    assert!(hub.http.is_some());
    drop(hub);
    // The file's author is recorded when neither --author nor FERRY_AUTHOR says.
    let local = tmp.path().join("local");
    ok(bare().arg("--store").arg(&local).arg("init"));
    ok(bare().arg("--store").arg(&local).args(["commit", "org/m"]).arg(&src).args(["-m", "one"]));
    let log = json(&ok(bare().arg("--store").arg(&local).args(["--json", "log", "org/m"])));
    assert_eq!(log[0]["author"], "Config Author <ca@example.org>");
    // A setting serve does not have is named, and nothing starts.
    std::fs::write(&config, "[serve]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n").unwrap();
    let refused = fails(bare().arg("--store").arg(&store).arg("serve"));
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("\"lisen\" is not a flag of ferry serve"), "{}", stderr(&refused));
}
