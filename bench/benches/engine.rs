//! Engine hot paths on real frames from the corpus:
//! - an established-flow packet (parse, conntrack hit, SNAT rewrite, checksum), both ways;
//! - a whole new TLS flow whose ClientHello spans two segments (Chromium), SNI extracted;
//! - the same flow under a policy with an `fqdn_and_dns` rule it does not need, with the
//!   on-demand verification off and on (the verification path must cost such flows nothing);
//! - the flow table at 1,000,000 flows (lookup hit, insert + remove), plus the resident memory
//!   of 1,000,000 engine flows (printed once).
//!
//! `cargo bench -p natfw-bench --bench engine -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion};
use natfw_engine::conntrack::{FlowKey, Table, Timeouts, TimerClass, PROTO_TCP};
use natfw_engine::engine::{Emit, Engine, EngineOptions, GeoDb, Side, Verdict};
use natfw_engine::engine::{FlowEnd, FlowSink};
use natfw_engine::time::Timestamp;
use natfw_engine::wire::{self, rewrite, L4};

/// Counts records, keeps nothing.
struct Discard(u64);

impl FlowSink for Discard {
    fn flow_end(&mut self, _ev: FlowEnd) {
        self.0 += 1;
    }
}

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/corpus")
        .join(name)
}

fn frames(name: &str) -> Vec<Vec<u8>> {
    natfw_pcap::open(&corpus(name))
        .expect("corpus capture")
        .map(|f| f.expect("frame").data)
        .filter(|f| wire::parse(f).is_ok())
        .collect()
}

fn private(f: &[u8]) -> bool {
    matches!(wire::parse(f).map(|i| i.src), Ok(IpAddr::V4(a)) if a.octets()[0] == 10)
}

fn engine(max_flows: usize) -> Engine {
    let cfg = natfw_policy::config::embedded_default();
    engine_with(&cfg, max_flows, false)
}

fn engine_with(cfg: &natfw_policy::Config, max_flows: usize, on_demand: bool) -> Engine {
    let opts = EngineOptions {
        max_flows,
        on_demand_resolution: on_demand,
        ..EngineOptions::default()
    };
    Engine::with_options(cfg, GeoDb::embedded(), Box::new(Discard(0)), opts).expect("engine")
}

/// A policy with an `fqdn_and_dns` wildcard rule the Chromium flow's name does not match, then
/// an `fqdn` rule it does: the flow needs no DNS fact.
fn verify_policy() -> natfw_policy::Config {
    use natfw_policy::{Destination, DomainMode, DomainPattern, Protocol, Rule, RuleAction};
    let rule = |name: &str, p: DomainPattern, mode| Rule {
        name: name.into(),
        description: String::new(),
        source: None,
        destination: Destination::Domains(vec![p]),
        domain_mode: mode,
        protocol: Protocol::Tcp,
        ports: None,
        applications: None,
        action: RuleAction::Accept,
        enabled: true,
        pos: Default::default(),
    };
    let mut cfg = natfw_policy::config::embedded_default();
    cfg.firewall.rules = vec![
        rule(
            "cdn",
            DomainPattern::Wildcard("cdn.other.test".into()),
            DomainMode::FqdnAndDns,
        ),
        rule(
            "pq",
            DomainPattern::Exact("www.pq.example.test".into()),
            DomainMode::Fqdn,
        ),
    ];
    cfg.firewall.default_action = natfw_policy::Action::Drop;
    cfg
}

fn established(c: &mut Criterion) {
    let fs = frames("https_curl.pcap");
    let mut e = engine(1 << 16);
    let t = Timestamp::from_secs(1_000);
    // Open the flow up to the first server data segment. The ClientHello, sent again, is then
    // an established-flow data packet (identification is over).
    let mut out_pkt = None;
    let mut in_pkt = None;
    for f in &fs {
        let mut buf = f.clone();
        let side = if private(f) {
            Side::Inside
        } else {
            assert!(e.to_outside_view(&mut buf));
            Side::Outside
        };
        let outside_view = buf.clone();
        let has_payload = wire::parse(f).unwrap().payload_len > 0;
        assert_eq!(e.process(t, side, &mut buf), Verdict::Forward);
        if has_payload && side == Side::Inside && out_pkt.is_none() {
            out_pkt = Some(f.clone());
        }
        if has_payload && side == Side::Outside {
            in_pkt = Some(outside_view);
            break;
        }
    }
    let out_pkt = out_pkt.expect("client data segment");
    let in_pkt = in_pkt.expect("server data segment");
    let mut g = c.benchmark_group("established");
    let mut buf = out_pkt.clone();
    g.bench_function("outbound_packet", |b| {
        b.iter(|| {
            buf.copy_from_slice(&out_pkt);
            black_box(e.process(t, Side::Inside, black_box(&mut buf)))
        })
    });
    let mut buf = in_pkt.clone();
    g.bench_function("inbound_packet", |b| {
        b.iter(|| {
            buf.copy_from_slice(&in_pkt);
            black_box(e.process(t, Side::Outside, black_box(&mut buf)))
        })
    });
    let mut buf = out_pkt.clone();
    g.bench_function("copy_only_baseline", |b| {
        b.iter(|| {
            buf.copy_from_slice(black_box(&out_pkt));
            black_box(&buf);
        })
    });
    g.finish();
}

