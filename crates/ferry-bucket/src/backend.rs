//! `BucketBackend`: chunk records and tree nodes in packs, and the store's
//! journal, in an object-store bucket that is the source of truth.
//!
//! Keys under the address's prefix (`protocol/store.md` §7):
//! `ferry-bucket` (marks a bucket ferry made), `writer` (the lease of the
//! one store that writes it), `packs/<32 hex>` and
//! `journal/<seq, 20 digits>-<n, 6 digits>` (journal entries, and
//! announcements of packs now in the bucket).

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};

use ferry_core::Id;
use ferry_store::{BackendError, ChunkBackend, IndexEntry, JournalEntry, Location, RecordVisitor, Recovered, RecoveryVisitor, RepackPolicy, VerifiedRecord};

use crate::config::BucketConfig;
use ferry_store::pack::{self, Kind, PackName, PackWriter, Retirement};

/// The marker object: its presence says the prefix holds a ferry bucket.
const MARKER: &str = "ferry-bucket";
const MARKER_TEXT: &[u8] = b"ferry bucket, format 1\n";
/// How long a writer's lease lasts without renewal; it renews every third.
const LEASE: Duration = Duration::from_secs(30);
/// Uploads above this size go as multipart uploads of parts this large.
const PART: usize = 8 << 20;
/// Parts of one upload, and packs of one read, in flight at once.
const PARALLEL: usize = 8;
/// Sealed packs uploading in the background at once, beyond which the
/// writer waits.
const UPLOADS_AHEAD: usize = 2;
/// Recently uploaded packs kept in memory for reads (a pull right after a
/// push reads what the push just wrote).
const RECENT_PACKS: usize = 2;
/// Bytes read from a pack's end to find its index in one request.
const TAIL_GUESS: u64 = 64 << 10;
/// Journal objects read at once by a reader of the journal.
const JOURNAL_WINDOW: usize = 64;

fn pack_location(name: &PackName, offset: u32, len: u32) -> Location {
    let mut b = [0u8; 24];
    b[..16].copy_from_slice(name);
    b[16..20].copy_from_slice(&offset.to_le_bytes());
    b[20..].copy_from_slice(&len.to_le_bytes());
    Location::new(&b).expect("24 bytes is a valid location")
}

fn parse_location(loc: &Location) -> Option<(PackName, Range<usize>)> {
    let b = loc.as_bytes();
    if b.len() != 24 {
        return None;
    }
    let offset = u32::from_le_bytes(b[16..20].try_into().ok()?) as usize;
    let len = u32::from_le_bytes(b[20..].try_into().ok()?) as usize;
    Some((b[..16].try_into().ok()?, offset..offset + len))
}

/// A pack's number within its writer's run.
fn pack_seq(name: &PackName) -> u64 {
    u64::from_be_bytes(name[8..].try_into().expect("8 bytes"))
}

fn unavailable(e: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable(e.to_string())
}

fn now_secs() -> u64 {
    ferry_core::time::unix_now() as u64
}

/// The pack being filled, and sealed packs not uploaded yet: uploading in
/// the background, or failed and retried at the next `sync`. Their records
/// stay readable from here.
struct Writing {
    name: PackName,
    pack: PackWriter,
    unsent: Vec<(PackName, Arc<Vec<u8>>)>,
    uploading: usize,
}

/// What the upload tasks share with the backend.
struct Packs {
    writing: Mutex<Writing>,
    /// Signalled whenever an upload ends.
    upload_ended: Condvar,
    /// Recently uploaded packs, for reads.
    recent: Mutex<VecDeque<(PackName, Arc<Vec<u8>>)>>,
}

impl Packs {
    fn writing(&self) -> MutexGuard<'_, Writing> {
        self.writing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A pack is in the bucket: no longer unsent, kept among the recent.
    fn uploaded(&self, name: PackName, bytes: Arc<Vec<u8>>) {
        self.writing().unsent.retain(|(n, _)| *n != name);
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.push_back((name, bytes));
        while recent.len() > RECENT_PACKS {
            recent.pop_front();
        }
    }
}

/// The one store allowed to write a bucket: `writer` holds this holder's
/// id and when its lease ends.
struct Lease {
    holder: String,
    /// Unix seconds until which this process may write; 0 once it learns
    /// another writer took over.
    valid_until: AtomicU64,
}

