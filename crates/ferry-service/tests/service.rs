//! The hub service over a real store, without any transport: every
//! request authorized against the grants in force when it is answered.

use std::io::Cursor;
use std::sync::Arc;

use ferry_core::revision::{Entry, Revision};
use ferry_core::Id;
use ferry_proto::ErrorCode;
use ferry_service::{Access, AccessFile, Grant, HubService, ReposQuery, Scope, Session};
use ferry_store::Store;

struct Hub {
    _dir: tempfile::TempDir,
    service: Arc<HubService>,
}

fn hub() -> Hub {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::init(dir.path()).unwrap());
    let access = Arc::new(Access::for_store(dir.path()));
    Hub { service: Arc::new(HubService::new(store, access)), _dir: dir }
}

fn commit(store: &Store, repo: &str, text: &str) -> Id {
    let s = store.write_session();
    let head = store.branch(repo, "main").unwrap();
    let got = s.ingest(Cursor::new(text.as_bytes().to_vec()), &()).unwrap();
    let e = Entry { path: "a.txt".into(), file_id: got.file_id, size: got.size, executable: false };
    let rev = Revision::new(head.into_iter().collect(), "t".into(), 0, text.into(), vec![e]).unwrap();
    s.commit(repo, "main", head, &rev).unwrap()
}

fn token(h: &Hub, repo: &str, scope: Scope) -> String {
    AccessFile::edit(h.service.store().path(), |a| a.create_token(repo, scope, 0)).unwrap()
}