/// Frames of the first Chromium connection: handshake and its two-segment ClientHello.
fn chromium_conn() -> Vec<Vec<u8>> {
    let fs = frames("https_chromium.pcap");
    let first = wire::parse(&fs[0]).unwrap();
    let L4::Tcp { sport, .. } = first.l4 else {
        panic!("first frame is not TCP")
    };
    let mut conn = Vec::new();
    let mut client_payloads = 0;
    for f in &fs {
        let i = wire::parse(f).unwrap();
        let L4::Tcp {
            sport: s, dport: d, ..
        } = i.l4
        else {
            continue;
        };
        if s != sport && d != sport {
            continue;
        }
        conn.push(f.clone());
        if private(f) && i.payload_len > 0 {
            client_payloads += 1;
            if client_payloads == 2 {
                break;
            }
        }
    }
    assert_eq!(client_payloads, 2);
    conn
}

/// One new flow per iteration (`conn` with the client port changed), ended by a client RST.
fn bench_new_flow(c: &mut Criterion, id: &str, e: &mut Engine, conn: &[Vec<u8>]) {
    let t = Timestamp::from_secs(1_000);
    let mut port: u16 = 1024;
    let mut emits: Vec<Emit> = Vec::new();
    c.bench_function(id, |b| {
        b.iter(|| {
            port = if port == u16::MAX { 1024 } else { port + 1 };
            let mut last = None;
            for f in conn {
                let mut buf = f.clone();
                let info = wire::parse(&buf).unwrap();
                let side = if private(f) {
                    rewrite::set_src(&mut buf, &info, info.src, Some(port), Default::default())
                        .unwrap();
                    Side::Inside
                } else {
                    rewrite::set_dst(&mut buf, &info, info.dst, Some(port), Default::default())
                        .unwrap();
                    e.to_outside_view(&mut buf);
                    Side::Outside
                };
                let v = e.process(t, side, &mut buf);
                // A client segment is forwarded, or held while the flow is pending (sent on
                // through the emits drained below: pre-name bytes, or the release on accept).
                assert!(
                    side == Side::Outside || matches!(v, Verdict::Forward | Verdict::Held),
                    "{v:?}"
                );
                last = Some(v);
            }
            // End it (RST from the client) so the table does not grow.
            let mut rst = conn[0].clone();
            let info = wire::parse(&rst).unwrap();
            rewrite::set_src(&mut rst, &info, info.src, Some(port), Default::default()).unwrap();
            rst[info.l4_offset + 13] = 0x04;
            let info = wire::parse(&rst).unwrap();
            let mut full = rst.clone();
            // Fix the checksum after the flag change by a full recompute.
            rewrite::set_src(
                &mut full,
                &info,
                info.src,
                None,
                rewrite::ChecksumMode::Full,
            )
            .unwrap();
            black_box(e.process(t, Side::Inside, &mut full));
            e.drain_emits(&mut emits);
            emits.clear();
            black_box(last)
        })
    });
    assert_eq!(e.flow_count(), 0);
}

/// The first Chromium connection: handshake, two-segment ClientHello, and a client RST to
/// end it, with the client port changed every iteration so each run is a new flow.
fn new_flow_chromium(c: &mut Criterion) {
    let conn = chromium_conn();
    let mut e = engine(1 << 20);
    bench_new_flow(c, "new_flow/chromium_two_segment_hello", &mut e, &conn);
}

