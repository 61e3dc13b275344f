//! The hub service embedded in another program, with no transport: a
//! store, a token, and the typed requests a door would pass on.
//!
//! cargo run --release -p ferry-service --example answer_requests

use std::io::Cursor;
use std::sync::Arc;

use ferry_core::revision::{Entry, Revision};
use ferry_service::{Access, AccessFile, HubService, ReposQuery, Scope};
use ferry_store::Store;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(Store::init(dir.path())?);

    // One revision of org/demo holding one file.
    let session = store.write_session();
    let file = session.ingest(Cursor::new(b"weights, or anything else".to_vec()), &())?;
    let entry = Entry { path: "model.bin".into(), file_id: file.file_id, size: file.size, executable: false };
    let rev = Revision::new(vec![], "demo".into(), 0, "first".into(), vec![entry])?;
    let head = session.commit("org/demo", "main", None, &rev)?;
    drop(session);

    // A read token for org/*, as `ferry token create` makes one.
    let token = AccessFile::edit(dir.path(), |a| a.create_token("org/*", Scope::Read, 0))?;
    let service = Arc::new(HubService::new(store.clone(), Arc::new(Access::for_store(dir.path()))));
    let grant = service.authenticate(&token, "127.0.0.1".parse()?).await?;
    let caller = service.session(grant);

    let page = caller.list_repos(&ReposQuery { pattern: "*/*".into(), after: String::new(), since: None })?;
    for repo in &page.repos {
        println!("{}: {} branch(es), change feed at {}", repo.name, repo.branches.len(), page.seq);
    }
    let mut revisions = 0;
    caller.history("org/demo", &[head], &[], 10, &mut |batch| {
        revisions += batch.len();
        Ok(())
    })?;
    println!("history of org/demo@main: {revisions} revision(s), head {}", head.short());

    // Missing and forbidden look the same; a read token may not write.
    let refused = caller.refs("other/repo").unwrap_err();
    println!("other/repo: {:?}: {}", refused.code, refused.message);
    let refused = caller.put_nodes("org/demo", &[]).unwrap_err();
    println!("writing with a read token: {:?}: {}", refused.code, refused.message);
    Ok(())
}
