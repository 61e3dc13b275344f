//! Where a bucket is: the address a store keeps in its metadata
//! (`s3://BUCKET/PREFIX?endpoint=URL&region=R&pack_size=BYTES&gc_grace=SECONDS&repack_below=PERCENT`, or
//! `file:///DIR` for a local directory), turned into an object store.
//! Credentials are never part of it: they come from the usual AWS
//! variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...).

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use url::Url;

use ferry_store::BackendError;

/// Packs are uploaded once about this many bytes wait, unless the address
/// says otherwise.
pub const DEFAULT_PACK_SIZE: u64 = 32 << 20;
/// Bounds on `pack_size`: small packs cost a request each, large ones
/// memory (a pack is assembled in memory before it is uploaded).
pub const PACK_SIZE_RANGE: std::ops::RangeInclusive<u64> = (1 << 20)..=(1 << 30);

/// How long gc keeps a retired pack before deleting it, unless the address
/// says otherwise: longer than any read replica's poll and any pull that
/// learnt a chunk's old location.
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(3600);
/// gc rewrites a pack once less than this share of its bytes (percent) is
/// still reachable, unless the address says otherwise.
pub const DEFAULT_REPACK_BELOW: u64 = 50;

/// A parsed bucket address.
#[derive(Debug, Clone)]
pub struct BucketConfig {
    /// The address as given (what the store keeps).
    pub address: String,
    pub pack_size: u64,
    /// How long a pack gc retired stays in the bucket (`gc_grace=SECONDS`).
    pub gc_grace: Duration,
    /// The live share, in percent, below which gc rewrites a pack
    /// (`repack_below=PERCENT`, 1 to 100).
    pub repack_below: u64,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    S3 { bucket: String, prefix: String, endpoint: Option<String>, region: Option<String> },
    Local { dir: std::path::PathBuf },
}

fn bad(address: &str, why: impl std::fmt::Display) -> BackendError {
    BackendError::Other(format!("bucket address {address:?}: {why}"))
}

impl BucketConfig {
    /// Parses an address; `s3://` and `file://` are understood.
    pub fn parse(address: &str) -> Result<BucketConfig, BackendError> {
        let url = Url::parse(address).map_err(|e| bad(address, e))?;
        let mut pack_size = DEFAULT_PACK_SIZE;
        let (mut gc_grace, mut repack_below) = (DEFAULT_GC_GRACE, DEFAULT_REPACK_BELOW);
        let (mut endpoint, mut region) = (None, None);
        for (k, v) in url.query_pairs() {
            match &*k {
                "endpoint" => endpoint = Some(v.into_owned()),
                "region" => region = Some(v.into_owned()),
                "pack_size" => {
                    pack_size = v.parse().map_err(|_| bad(address, "pack_size is not a number of bytes"))?;
                    if !PACK_SIZE_RANGE.contains(&pack_size) {
                        return Err(bad(address, format!("pack_size must be within {PACK_SIZE_RANGE:?} bytes")));
                    }
                }
                "gc_grace" => gc_grace = Duration::from_secs(v.parse().map_err(|_| bad(address, "gc_grace is not a number of seconds"))?),
                "repack_below" => {
                    repack_below = v.parse().map_err(|_| bad(address, "repack_below is not a percentage"))?;
                    if !(1..=100).contains(&repack_below) {
                        return Err(bad(address, "repack_below must be a percentage from 1 to 100"));
                    }
                }
                other => return Err(bad(address, format!("unknown setting {other:?}"))),
            }
        }
        let kind = match url.scheme() {
            "s3" => {
                let bucket = url.host_str().filter(|b| !b.is_empty()).ok_or_else(|| bad(address, "no bucket name"))?.to_owned();
                let prefix = url.path().trim_matches('/').to_owned();
                Kind::S3 { bucket, prefix, endpoint, region }
            }
            "file" => Kind::Local { dir: url.to_file_path().map_err(|_| bad(address, "not a local path"))? },
            other => return Err(bad(address, format!("unknown scheme {other:?} (s3:// or file://)"))),
        };
        Ok(BucketConfig { address: address.to_owned(), pack_size, gc_grace, repack_below, kind })
    }

    /// The object store, and the prefix every key of this bucket starts
    /// with.
    pub fn connect(&self) -> Result<(Arc<dyn ObjectStore>, ObjectPath), BackendError> {
        match &self.kind {
            Kind::S3 { bucket, prefix, endpoint, region } => {
                // A store that is down fails a command within about half a
                // minute, with the cause, rather than after object_store's
                // default three minutes of retries.
                let retry = RetryConfig { max_retries: 4, retry_timeout: Duration::from_secs(30), ..Default::default() };
                let client = ClientOptions::new().with_connect_timeout(Duration::from_secs(5));
                let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(retry).with_client_options(client);
                if let Some(e) = endpoint {
                    // An explicit endpoint is a store other than AWS's
                    // (Garage, MinIO, ...): path-style requests, and plain
                    // HTTP if the endpoint says so.
                    b = b.with_endpoint(e).with_virtual_hosted_style_request(false).with_allow_http(e.starts_with("http://"));
                }
                if let Some(r) = region {
                    b = b.with_region(r);
                }
                let store = b.build().map_err(|e| bad(&self.address, e))?;
                Ok((Arc::new(store), ObjectPath::from(prefix.as_str())))
            }
            Kind::Local { dir } => {
                std::fs::create_dir_all(dir).map_err(|e| bad(&self.address, e))?;
                let store = LocalFileSystem::new_with_prefix(dir).map_err(|e| bad(&self.address, e))?;
                Ok((Arc::new(store), ObjectPath::default()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked() {
        let c = BucketConfig::parse("s3://models/hub-eu?endpoint=http://127.0.0.1:3900&region=garage&pack_size=2097152").unwrap();
        assert_eq!(c.pack_size, 2 << 20);
        assert_eq!((c.gc_grace, c.repack_below), (DEFAULT_GC_GRACE, DEFAULT_REPACK_BELOW));
        let c = BucketConfig::parse("s3://models/x?gc_grace=0&repack_below=80").unwrap();
        assert_eq!((c.gc_grace, c.repack_below), (Duration::ZERO, 80));
        assert!(BucketConfig::parse("s3://models/x?repack_below=0").is_err());
        assert!(BucketConfig::parse("s3://models/x?gc_grace=soon").is_err());
        assert!(BucketConfig::parse("s3://models/x?pack_size=1").is_err());
        assert!(BucketConfig::parse("s3://models/x?secret=1").is_err());
        assert!(BucketConfig::parse("gs://models/x").is_err());
        assert!(BucketConfig::parse("s3:///x").is_err());
    }
}