pub struct BucketBackend {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    rt: tokio::runtime::Runtime,
    pack_size: u64,
    policy: RepackPolicy,
    run: [u8; 8],
    packs_made: AtomicU64,
    packs: Arc<Packs>,
    /// Only one `sync` uploads at a time.
    syncing: Mutex<()>,
    /// The key of the newest journal object written or read: (branch
    /// move, objects after it).
    journal_pos: Mutex<(u64, u32)>,
    /// Packs of this run numbered below this are announced in the journal
    /// (durable); the mutex makes one announcement at a time.
    announced: Mutex<u64>,
    announced_below: AtomicU64,
    lease: Arc<Lease>,
    /// A reader (a replica's backend): holds no lease, writes nothing.
    read_only: bool,
}

impl BucketBackend {
    /// Starts a new bucket: refused if the address already holds one.
    /// `holder` names the writer (the same name may take its own lease
    /// back at once after a crash).
    pub fn create(config: &BucketConfig, holder: &str) -> Result<BucketBackend, BackendError> {
        let b = Self::connect(config, holder)?;
        let marker = b.key(MARKER);
        let store = b.store.clone();
        let exists = b.wait(async move { store.head(&marker).await });
        match exists {
            Ok(_) => return Err(BackendError::Other(format!("{} already holds a ferry bucket; rebuild a store from it with `ferry rebuild`", config.address))),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(unavailable(e)),
        }
        b.take_lease()?;
        let (store, marker) = (b.store.clone(), b.key(MARKER));
        b.wait(async move { store.put(&marker, PutPayload::from_static(MARKER_TEXT)).await }).map_err(unavailable)?;
        Ok(b)
    }

    /// Opens a bucket ferry made, as its writer.
    pub fn open(config: &BucketConfig, holder: &str) -> Result<BucketBackend, BackendError> {
        let b = Self::connect(config, holder)?;
        let (store, marker) = (b.store.clone(), b.key(MARKER));
        match b.wait(async move { store.head(&marker).await }) {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => return Err(BackendError::Other(format!("{} holds no ferry bucket", config.address))),
            Err(e) => return Err(unavailable(e)),
        }
        b.take_lease()?;
        Ok(b)
    }

    /// Opens a bucket ferry made as a reader: no lease, nothing written;
    /// what a read replica serves from while another store writes.
    pub fn open_reader(config: &BucketConfig) -> Result<BucketBackend, BackendError> {
        let mut b = Self::connect(config, "reader")?;
        b.read_only = true;
        let (store, marker) = (b.store.clone(), b.key(MARKER));
        match b.wait(async move { store.head(&marker).await }) {
            Ok(_) => Ok(b),
            Err(object_store::Error::NotFound { .. }) => Err(BackendError::Other(format!("{} holds no ferry bucket", config.address))),
            Err(e) => Err(unavailable(e)),
        }
    }

    fn connect(config: &BucketConfig, holder: &str) -> Result<BucketBackend, BackendError> {
        // HTTPS needs a process-wide rustls provider; another part of ferry
        // may have installed the same one already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (store, prefix) = config.connect()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ferry-bucket")
            .enable_all()
            .build()
            .map_err(|e| BackendError::Other(format!("starting the bucket's I/O threads: {e}")))?;
        let seed = format!("{holder}:{}:{:?}", std::process::id(), SystemTime::now());
        let run: [u8; 8] = blake3::hash(seed.as_bytes()).as_bytes()[..8].try_into().expect("8 bytes");
        let b = BucketBackend {
            store,
            prefix,
            rt,
            pack_size: config.pack_size,
            policy: RepackPolicy { repack_below: config.repack_below as f64 / 100.0, grace: config.gc_grace },
            run,
            packs_made: AtomicU64::new(0),
            packs: Arc::new(Packs {
                writing: Mutex::new(Writing { name: [0; 16], pack: PackWriter::default(), unsent: Vec::new(), uploading: 0 }),
                upload_ended: Condvar::new(),
                recent: Mutex::new(VecDeque::new()),
            }),
            syncing: Mutex::new(()),
            journal_pos: Mutex::new((0, 0)),
            announced: Mutex::new(0),
            announced_below: AtomicU64::new(0),
            lease: Arc::new(Lease { holder: holder.to_owned(), valid_until: AtomicU64::new(0) }),
            read_only: false,
        };
        b.writing().name = b.next_pack_name();
        Ok(b)
    }

