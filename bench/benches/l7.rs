//! L7 identification and whole-capture replay on real captures:
//! - SNI from Chromium's two-segment post-quantum ClientHello (the reassembled client stream);
//! - SNI from a QUIC v1 Initial (aioquic): key derivation, header protection, AES-GCM, CRYPTO;
//! - `natfw replay` over a mixed capture set (packets per second, capture reading included).
//!
//! `cargo bench -p natfw-bench --bench l7 -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use natfw_engine::l7::{quic, tls, Progress};
use natfw_engine::wire::{self, L4};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(rel)
}

/// Payloads of the first flow's client→server packets to `port` (`udp` picks UDP), in capture
/// order (the Chromium capture is in order).
fn client_payloads(rel: &str, port: u16, udp: bool) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for f in natfw_pcap::open(&data(rel)).expect("capture") {
        let f = f.expect("frame");
        let Ok(info) = wire::parse(&f.data) else {
            continue;
        };
        let to_port = match info.l4 {
            L4::Tcp { dport, .. } if !udp => dport == port,
            L4::Udp { dport, .. } if udp => dport == port,
            _ => false,
        };
        let p = info.payload(&f.data);
        if to_port && !p.is_empty() {
            out.push(p.to_vec());
        }
    }
    out
}

fn sni(c: &mut Criterion) {
    // Chromium's first connection: its ClientHello is the first two payload segments.
    let segs = client_payloads("corpus/https_chromium.pcap", 443, false);
    let stream: Vec<u8> = segs.iter().take(2).flatten().copied().collect();
    assert!(matches!(tls::client_hello(&stream), Progress::Done(_)));
    c.bench_function("sni/tls_chromium_two_segments", |b| {
        b.iter(|| black_box(tls::client_hello(black_box(&stream))))
    });

    let dgrams = client_payloads("corpus/quic_aioquic.pcap", 443, true);
    let first = dgrams.first().expect("an Initial").clone();
    assert!(matches!(
        quic::InitialAssembler::new().push(&first),
        Progress::Done(_)
    ));
    c.bench_function("sni/quic_initial_aioquic", |b| {
        b.iter(|| black_box(quic::InitialAssembler::new().push(black_box(&first))))
    });
}

fn replay(c: &mut Criterion) {
    // Every live capture except the SYN flood (all new flows) and the hostile cases.
    let names = [
        "dns_query",
        "http_8080",
        "http_curl",
        "https_chromium",
        "https_curl",
        "https_ip_literal",
        "https_openssl",
        "icmp_ping",
        "quic_aioquic",
        "ssh_2222",
    ];
    let caps: Vec<PathBuf> = names
        .iter()
        .map(|n| data(&format!("corpus/{n}.pcap")))
        .collect();
    let cfg = natfw_policy::config::embedded_default();
    let (_, summary) = natfw_gateway::replay::replay_records(&cfg, &caps).expect("replay");
    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(summary.packets));
    g.bench_function("mixed_corpus", |b| {
        b.iter(|| black_box(natfw_gateway::replay::replay_records(&cfg, &caps).expect("replay")))
    });
    g.finish();
}

criterion_group!(benches, sni, replay);
criterion_main!(benches);
