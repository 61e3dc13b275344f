//! Criterion benchmarks of the engine's stages on one core's worth of data:
//! chunking, hashing, compression, and store put/get.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferry_core::codec::{Encoder, DEFAULT_ZSTD_LEVEL};
use ferry_core::Id;
use ferry_store::VerifiedRecord;
use ferry_testkit::{Rng, TempStore};

fn bf16_like(len: usize) -> Vec<u8> {
    // Normal-ish weights (sum of uniforms), std ~0.02, as bf16.
    let mut rng = Rng::from_state(0x1234_5678_9abc_def1);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let mut s = 0f32;
        for _ in 0..4 {
            s += (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        }
        let v = (s - 2.0) * 0.035;
        out.extend_from_slice(&((v.to_bits() >> 16) as u16).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn engine(c: &mut Criterion) {
    let data = bf16_like(64 << 20);
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("fastcdc_cut_64MiB", |b| b.iter(|| ferry_core::chunking::Chunker::new(&data).cut(&data, true)));
    let chunks = ferry_core::chunking::chunk_all(&data);
    g.bench_function("blake3_chunks_64MiB", |b| {
        b.iter(|| chunks.iter().map(|&(o, l)| std::hint::black_box(Id::of_chunk(&data[o..o + l]))).fold(0u8, |x, id| x ^ id.as_bytes()[0]))
    });
    g.bench_function("zstd1_encode_64MiB", |b| {
        let mut enc = Encoder::new(DEFAULT_ZSTD_LEVEL);
        b.iter(|| chunks.iter().map(|&(o, l)| enc.encode(&data[o..o + l]).len()).sum::<usize>())
    });
    let mut enc = Encoder::new(DEFAULT_ZSTD_LEVEL);
    let records: Vec<VerifiedRecord> = chunks.iter().map(|&(o, l)| VerifiedRecord::encode(&data[o..o + l], &mut enc)).collect();
    let stored: u64 = records.iter().map(|r| r.record().len() as u64).sum();
    g.bench_function("zstd_decode_verify_64MiB", |b| {
        b.iter(|| records.iter().map(|r| ferry_core::codec::decode_verified(&r.id(), r.record()).unwrap().len()).sum::<usize>())
    });
    g.throughput(Throughput::Bytes(stored));
    g.bench_function("store_put_sync_64MiB", |b| {
        b.iter_with_setup(TempStore::new, |store| {
            let session = store.write_session();
            for batch in records.chunks(128) {
                session.put_records(batch).unwrap();
            }
            store.sync().unwrap();
            drop(session);
            drop(store);
        })
    });
    let store = TempStore::new();
    let session = store.write_session();
    for batch in records.chunks(128) {
        session.put_records(batch).unwrap();
    }
    store.sync().unwrap();
    drop(session);
    g.bench_function("store_get_verified_64MiB", |b| b.iter(|| records.iter().map(|r| store.chunk(&r.id()).unwrap().len()).sum::<usize>()));
    g.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