    fn key(&self, name: &str) -> ObjectPath {
        self.prefix.clone().join(name)
    }

    fn pack_key(&self, name: &PackName) -> ObjectPath {
        self.key("packs").join(hex::encode(name).as_str())
    }

    fn journal_key(&self, seq: u64, n: u32) -> ObjectPath {
        self.key("journal").join(format!("{seq:020}-{n:06}").as_str())
    }

    fn next_pack_name(&self) -> PackName {
        self.pack_name(self.packs_made.fetch_add(1, Ordering::SeqCst))
    }

    /// The name of this run's pack number `seq`.
    fn pack_name(&self, seq: u64) -> PackName {
        let mut name = [0u8; 16];
        name[..8].copy_from_slice(&self.run);
        name[8..].copy_from_slice(&seq.to_be_bytes());
        name
    }

    fn writing(&self) -> MutexGuard<'_, Writing> {
        self.packs.writing()
    }

    /// Runs `f` on the bucket's own runtime and waits for it: the store
    /// calls the backend from plain threads and from inside other runtimes
    /// alike.
    fn wait<T: Send + 'static>(&self, f: impl std::future::Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().expect("the bucket's runtime lives as long as the backend")
    }

    /// Takes the writer's lease, refusing if another holder's is still
    /// valid, and keeps renewing it. Garage has no conditional writes, so
    /// two writers starting within one round trip of each other could both
    /// take it; the renewal notices the loser within a third of a lease.
    fn take_lease(&self) -> Result<(), BackendError> {
        let key = self.key("writer");
        let store = self.store.clone();
        let read_key = key.clone();
        let current = self.wait(async move { read_lease(&*store, &read_key).await })?;
        if let Some((holder, until)) = current {
            if holder != self.lease.holder && until > now_secs() {
                return Err(BackendError::Unavailable(format!(
                    "another store writes this bucket ({holder}, lease valid for {} s more); one writer per bucket",
                    until - now_secs()
                )));
            }
        }
        let (store, lease) = (self.store.clone(), self.lease.clone());
        self.wait(async move { renew(&*store, &key, &lease).await })?;
        let (store, lease, key) = (self.store.clone(), Arc::downgrade(&self.lease), self.key("writer"));
        self.rt.spawn(async move {
            loop {
                tokio::time::sleep(LEASE / 3).await;
                let Some(lease) = lease.upgrade() else { return };
                // Given back, or lost to another store.
                if lease.valid_until.load(Ordering::SeqCst) == 0 {
                    return;
                }
                match read_lease(&*store, &key).await {
                    Ok(Some((holder, _))) if holder != lease.holder => {
                        lease.valid_until.store(0, Ordering::SeqCst);
                        tracing::error!(%holder, "another store took over this bucket: this one stops writing");
                        return;
                    }
                    Ok(_) => {
                        if let Err(e) = renew(&*store, &key, &lease).await {
                            tracing::warn!(error = %e, "renewing the bucket lease failed; retrying");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "reading the bucket lease failed; retrying"),
                }
            }
        });
        Ok(())
    }

    fn check_lease(&self) -> Result<(), BackendError> {
        if self.read_only {
            return Err(BackendError::Other("this store reads its bucket as a replica: it writes nothing (write to the bucket's writer)".into()));
        }
        // A margin for clocks and for the journal write itself.
        if now_secs() + 5 >= self.lease.valid_until.load(Ordering::SeqCst) {
            return Err(BackendError::Unavailable("this store no longer holds the bucket's writer lease; nothing more is written".into()));
        }
        Ok(())
    }

    /// Uploads sealed packs, oldest first, whole or in parts, and waits.
    fn upload(&self, packs: Vec<(PackName, Arc<Vec<u8>>)>) -> Result<(), BackendError> {
        for (name, bytes) in packs {
            let (store, key, data) = (self.store.clone(), self.pack_key(&name), bytes.clone());
            self.wait(async move { put_pack(&*store, &key, data).await }).map_err(unavailable)?;
            self.packs.uploaded(name, bytes);
        }
        Ok(())
    }

    /// Seals the pack being filled (if it holds anything) as unsent, and
    /// starts the next.
    fn seal(&self, w: &mut Writing) -> Option<(PackName, Arc<Vec<u8>>)> {
        if w.pack.is_empty() {
            return None;
        }
        let sealed = Arc::new(std::mem::take(&mut w.pack).seal());
        let name = std::mem::replace(&mut w.name, self.next_pack_name());
        w.unsent.push((name, sealed.clone()));
        Some((name, sealed))
    }

    /// Uploads a sealed pack in the background, once fewer than
    /// `UPLOADS_AHEAD` are under way (so memory stays bounded while the
    /// writer goes on filling the next).
    fn upload_behind<'a>(&'a self, mut w: MutexGuard<'a, Writing>, name: PackName, bytes: Arc<Vec<u8>>) {
        while w.uploading >= UPLOADS_AHEAD {
            w = self.packs.upload_ended.wait(w).unwrap_or_else(|p| p.into_inner());
        }
        w.uploading += 1;
        drop(w);
        let (store, key, packs) = (self.store.clone(), self.pack_key(&name), self.packs.clone());
        self.rt.spawn(async move {
            let result = put_pack(&*store, &key, bytes.clone()).await;
            match result {
                Ok(()) => packs.uploaded(name, bytes),
                // Left unsent: the next `sync` tries again.
                Err(e) => tracing::warn!(pack = %key, error = %e, "uploading a pack failed; it is retried at the next sync"),
            }
            packs.writing().uploading -= 1;
            packs.upload_ended.notify_all();
        });
    }

    /// A record's bytes if its pack is still in memory.
    fn in_memory(&self, name: &PackName, range: &Range<usize>) -> Option<Vec<u8>> {
        {
            let w = self.writing();
            if w.name == *name {
                return w.pack.bytes().get(range.clone()).map(<[u8]>::to_vec);
            }
            if let Some((_, b)) = w.unsent.iter().find(|(n, _)| n == name) {
                return b.get(range.clone()).map(<[u8]>::to_vec);
            }
        }
        let recent = self.packs.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().find(|(n, _)| n == name).and_then(|(_, b)| b.get(range.clone()).map(<[u8]>::to_vec))
    }

    /// Every pack's key and size.
    fn list_packs(&self) -> Result<Vec<(ObjectPath, u64)>, BackendError> {
        let (store, prefix) = (self.store.clone(), self.key("packs"));
        self.wait(async move { store.list(Some(&prefix)).map_ok(|m| (m.location, m.size)).try_collect::<Vec<_>>().await }).map_err(unavailable)
    }
}

