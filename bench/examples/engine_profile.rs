//! A fixed-count driver of the engine's hot paths, for instruction counts under callgrind
//! (repeatable on a shared machine, unlike wall-clock timings). It builds exactly what
//! `benches/engine.rs` measures: the established-flow packet of `https_curl.pcap` both ways
//! (default engine options: incremental checksums), and the new TLS flow of
//! `https_chromium.pcap` (handshake, two-segment ClientHello, client RST), under the default
//! policy (`new`) or the `fqdn_and_dns` policy with on-demand resolution off / on
//! (`new_dns_off`, `new_dns_on`).
//!
//! The measured loop is the function `measured`; count only it:
//!
//! ```text
//! cargo build --release -p natfw-bench --example engine_profile
//! valgrind --tool=callgrind --toggle-collect='*engine_profile::measured*' \
//!     target/release/examples/engine_profile out 100000
//! ```
//!
//! Modes: `out`, `in`, `new`, `new_dns_off`, `new_dns_on`; the count is the number of
//! iterations (packets, or whole flows for the `new*` modes). Instructions per iteration are
//! the collected total divided by the count.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use natfw_engine::engine::{Emit, Engine, EngineOptions, FlowEnd, FlowSink, GeoDb, Side, Verdict};
use natfw_engine::time::Timestamp;
use natfw_engine::wire::{self, rewrite, L4};

struct Discard;

impl FlowSink for Discard {
    fn flow_end(&mut self, _ev: FlowEnd) {}
}

fn frames(name: &str) -> Vec<Vec<u8>> {
    let p: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/corpus")
        .join(name);
    natfw_pcap::open(&p)
        .expect("corpus capture")
        .map(|f| f.expect("frame").data)
        .filter(|f| wire::parse(f).is_ok())
        .collect()
}

fn private(f: &[u8]) -> bool {
    matches!(wire::parse(f).map(|i| i.src), Ok(IpAddr::V4(a)) if a.octets()[0] == 10)
}

fn engine_with(cfg: &natfw_policy::Config, on_demand: bool) -> Engine {
    let opts = EngineOptions {
        max_flows: 1 << 20,
        on_demand_resolution: on_demand,
        ..EngineOptions::default()
    };
    Engine::with_options(cfg, GeoDb::embedded(), Box::new(Discard), opts).expect("engine")
}

/// As `verify_policy` in `benches/engine.rs`.
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

/// The established flow of `https_curl.pcap`: (engine, client data segment, server data
/// segment as it arrives at the outside).
fn established() -> (Engine, Vec<u8>, Vec<u8>) {
    let fs = frames("https_curl.pcap");
    let mut e = engine_with(&natfw_policy::config::embedded_default(), false);
    let t = Timestamp::from_secs(1_000);
    let mut out_pkt = None;
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
            return (e, out_pkt.expect("client data segment"), outside_view);
        }
    }
    panic!("no server data segment")
}

/// As `chromium_conn` in `benches/engine.rs`.
fn chromium_conn() -> Vec<Vec<u8>> {
    let fs = frames("https_chromium.pcap");
    let L4::Tcp { sport, .. } = wire::parse(&fs[0]).unwrap().l4 else {
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
    conn
}

/// One new flow, as an iteration of `bench_new_flow` in `benches/engine.rs`.
fn new_flow(e: &mut Engine, conn: &[Vec<u8>], port: u16, emits: &mut Vec<Emit>) {
    let t = Timestamp::from_secs(1_000);
    for f in conn {
        let mut buf = f.clone();
        let info = wire::parse(&buf).unwrap();
        let side = if private(f) {
            rewrite::set_src(&mut buf, &info, info.src, Some(port), Default::default()).unwrap();
            Side::Inside
        } else {
            rewrite::set_dst(&mut buf, &info, info.dst, Some(port), Default::default()).unwrap();
            e.to_outside_view(&mut buf);
            Side::Outside
        };
        black_box(e.process(t, side, &mut buf));
    }
    let mut rst = conn[0].clone();
    let info = wire::parse(&rst).unwrap();
    rewrite::set_src(&mut rst, &info, info.src, Some(port), Default::default()).unwrap();
    rst[info.l4_offset + 13] = 0x04;
    let info = wire::parse(&rst).unwrap();
    let mut full = rst.clone();
    rewrite::set_src(
        &mut full,
        &info,
        info.src,
        None,
        rewrite::ChecksumMode::Full,
    )
    .unwrap();
    black_box(e.process(t, Side::Inside, &mut full));
    e.drain_emits(emits);
    emits.clear();
}

enum Work {
    Packet(Engine, Side, Vec<u8>),
    Flows(Engine, Vec<Vec<u8>>),
}

#[inline(never)]
fn measured(work: &mut Work, n: u32) {
    let t = Timestamp::from_secs(1_000);
    match work {
        Work::Packet(e, side, pkt) => {
            let mut buf = pkt.clone();
            for _ in 0..n {
                buf.copy_from_slice(pkt);
                black_box(e.process(t, *side, black_box(&mut buf)));
            }
        }
        Work::Flows(e, conn) => {
            let mut emits = Vec::new();
            for i in 0..n {
                new_flow(e, conn, 1024 + (i % 60_000) as u16, &mut emits);
            }
            assert_eq!(e.flow_count(), 0);
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "out".into());
    let n: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let mut work = match mode.as_str() {
        "out" | "in" => {
            let (e, out_pkt, in_pkt) = established();
            if mode == "out" {
                Work::Packet(e, Side::Inside, out_pkt)
            } else {
                Work::Packet(e, Side::Outside, in_pkt)
            }
        }
        "new" => Work::Flows(
            engine_with(&natfw_policy::config::embedded_default(), false),
            chromium_conn(),
        ),
        "new_dns_off" => Work::Flows(engine_with(&verify_policy(), false), chromium_conn()),
        "new_dns_on" => Work::Flows(engine_with(&verify_policy(), true), chromium_conn()),
        other => panic!("unknown mode {other}: out, in, new, new_dns_off, new_dns_on"),
    };
    measured(&mut work, n);
    println!("{mode}: {n} iterations");
}
