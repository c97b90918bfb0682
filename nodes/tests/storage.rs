//! The storage interface against a real S3 server (`s3s-fs`, a separate process), through the same client code
//! as production: a large object is streamed in parts with memory bounded by a few parts, and a body that fails
//! leaves nothing. A test binary of its own: it sets the `AWS_*` variables the S3 client reads.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::s3::{free_port, S3};
use common::scratch;
use strom_engine::config::StorageConfig;
use strom_engine::metrics::Metrics;
use strom_engine::storage::{Storage, StorageMetrics, PARTS_IN_FLIGHT, PART_SIZE};

/// Peak resident memory of this process so far (kB).
fn vm_hwm_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_large_object_streams_to_s3_in_parts_with_bounded_memory() {
    if S3::skip("this test") {
        return;
    }
    let root = scratch("storage-s3");
    let s3 = S3::start(&root, free_port());
    for (k, v) in s3.env() {
        std::env::set_var(k, v);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let config = StorageConfig { url: Some("s3://strom/uploads-test".into()), ..StorageConfig::default() };
        let storage = Storage::open(&config, StorageMetrics::new(&Metrics::new())).expect("S3 storage");
        // 256 MiB made on the fly in 1 MiB pieces (never held whole).
        const PIECES: usize = 256;
        let piece = |i: usize| Bytes::from(vec![(i % 253) as u8; 1 << 20]);
        let before = vm_hwm_kb();
        let body = futures_util::stream::iter((0..PIECES).map(move |i| Ok::<_, String>(piece(i))));
        let t = std::time::Instant::now();
        let written = storage.put_stream("big/source.bin", body).await.expect("streamed put");
        let grew_mib = vm_hwm_kb().saturating_sub(before) / 1024;
        eprintln!("256 MiB streamed to s3s-fs in {:?}; peak memory grew {grew_mib} MiB", t.elapsed());
        assert_eq!(written, (PIECES as u64) << 20);
        // Parts in flight, the part being filled, and the client's buffers: far below the object.
        let bound = ((PARTS_IN_FLIGHT + 2) * PART_SIZE) as u64 / (1 << 20) + 32;
        assert!(grew_mib <= bound, "peak memory grew {grew_mib} MiB for a 256 MiB object (bound {bound} MiB)");
        // The object reads back whole (its ends and a piece in the middle).
        let on_disk = root.join("strom/uploads-test/big/source.bin");
        let got = std::fs::read(&on_disk).expect("the object on the S3 server's disk");
        assert_eq!(got.len(), PIECES << 20);
        for i in [0, 131, PIECES - 1] {
            assert!(got[i << 20..(i + 1) << 20] == piece(i)[..], "piece {i}");
        }
        // A body that fails half-way: the upload is aborted, no object appears.
        let failing = futures_util::stream::iter((0..40).map(move |i| match i {
            30 => Err("client went away".to_string()),
            i => Ok(piece(i)),
        }));
        let e = storage.put_stream("big/cut.bin", failing).await.unwrap_err();
        assert!(e.reason.contains("client went away"), "{e}");
        assert_eq!(storage.get("big/cut.bin").await.unwrap(), None);
    });
    drop(rt);
    std::thread::sleep(Duration::from_millis(10));
}