async fn read_lease(store: &dyn ObjectStore, key: &ObjectPath) -> Result<Option<(String, u64)>, BackendError> {
    match store.get(key).await {
        Ok(r) => {
            let text = r.bytes().await.map_err(unavailable)?;
            let text = String::from_utf8_lossy(&text);
            let mut words = text.split_whitespace();
            let holder = words.next().unwrap_or_default().to_owned();
            let until = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            Ok(Some((holder, until)))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(unavailable(e)),
    }
}

async fn renew(store: &dyn ObjectStore, key: &ObjectPath, lease: &Lease) -> Result<(), BackendError> {
    let until = now_secs() + LEASE.as_secs();
    store.put(key, PutPayload::from(format!("{} {until}\n", lease.holder).into_bytes())).await.map_err(unavailable)?;
    lease.valid_until.store(until, Ordering::SeqCst);
    Ok(())
}

async fn put_pack(store: &dyn ObjectStore, key: &ObjectPath, data: Arc<Vec<u8>>) -> object_store::Result<()> {
    if data.len() <= PART {
        store.put(key, PutPayload::from(Bytes::from(data.to_vec()))).await?;
        return Ok(());
    }
    let mut upload = WriteMultipart::new_with_chunk_size(store.put_multipart(key).await?, PART);
    for part in data.chunks(PART) {
        upload.wait_for_capacity(PARALLEL).await?;
        upload.write(part);
    }
    upload.finish().await?;
    Ok(())
}

/// A pack's index from its end: one suffix read when the index is small
/// (which also tells the pack's size), a second when it is not. None: the
/// bucket does not hold the pack.
async fn read_index(store: &dyn ObjectStore, key: &ObjectPath) -> Result<Option<Vec<pack::Entry>>, BackendError> {
    let corrupt = |e: ferry_core::FormatError| BackendError::Other(format!("pack {key}: {e}"));
    let got = match store.get_opts(key, GetOptions { range: Some(GetRange::Suffix(TAIL_GUESS)), ..Default::default() }).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(unavailable(e)),
    };
    let size = got.meta.size;
    let mut tail = got.bytes().await.map_err(unavailable)?;
    if tail.len() < pack::FOOTER_LEN {
        return Err(BackendError::Other(format!("pack {key}: {size} bytes, too short for a pack")));
    }
    let need = (pack::index_len(&tail[tail.len() - pack::FOOTER_LEN..], size).map_err(corrupt)? + pack::FOOTER_LEN) as u64;
    if need > tail.len() as u64 {
        tail = store.get_range(key, size - need..size).await.map_err(unavailable)?;
    }
    pack::decode_index(&tail, size).map(Some).map_err(corrupt)
}