/// The `fqdn_and_dns` verification path costs flows that need no DNS fact nothing: the same
/// new flow under a policy with an `fqdn_and_dns` rule, on-demand resolution off (`off`: the
/// verification path unused) and on (`on`), in one run.
fn new_flow_dns_verification(c: &mut Criterion) {
    let conn = chromium_conn();
    let cfg = verify_policy();
    for (id, on) in [
        ("new_flow/no_dns_fact_verification_off", false),
        ("new_flow/no_dns_fact_verification_on", true),
    ] {
        let mut e = engine_with(&cfg, 1 << 20, on);
        bench_new_flow(c, id, &mut e, &conn);
        if e.stats().flows_created == 0 {
            continue; // filtered out on the command line: nothing ran
        }
        let mut req = Vec::new();
        e.drain_resolve_requests(&mut req);
        assert!(req.is_empty(), "the flow needed no resolution");
        let s = e.stats();
        assert_eq!(s.dns_resolve_waits, 0);
        // Every flow was decided by the `fqdn` rule and accepted: the ClientHello bytes before
        // the name went on early, the rest was forwarded; nothing discarded or dropped.
        assert!(s.flows_created > 0);
        assert_eq!(s.discarded.packets, 0);
        assert_eq!(s.drop_policy.packets, 0);
        assert_eq!(s.flows_ended_denied, 0);
    }
}

fn key(i: u32) -> FlowKey {
    FlowKey {
        src: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i >> 10))),
        dst: IpAddr::V4(Ipv4Addr::new(203, 0, 113, (i & 0xff) as u8)),
        sport: 1024 + (i & 0x3ff) as u16,
        dport: 443,
        proto: PROTO_TCP,
    }
}

fn table_1m(c: &mut Criterion) {
    const N: u32 = 1_000_000;
    let mut tb: Table<[u64; 12]> = Table::new(N as usize + 1, Timeouts::default());
    let t = Timestamp::from_secs(1);
    for i in 0..N {
        tb.insert(key(i), TimerClass::Established, t, [0; 12])
            .unwrap();
    }
    let mut g = c.benchmark_group("flow_table_1m");
    let mut i = 0u32;
    g.bench_function("lookup_hit", |b| {
        b.iter(|| {
            i = (i.wrapping_mul(2_654_435_761)).wrapping_add(1) % N;
            black_box(tb.lookup(black_box(&key(i))))
        })
    });
    let mut j = N;
    g.bench_function("insert_remove", |b| {
        b.iter(|| {
            j = j.wrapping_add(1);
            let r = tb
                .insert(key(j), TimerClass::Embryonic, t, [0; 12])
                .unwrap();
            black_box(tb.remove(r))
        })
    });
    g.finish();
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Resident memory of 1,000,000 engine flows (TCP, handshake seen): printed, not timed.
fn engine_memory_1m(c: &mut Criterion) {
    let syn = frames("syn_flood.pcap").swap_remove(0);
    let info = wire::parse(&syn).unwrap();
    let before = rss_kib();
    let mut e = engine(1_000_000);
    let t = Timestamp::from_secs(1);
    // One EIP has 64,512 ports per remote endpoint: spread the flows over 1,000 server ports.
    let flow = |i: u32, f: &mut [u8]| {
        let src = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i >> 6)));
        let sport = Some(1024 + (i & 0x3f) as u16);
        rewrite::set_src(f, &info, src, sport, Default::default()).unwrap();
        let dport = Some(1 + (i % 1000) as u16);
        rewrite::set_dst(f, &info, info.dst, dport, Default::default()).unwrap();
    };
    for i in 0..1_000_000u32 {
        let mut f = syn.clone();
        flow(i, &mut f);
        assert_eq!(e.process(t, Side::Inside, &mut f), Verdict::Forward);
    }
    let after = rss_kib();
    assert_eq!(e.flow_count(), 1_000_000);
    eprintln!(
        "engine_memory_1m: {} flows, resident +{} MiB ({} bytes/flow)",
        e.flow_count(),
        (after - before) / 1024,
        (after - before) * 1024 / 1_000_000
    );
    let mut i = 0u32;
    let syn2 = syn.clone();
    let mut buf = syn.clone();
    c.bench_function("flow_table_1m/engine_syn_retransmit_hit", |b| {
        b.iter(|| {
            i = (i + 1) % 1_000_000;
            buf.copy_from_slice(&syn2);
            flow(i, &mut buf);
            black_box(e.process(t, Side::Inside, &mut buf))
        })
    });
}

criterion_group!(
    benches,
    established,
    new_flow_chromium,
    new_flow_dns_verification,
    table_1m,
    engine_memory_1m
);
criterion_main!(benches);
