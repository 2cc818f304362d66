//! The interim-record sweep's cost on `Engine::poll` (`logging.interim_interval`), against the
//! same engine without it, in the same run: 100,000 live UDP flows; `poll` with interim records
//! off, and on with an interval no flow has reached yet (the sweep's steady cost: 8,192 slots
//! looked at per poll, nothing emitted).
//!
//! `cargo bench -p natfw-bench --bench interim -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use natfw_engine::engine::{Engine, EngineOptions, GeoDb, NullSink, Side, Verdict};
use natfw_engine::time::Timestamp;

const FLOWS: usize = 100_000;

fn udp(src: [u8; 4], dst: [u8; 4], sport: u16) -> Vec<u8> {
    // Ethernet + IPv4 + UDP, 8 payload bytes; checksums are not checked on the way in.
    let mut f = vec![0u8; 14 + 20 + 8 + 8];
    f[12] = 0x08;
    f[14] = 0x45;
    let tot = (20 + 8 + 8) as u16;
    f[16..18].copy_from_slice(&tot.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&src);
    f[30..34].copy_from_slice(&dst);
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&9000u16.to_be_bytes());
    f[38..40].copy_from_slice(&16u16.to_be_bytes());
    let mut s: u32 = 0;
    for c in f[14..34].chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    f[24..26].copy_from_slice(&(!(s as u16)).to_be_bytes());
    f
}

fn engine(interim_ms: u64) -> Engine {
    let cfg = natfw_policy::config::embedded_default();
    let opts = EngineOptions {
        interim_interval_ms: interim_ms,
        ..EngineOptions::default()
    };
    let mut e = Engine::with_options(&cfg, GeoDb::embedded(), Box::new(NullSink), opts).unwrap();
    let t0 = Timestamp::from_secs(1_000_000);
    for i in 0..FLOWS {
        // 20,000 flows per destination: within one EIP's ports to it.
        let src = [10, 0, 0, 5];
        let dst = [203, 0, 113, 1 + (i / 20_000) as u8];
        let mut f = udp(src, dst, 1024 + (i % 20_000) as u16);
        assert_eq!(e.process(t0, Side::Inside, &mut f), Verdict::Forward);
    }
    assert_eq!(e.flow_count(), FLOWS);
    e
}

fn bench(c: &mut Criterion) {
    let now = Timestamp::from_secs(1_000_001);
    let mut g = c.benchmark_group("poll_100k_flows");
    let mut off = engine(0);
    g.bench_function("interim_off", |b| b.iter(|| off.poll(black_box(now))));
    let mut on = engine(3_600_000);
    g.bench_function("interim_on_sweep", |b| b.iter(|| on.poll(black_box(now))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
