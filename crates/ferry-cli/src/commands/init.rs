//! `ferry init` and `ferry rebuild`: a new store, its chunks in the
//! embedded database or in a bucket; a store made again from its bucket.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ferry_bucket::{BucketBackend, BucketConfig};
use ferry_store::Store;
use serde::Serialize;

use crate::output::Report;

/// Where a store's chunks live.
#[derive(clap::Args, Default)]
pub struct BackendArgs {
    /// Keep chunks, trees and the journal in a bucket instead of the
    /// embedded database: `s3://BUCKET/PREFIX` (credentials from the AWS
    /// variables: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or `file:///DIR`.
    #[arg(long, value_name = "ADDRESS")]
    pub backend: Option<String>,
    /// The S3 endpoint, for a store other than AWS (Garage, MinIO, ...).
    #[arg(long, value_name = "URL", requires = "backend")]
    pub s3_endpoint: Option<String>,
    /// The S3 region (Garage's default is "garage").
    #[arg(long, value_name = "REGION", requires = "backend")]
    pub s3_region: Option<String>,
    /// Upload a pack once this many MiB of chunks wait (1 to 1024).
    #[arg(long, value_name = "MIB", requires = "backend")]
    pub pack_mib: Option<u64>,
}

impl BackendArgs {
    /// The bucket's full address, settings included (what the store keeps).
    pub(crate) fn address(&self) -> Option<String> {
        let base = self.backend.as_ref()?;
        let mut settings = Vec::new();
        if let Some(e) = &self.s3_endpoint {
            settings.push(format!("endpoint={e}"));
        }
        if let Some(r) = &self.s3_region {
            settings.push(format!("region={r}"));
        }
        if let Some(m) = self.pack_mib {
            settings.push(format!("pack_size={}", m << 20));
        }
        let sep = if base.contains('?') { '&' } else { '?' };
        Some(if settings.is_empty() { base.clone() } else { format!("{base}{sep}{}", settings.join("&")) })
    }
}

#[derive(Serialize)]
pub struct Initialised {
    pub store: PathBuf,
    pub backend: String,
}

impl Report for Initialised {
    fn text(&self) -> Vec<String> {
        vec![format!("initialised an empty ferry store in {} (chunks in {})", self.store.display(), self.backend)]
    }
}

pub fn run(path: &Path, args: &BackendArgs) -> Result<Initialised> {
    let store = match args.address() {
        None => Store::init(path)?,
        Some(address) => {
            if Store::exists_at(path) {
                return Err(ferry_store::StoreError::AlreadyExists(path.to_owned()).into());
            }
            let config = BucketConfig::parse(&address)?;
            let backend = BucketBackend::create(&config, &holder(path))?;
            Store::init_with(path, Some((Box::new(backend), &address)))?
        }
    };
    Ok(Initialised { store: path.to_owned(), backend: describe(&store) })
}

#[derive(Serialize)]
pub struct Rebuilt {
    pub store: PathBuf,
    pub backend: String,
    pub branches: usize,
    pub chunks: u64,
}

impl Report for Rebuilt {
    fn text(&self) -> Vec<String> {
        vec![format!("rebuilt {} from {}: {} branches, {} chunks", self.store.display(), self.backend, self.branches, self.chunks)]
    }
}

/// `ferry rebuild`: a new store directory from what the bucket holds.
pub fn rebuild(path: &Path, args: &BackendArgs) -> Result<Rebuilt> {
    let address = args.address().context("rebuild needs --backend: the bucket to rebuild from")?;
    let config = BucketConfig::parse(&address)?;
    if Store::exists_at(path) {
        return Err(ferry_store::StoreError::AlreadyExists(path.to_owned()).into());
    }
    let backend = BucketBackend::open(&config, &holder(path))?;
    let store = Store::rebuild(path, Box::new(backend), &address)?;
    Ok(Rebuilt { store: path.to_owned(), backend: describe(&store), branches: store.all_branches()?.len(), chunks: store.stats()?.chunks })
}

/// Opens the store at `path`, on whichever backend it was made with.
pub fn open(path: &Path) -> Result<Store> {
    let holder = holder(path);
    Ok(Store::open_with(path, &|name, config| ferry_bucket::open_backend(name, config, &holder))?)
}

/// Opens the store at `path` as a read replica of its bucket: the bucket
/// is read, never written, and no lease is taken. A directory that does not
/// hold a store yet is made from the bucket `args` names.
pub fn open_replica(path: &Path, args: &BackendArgs) -> Result<Store> {
    let reader = |config: &str| -> Result<Box<dyn ferry_store::ChunkBackend>, ferry_store::BackendError> {
        Ok(Box::new(BucketBackend::open_reader(&BucketConfig::parse(config)?)?))
    };
    let store = match args.address() {
        Some(address) if !Store::exists_at(path) => Store::rebuild(path, reader(&address)?, &address)?,
        _ => Store::open_with(path, &|name, config| if name == "bucket" { reader(config).map(Some) } else { Ok(None) })?,
    };
    if store.backend().deferred().is_none() {
        anyhow::bail!("a read replica serves a store on a bucket; {} keeps its chunks in the {} backend", path.display(), store.backend().name());
    }
    Ok(store)
}

fn describe(store: &Store) -> String {
    store.backend().name().to_owned()
}

/// Names this store as a bucket's writer: the same directory on the same
/// machine takes its own lease back at once after a crash.
fn holder(path: &Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let dir = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    format!("{}:{}", host.trim(), dir.display()).replace(char::is_whitespace, "_")
}