async fn session(h: &Hub, token: &str) -> Session {
    let grant = h.service.authenticate(token, "127.0.0.1".parse().unwrap()).await.unwrap();
    h.service.session(grant)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn a_revoked_token_loses_its_rights_at_the_next_request_of_an_open_session() {
    let h = hub();
    commit(h.service.store(), "org/m", "one");
    let t = token(&h, "org/*", Scope::Write);
    let s = rt().block_on(session(&h, &t));
    assert!(s.refs("org/m").is_ok());
    assert!(s.have_chunks("org/m", &[Id::of_chunk(b"x")]).is_ok());
    let id = t.split('_').nth(1).unwrap().to_owned();
    // The access file's time stamp has a resolution the re-read relies on.
    std::thread::sleep(std::time::Duration::from_millis(20));
    AccessFile::edit(h.service.store().path(), |a| a.revoke(&id)).unwrap();
    assert_eq!(s.refs("org/m").unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(s.have_chunks("org/m", &[Id::of_chunk(b"x")]).unwrap_err().code, ErrorCode::NotFound);
}

#[test]
fn missing_and_forbidden_repositories_get_the_same_answer() {
    let h = hub();
    commit(h.service.store(), "secret/x", "hidden");
    let t = token(&h, "org/*", Scope::Write);
    let s = rt().block_on(session(&h, &t));
    let forbidden = s.refs("secret/x").unwrap_err();
    let missing = s.refs("secret/y").unwrap_err();
    assert_eq!((forbidden.code, missing.code), (ErrorCode::NotFound, ErrorCode::NotFound));
    assert_eq!(forbidden.message.replace("secret/x", "R"), missing.message.replace("secret/y", "R"));
    let w1 = s.put_nodes("secret/x", &[]).unwrap_err();
    let w2 = s.put_nodes("secret/y", &[]).unwrap_err();
    assert_eq!((w1.code, w2.code), (ErrorCode::NotFound, ErrorCode::NotFound));
}

#[test]
fn listings_show_only_what_the_caller_may_read() {
    let h = hub();
    commit(h.service.store(), "org/a", "a");
    commit(h.service.store(), "secret/b", "b");
    AccessFile::edit(h.service.store().path(), |a| {
        a.set_public("org/*", true);
        Ok(())
    })
    .unwrap();
    let anonymous = rt().block_on(session(&h, ""));
    assert_eq!(*anonymous.grant(), Grant::Anonymous);
    let page = anonymous.list_repos(&ReposQuery { pattern: "*/*".into(), after: String::new(), since: None }).unwrap();
    let names: Vec<_> = page.repos.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["org/a"]);
    assert!(page.repos[0].public);
    let trusted = h.service.session(Grant::Trusted);
    let page = trusted.list_repos(&ReposQuery { pattern: "*/*".into(), after: String::new(), since: None }).unwrap();
    assert_eq!(page.repos.len(), 2);
}

#[test]
fn a_bad_token_is_refused_and_repeated_failures_lock_the_address_out() {
    let h = hub();
    let peer = "127.0.0.2".parse().unwrap();
    rt().block_on(async {
        for _ in 0..5 {
            assert_eq!(h.service.authenticate("fy_nope_nope", peer).await.unwrap_err().code, ErrorCode::Unauthorized);
        }
        assert_eq!(h.service.authenticate("fy_nope_nope", peer).await.unwrap_err().code, ErrorCode::RateLimited);
    });
}

#[test]
fn an_uploaded_fine_tune_is_stored_as_deltas_against_the_repositorys_main() {
    use ferry_testkit::{bf16_nudged, bf16_weights, safetensors_file};
    let h = hub();
    let t = token(&h, "org/*", Scope::Write);
    let s = rt().block_on(session(&h, &t));
    let base: Vec<Vec<u8>> = (0..2).map(|i| bf16_weights(1 << 20, i)).collect();
    let tuned: Vec<Vec<u8>> = base.iter().enumerate().map(|(i, w)| bf16_nudged(w, 0.002, 10 + i as u64)).collect();
    let file = |t: &[Vec<u8>]| safetensors_file("", &[("a", &t[0]), ("b", &t[1])]);
    let stored_bytes = || h.service.store().stats().unwrap().stored_bytes;
    let upload = |bytes: Vec<u8>, parent: Option<Id>| {
        let f = s.store_file("org/m", Cursor::new(bytes)).unwrap();
        let e = Entry { path: "model.safetensors".into(), file_id: f.file_id, size: f.size, executable: false };
        s.commit_files("org/m", "main", parent, "upload", vec![e]).unwrap().0
    };
    let v1 = upload(file(&base), None);
    let before = stored_bytes();
    let v2_bytes = file(&tuned);
    let v2 = upload(v2_bytes.clone(), Some(v1));
    let grew = stored_bytes() - before;
    assert!(grew * 100 < v2_bytes.len() as u64 * 60, "the fine-tune took {grew} of {} bytes", v2_bytes.len());
    let mut out = Vec::new();
    let rev = h.service.store().revision(&v2).unwrap();
    h.service.store().read_file(&rev.entries[0], &mut out, &()).unwrap();
    assert_eq!(out, v2_bytes);
}

#[test]
fn a_delta_whose_base_the_hub_lacks_is_refused_by_name_and_one_it_holds_is_verified() {
    use ferry_core::codec::{decode_delta, Encoder};
    use ferry_testkit::{bf16_nudged, bf16_weights};
    let h = hub();
    let t = token(&h, "org/*", Scope::Write);
    let s = rt().block_on(session(&h, &t));
    let base = bf16_weights(32 * 1024, 1);
    let new = bf16_nudged(&base, 0.002, 2);
    let (base_id, new_id) = (Id::of_chunk(&base), Id::of_chunk(&new));
    let delta = Encoder::new(1).encode_delta(&new, 2, &base_id, &base).unwrap();
    assert_eq!(decode_delta(&delta, &base).unwrap(), new);
    let err = s.put_chunks("org/m", vec![(new_id, delta.clone())]).unwrap_err();
    assert_eq!(err.code, ErrorCode::BadRequest);
    assert!(err.to_string().contains(&base_id.to_hex()), "{err}");
    assert!(!h.service.store().has_chunks(&[new_id]).unwrap()[0]);
    // With the base on the hub, the same delta is decoded against it; one
    // that claims another chunk's id fails verification.
    s.put_chunks("org/m", vec![(base_id, Encoder::new(1).encode_hinted(&base, 2))]).unwrap();
    let mut wrong = new_id;
    wrong.0[0] ^= 1;
    assert!(s.put_chunks("org/m", vec![(wrong, delta.clone())]).is_err());
    s.put_chunks("org/m", vec![(new_id, delta)]).unwrap();
    assert_eq!(h.service.store().chunk(&new_id).unwrap(), new);
}

#[test]
fn a_reader_gets_a_delta_only_against_a_base_it_proves_it_holds() {
    use ferry_core::codec::{base_proof, decode_verified, CODEC_DELTA};
    use ferry_testkit::{bf16_nudged, bf16_weights, safetensors_file};
    let h = hub();
    let t = token(&h, "org/*", Scope::Write);
    let s = rt().block_on(session(&h, &t));
    let base = bf16_weights(1 << 20, 1);
    let upload = |bytes: Vec<u8>, parent: Option<Id>| {
        let f = s.store_file("org/m", Cursor::new(bytes)).unwrap();
        let e = Entry { path: "model.safetensors".into(), file_id: f.file_id, size: f.size, executable: false };
        s.commit_files("org/m", "main", parent, "upload", vec![e]).unwrap().0
    };
    let v1 = upload(safetensors_file("", &[("w", &base)]), None);
    upload(safetensors_file("", &[("w", &bf16_nudged(&base, 0.002, 2))]), Some(v1));
    // A chunk of the fine-tune stored as a delta, and its base.
    let store = h.service.store();
    let chunks = ferry_testkit::chunks_of(store, store.revision(&store.branch("org/m", "main").unwrap().unwrap()).unwrap().entries[0].file_id);
    let (x, y) = chunks.iter().zip(store.chunk_bases(&chunks).unwrap()).find_map(|(x, b)| Some((*x, b?))).expect("a delta");
    // (This process's own session: what a reader was shown is tested apart.)
    let own = h.service.session(Grant::Trusted);
    let get = |held: Vec<(Id, [u8; 32])>| {
        let mut got = Vec::new();
        own.chunks_against("org/m", &[x], &held, &mut |b| {
            got.extend(b);
            Ok(())
        })
        .unwrap();
        got.pop().unwrap().1
    };
    // A wrong proof (the id alone is not the bytes): a record that decodes alone.
    let alone = get(vec![(y, *y.as_bytes())]);
    assert_eq!(decode_verified(&x, &alone).unwrap(), store.chunk(&x).unwrap());
    let delta = get(vec![(y, base_proof(&store.chunk(&y).unwrap()))]);
    assert_eq!(delta[0], CODEC_DELTA);
}
