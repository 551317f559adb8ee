//! MPTCP crypto microbenchmarks: the key -> token hash the pipeline runs on every learned
//! MP_CAPABLE, and the MP_JOIN / ADD_ADDR HMACs (for tests and replies, not the hot path).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use trapeze_core::crypto;

fn bench_crypto(c: &mut Criterion) {
    let mut group = c.benchmark_group("crypto");
    group.throughput(Throughput::Elements(1));
    group.bench_function("token_from_key", |b| {
        b.iter(|| crypto::token_from_key(black_box(0x0102_0304_0506_0708)))
    });
    group.bench_function("key_sha", |b| {
        b.iter(|| crypto::key_sha(black_box(0x0102_0304_0506_0708)))
    });
    group.bench_function("join_hmac", |b| {
        b.iter(|| {
            crypto::join_hmac(
                black_box(0x0102_0304_0506_0708),
                black_box(0x1112_1314_1516_1718),
                black_box(0xdead_beef),
                black_box(0xcafe_babe),
            )
        })
    });
    let addr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    group.bench_function("add_addr_hmac", |b| {
        b.iter(|| {
            crypto::add_addr_hmac(
                black_box(0x0102_0304_0506_0708),
                black_box(0x1112_1314_1516_1718),
                black_box(1),
                black_box(&addr),
                black_box(Some(8080)),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench_crypto);
criterion_main!(benches);