impl ChunkBackend for BucketBackend {
    fn name(&self) -> &'static str {
        "bucket"
    }

    fn put(&self, records: &[VerifiedRecord]) -> Result<Vec<Location>, BackendError> {
        if self.read_only {
            return self.check_lease().map(|()| Vec::new());
        }
        let mut w = self.writing();
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            if w.pack.len() as u64 + r.record().len() as u64 >= pack::MAX_PACK_LEN {
                return Err(BackendError::Other("a pack reached the format's size limit before the store synced".into()));
            }
            let (offset, len) = w.pack.add_record(r.id(), r.record(), r.raw_len() as u32, r.codec(), r.base());
            out.push(pack_location(&w.name, offset, len));
        }
        if w.pack.len() as u64 >= self.pack_size {
            if let Some((name, bytes)) = self.seal(&mut w) {
                self.upload_behind(w, name, bytes);
                // Packs uploaded meanwhile become durable, so their entries
                // leave memory; one that failed is announced after `sync`.
                if let Err(e) = self.announce() {
                    tracing::warn!(error = %e, "announcing uploaded packs failed; retried at the next sync");
                }
            }
        }
        Ok(out)
    }

    fn put_nodes(&self, nodes: &[(Id, Vec<u8>)]) -> Result<Location, BackendError> {
        let mut w = self.writing();
        for (id, enc) in nodes {
            w.pack.add_node(*id, enc.clone());
        }
        Ok(pack_location(&w.name, 0, 0))
    }

    fn durable(&self, location: &Location) -> bool {
        let Some((name, _)) = parse_location(location) else { return true };
        if name[..8] != self.run {
            return true;
        }
        // A pack is durable once the journal announces it (which it does
        // for packs in the bucket, in the order they were filled).
        pack_seq(&name) < self.announced_below.load(Ordering::SeqCst)
    }

    fn deferred(&self) -> Option<u64> {
        Some(self.pack_size)
    }

    fn sync(&self) -> Result<(), BackendError> {
        let _one = self.syncing.lock().unwrap_or_else(|p| p.into_inner());
        let unsent = {
            let mut w = self.writing();
            self.seal(&mut w);
            // Uploads under way finish first; what is left failed, or was
            // just sealed.
            while w.uploading > 0 {
                w = self.packs.upload_ended.wait(w).unwrap_or_else(|p| p.into_inner());
            }
            w.unsent.clone()
        };
        self.upload(unsent)?;
        self.announce()
    }

    fn get_many(&self, wanted: &[(Id, &Location)]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let mut out: Vec<Option<Vec<u8>>> = vec![None; wanted.len()];
        // Per pack: the ranges to read and where each answer goes.
        let mut remote: HashMap<PackName, (Vec<Range<u64>>, Vec<usize>)> = HashMap::new();
        for (i, (_, loc)) in wanted.iter().enumerate() {
            let Some((name, range)) = parse_location(loc) else { continue };
            match self.in_memory(&name, &range) {
                Some(bytes) => out[i] = Some(bytes),
                None => {
                    let slot = remote.entry(name).or_default();
                    slot.0.push(range.start as u64..range.end as u64);
                    slot.1.push(i);
                }
            }
        }
        if remote.is_empty() {
            return Ok(out);
        }
        let store = self.store.clone();
        let reads: Vec<(ObjectPath, Vec<Range<u64>>, Vec<usize>)> =
            remote.into_iter().map(|(name, (ranges, slots))| (self.pack_key(&name), ranges, slots)).collect();
        // `get_ranges` coalesces nearby ranges of one pack into one request;
        // packs are read in parallel.
        let fetched = self.wait(async move {
            futures_util::stream::iter(reads)
                .map(|(key, ranges, slots)| {
                    let store = store.clone();
                    async move {
                        match store.get_ranges(&key, &ranges).await {
                            Ok(bytes) => Ok(slots.into_iter().zip(bytes).collect::<Vec<_>>()),
                            Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
                            Err(e) => Err(unavailable(e)),
                        }
                    }
                })
                .buffer_unordered(PARALLEL)
                .try_collect::<Vec<_>>()
                .await
        })?;
        for (slot, bytes) in fetched.into_iter().flatten() {
            out[slot] = Some(bytes.to_vec());
        }
        Ok(out)
    }

    fn for_each(&self, visit: &mut RecordVisitor<'_>) -> Result<(), BackendError> {
        for (key, size) in self.list_packs()? {
            let Some(name) = key.filename().and_then(|f| hex::decode(f).ok()).and_then(|n| PackName::try_from(n).ok()) else { continue };
            let store = self.store.clone();
            let k = key.clone();
            let data = self.wait(async move { store.get(&k).await?.bytes().await }).map_err(unavailable)?;
            let entries = pack::decode_index(&data, size).map_err(|e| BackendError::Other(format!("pack {key}: {e}")))?;
            for e in entries.iter().filter(|e| e.kind == Kind::Record) {
                let range = e.offset as usize..(e.offset + e.len) as usize;
                visit(e.id, &pack_location(&name, e.offset, e.len), &data[range])?;
            }
        }
        Ok(())
    }

    fn delete(&self, _gone: &[(Id, Location)]) -> Result<(), BackendError> {
        Err(BackendError::Other("deleting records from packs is not supported yet".into()))
    }

    fn reclaim(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn repack_policy(&self) -> Option<RepackPolicy> {
        Some(self.policy)
    }

    fn pack_of(&self, location: &Location) -> Option<PackName> {
        parse_location(location).map(|(name, _)| name)
    }

    fn pack_nodes(&self, name: &PackName) -> Result<Vec<Id>, BackendError> {
        let (store, key) = (self.store.clone(), self.pack_key(name));
        let entries = self
            .wait(async move { read_index(&*store, &key).await })?
            .ok_or_else(|| BackendError::Other(format!("pack {} is not in the bucket", hex::encode(name))))?;
        Ok(entries.into_iter().filter(|e| e.kind == Kind::Node).map(|e| e.id).collect())
    }

    fn retire(&self, retirement: &Retirement) -> Result<(), BackendError> {
        for packs in retirement.packs.chunks(pack::MAX_ANNOUNCED) {
            self.write_journal(None, pack::encode_retirement(&Retirement { at: retirement.at, packs: packs.to_vec() }))?;
        }
        Ok(())
    }

    fn delete_packs(&self, names: &[PackName]) -> Result<(), BackendError> {
        self.check_lease()?;
        let store = self.store.clone();
        let keys: Vec<ObjectPath> = names.iter().map(|n| self.pack_key(n)).collect();
        self.wait(async move {
            futures_util::stream::iter(keys)
                .map(|key| {
                    let store = store.clone();
                    async move {
                        match store.delete(&key).await {
                            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                            Err(e) => Err(unavailable(e)),
                        }
                    }
                })
                .buffer_unordered(PARALLEL)
                .try_collect::<Vec<()>>()
                .await
        })?;
        Ok(())
    }

    fn close(&self) -> Result<(), BackendError> {
        self.release()
    }

    fn journal(&self, entry: &JournalEntry) -> Result<(), BackendError> {
        self.write_journal(entry.branch.as_ref().map(|m| m.seq), entry.encode())
    }

    fn journal_after(&self, after_seq: u64, visit: &mut RecoveryVisitor<'_>) -> Result<(), BackendError> {
        let start = {
            let pos = *self.journal_pos.lock().unwrap_or_else(|p| p.into_inner());
            pos.max((after_seq, 0))
        };
        let (store, prefix, offset) = (self.store.clone(), self.key("journal"), self.journal_key(start.0, start.1));
        let mut keys = self
            .wait(async move { store.list_with_offset(Some(&prefix), &offset).map_ok(|m| m.location).try_collect::<Vec<_>>().await })
            .map_err(unavailable)?;
        keys.sort();
        let mut pos = start;
        // Announced packs that are gone: deleted after a retirement this
        // same read must then hand over (it was written before them).
        let (mut missing, mut retired) = (HashSet::new(), HashSet::new());
        for window in keys.chunks(JOURNAL_WINDOW) {
            // Fetched in parallel, with the packs that announcements name,
            // and handed over in order.
            let (store, fetch) = (self.store.clone(), window.to_vec());
            let objects = self
                .wait(async move {
                    futures_util::stream::iter(fetch)
                        .map(|key| {
                            let store = store.clone();
                            async move { store.get(&key).await?.bytes().await }
                        })
                        .buffered(PARALLEL)
                        .try_collect::<Vec<_>>()
                        .await
                })
                .map_err(unavailable)?;
            let mut parsed = Vec::with_capacity(objects.len());
            let mut announced = Vec::new();
            for (key, bytes) in window.iter().zip(objects) {
                let Some(at) = journal_position(key) else { continue };
                let object = if bytes.starts_with(pack::ANNOUNCE_MAGIC) {
                    let names = pack::decode_announcement(&bytes).map_err(|e| BackendError::Other(format!("journal object {key}: {e}")))?;
                    announced.extend(names.iter().copied());
                    JournalObject::Announced(names)
                } else if bytes.starts_with(pack::RETIRE_MAGIC) {
                    let r = pack::decode_retirement(&bytes).map_err(|e| BackendError::Other(format!("journal object {key}: {e}")))?;
                    retired.extend(r.packs.iter().copied());
                    JournalObject::Retired(r)
                } else {
                    JournalObject::Entry(JournalEntry::decode(&bytes).map_err(|e| BackendError::Other(format!("journal entry {key}: {e}")))?)
                };
                parsed.push((at, object));
            }
            let mut contents = self.read_packs(announced)?;
            for (at, object) in parsed {
                match object {
                    JournalObject::Entry(e) => visit(Recovered::Journal(e))?,
                    JournalObject::Announced(names) => {
                        for name in names {
                            match contents.remove(&name) {
                                Some(Some(recovered)) => {
                                    for r in recovered {
                                        visit(r)?;
                                    }
                                }
                                Some(None) => {
                                    missing.insert(name);
                                }
                                None => {}
                            }
                        }
                    }
                    JournalObject::Retired(r) => visit(Recovered::Retired(r))?,
                }
                pos = pos.max(at);
            }
        }
        if let Some(gone) = missing.difference(&retired).next() {
            return Err(BackendError::Other(format!("the journal announces pack {} but the bucket does not hold it", hex::encode(gone))));
        }
        let mut p = self.journal_pos.lock().unwrap_or_else(|p| p.into_inner());
        *p = (*p).max(pos);
        Ok(())
    }
}

