//! Stores in temporary directories.

use std::ops::Deref;
use std::path::Path;

use ferry_core::Id;
use ferry_store::Store;

/// The chunk ids of file `root`'s tree, in no particular order.
pub fn chunks_of(store: &Store, root: Id) -> Vec<Id> {
    let mut ids = Vec::new();
    let mut stack = vec![root];
    while let Some(n) = stack.pop() {
        let node = store.node(&n).unwrap_or_else(|e| panic!("read node {n}: {e}"));
        let leaf = node.height == 1;
        for c in node.children {
            if leaf {
                ids.push(c.id)
            } else {
                stack.push(c.id)
            }
        }
    }
    ids
}

/// A new, open store in a temporary directory that is deleted when this is
/// dropped. Derefs to [`Store`].
pub struct TempStore {
    // Declared first so it is dropped (and closed) before its directory goes.
    store: Store,
    dir: tempfile::TempDir,
}

impl TempStore {
    /// Creates the directory and initialises a store in it; panics if either
    /// fails (a test cannot go on without it).
    pub fn new() -> TempStore {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let store = Store::init(dir.path()).unwrap_or_else(|e| panic!("initialise a store in {}: {e}", dir.path().display()));
        TempStore { store, dir }
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for TempStore {
    fn default() -> TempStore {
        TempStore::new()
    }
}

impl Deref for TempStore {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.store
    }
}