/// A journal object as read: a journal entry, an announcement of packs, or
/// a retirement of packs.
enum JournalObject {
    Entry(JournalEntry),
    Announced(Vec<PackName>),
    Retired(Retirement),
}

/// A journal key's position: (branch move, objects after it).
fn journal_position(key: &ObjectPath) -> Option<(u64, u32)> {
    let (seq, n) = key.filename()?.split_once('-')?;
    Some((seq.parse().ok()?, n.parse().ok()?))
}

impl BucketBackend {
    /// Writes a journal object under the next key: a branch move's own
    /// (`seq`), or the last move's with the next count. Needs the lease.
    fn write_journal(&self, seq: Option<u64>, bytes: Vec<u8>) -> Result<(), BackendError> {
        self.check_lease()?;
        let mut pos = self.journal_pos.lock().unwrap_or_else(|p| p.into_inner());
        let next = match seq {
            Some(seq) => (seq, 0),
            None => (pos.0, pos.1 + 1),
        };
        let (store, key) = (self.store.clone(), self.journal_key(next.0, next.1));
        self.wait(async move {
            // Where the store has conditional writes, a second writer's
            // object under the same key fails here instead of replacing ours.
            let create = PutOptions { mode: PutMode::Create, ..Default::default() };
            match store.put_opts(&key, PutPayload::from(bytes.clone()), create).await {
                Err(object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. }) => {
                    store.put(&key, PutPayload::from(bytes)).await.map(|_| ())
                }
                Err(object_store::Error::AlreadyExists { .. }) => Err(object_store::Error::Generic {
                    store: "bucket",
                    source: format!("journal object {key} already exists: another store writes this bucket").into(),
                }),
                other => other.map(|_| ()),
            }
        })
        .map_err(unavailable)?;
        *pos = next;
        Ok(())
    }

    /// Announces in the journal the packs of this run now in the bucket
    /// that are not yet announced: those filled before the first one still
    /// unsent. They are durable from then on.
    fn announce(&self) -> Result<(), BackendError> {
        let mut below = self.announced.lock().unwrap_or_else(|p| p.into_inner());
        let first_unsent = {
            let w = self.writing();
            w.unsent.iter().map(|(n, _)| pack_seq(n)).chain([pack_seq(&w.name)]).min().unwrap_or(0)
        };
        if first_unsent <= *below {
            return Ok(());
        }
        let names: Vec<PackName> = (*below..first_unsent).map(|seq| self.pack_name(seq)).collect();
        for batch in names.chunks(pack::MAX_ANNOUNCED) {
            self.write_journal(None, pack::encode_announcement(batch))?;
        }
        *below = first_unsent;
        self.announced_below.store(first_unsent, Ordering::SeqCst);
        Ok(())
    }

    /// What the packs named hold: each one's index entries and nodes, read
    /// with two ranged requests at most (its tail, then its nodes), packs
    /// in parallel; None for a pack the bucket does not hold.
    #[allow(clippy::type_complexity)]
    fn read_packs(&self, names: Vec<PackName>) -> Result<HashMap<PackName, Option<Vec<Recovered>>>, BackendError> {
        if names.is_empty() {
            return Ok(HashMap::new());
        }
        let store = self.store.clone();
        let keyed: Vec<(PackName, ObjectPath)> = names.into_iter().map(|n| (n, self.pack_key(&n))).collect();
        let read = self.wait(async move {
            futures_util::stream::iter(keyed)
                .map(|(name, key)| {
                    let store = store.clone();
                    async move {
                        let Some(entries) = read_index(&*store, &key).await? else { return Ok((name, None)) };
                        let nodes: Vec<&pack::Entry> = entries.iter().filter(|e| e.kind == Kind::Node).collect();
                        // Nodes follow the records: one range holds them all.
                        let bytes = match (nodes.first(), nodes.last()) {
                            (Some(first), Some(last)) => {
                                store.get_range(&key, first.offset as u64..(last.offset + last.len) as u64).await.map_err(unavailable)?
                            }
                            _ => Bytes::new(),
                        };
                        Ok::<_, BackendError>((name, Some((entries, bytes))))
                    }
                })
                .buffer_unordered(PARALLEL)
                .try_collect::<Vec<_>>()
                .await
        })?;
        let mut out = HashMap::with_capacity(read.len());
        for (name, found) in read {
            let Some((entries, node_bytes)) = found else {
                out.insert(name, None);
                continue;
            };
            let base = entries.iter().find(|e| e.kind == Kind::Node).map_or(0, |e| e.offset as usize);
            let contents = entries
                .into_iter()
                .map(|e| match e.kind {
                    Kind::Record => Recovered::Chunk(
                        e.id,
                        IndexEntry { codec: e.codec, raw_len: e.raw_len, stored_len: e.len, base: e.base, location: pack_location(&name, e.offset, e.len) },
                    ),
                    Kind::Node => {
                        let at = e.offset as usize - base;
                        Recovered::Node(e.id, node_bytes[at..at + e.len as usize].to_vec())
                    }
                })
                .collect();
            out.insert(name, Some(contents));
        }
        Ok(out)
    }
}

impl BucketBackend {
    /// Gives the lease back (if this store still holds it), so the next
    /// writer need not wait it out; nothing is journaled after.
    fn release(&self) -> Result<(), BackendError> {
        if self.lease.valid_until.swap(0, Ordering::SeqCst) == 0 {
            return Ok(());
        }
        let (store, key) = (self.store.clone(), self.key("writer"));
        match self.wait(async move { tokio::time::timeout(Duration::from_secs(5), store.delete(&key)).await }) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(BackendError::Unavailable("giving the writer lease back timed out".into())),
        }
    }
}

impl Drop for BucketBackend {
    fn drop(&mut self) {
        let _ = self.release();
    }
}
