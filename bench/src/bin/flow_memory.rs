//! Resident memory per engine flow under floods: 1,000,000 new flows of one kind each
//! (TCP SYN flood; UDP flood of small opaque datagrams; UDP flood of QUIC Initials, which the
//! engine must try to identify), fed to an engine sized for them, from real corpus frames with
//! their tuples rewritten. Each kind runs in a fresh child process so that one measurement's
//! heap never serves another's; the figure is (RSS after − RSS before creating the engine) /
//! flows, so the table's own allocation is included (the shared country database is not).
//!
//! `cargo run --release -p natfw-bench --bin flow_memory [-- FLOWS]`

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;

use natfw_engine::engine::{Engine, EngineOptions, FlowEnd, FlowSink, GeoDb, Side, Verdict};
use natfw_engine::time::Timestamp;
use natfw_engine::wire::{self, rewrite};

struct Discard;

impl FlowSink for Discard {
    fn flow_end(&mut self, _ev: FlowEnd) {}
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

/// The first frame of `name` in the corpus that `keep` accepts.
fn frame(name: &str, keep: impl Fn(&wire::PacketInfo) -> bool) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/corpus")
        .join(name);
    natfw_pcap::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .map(|f| f.expect("frame").data)
        .find(|f| wire::parse(f).is_ok_and(|i| keep(&i)))
        .unwrap_or_else(|| panic!("{name}: no matching frame"))
}

fn outbound(i: &wire::PacketInfo) -> bool {
    matches!(i.src, IpAddr::V4(a) if a.octets()[0] == 10)
}

/// One measurement in this process: prints `kind flows bytes_per_flow`.
fn measure(kind: &str, n: u32) {
    let base = match kind {
        "tcp_syn" => frame("syn_flood.pcap", outbound),
        "udp_small" => frame("dns_query.pcap", outbound),
        "udp_quic_initial" => frame("quic_aioquic.pcap", outbound),
        other => panic!("unknown kind {other}"),
    };
    let info = wire::parse(&base).unwrap();
    // The country database is shared by every flow and loaded once: not part of the figure.
    let geo = GeoDb::embedded();
    let cfg = natfw_policy::config::embedded_default();
    let before = rss_kib();
    let opts = EngineOptions {
        max_flows: n as usize,
        ..EngineOptions::default()
    };
    let mut e = Engine::with_options(&cfg, geo, Box::new(Discard), opts).expect("engine");
    let t = Timestamp::from_secs(1);
    let mut accepted = 0u64;
    for i in 0..n {
        let mut f = base.clone();
        // 64 source ports per source address, 1,000 destination ports: every flow is new and
        // the SNAT ports of the one EIP per family suffice.
        let src = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i >> 6)));
        rewrite::set_src(
            &mut f,
            &info,
            src,
            Some(1024 + (i & 0x3f) as u16),
            Default::default(),
        )
        .unwrap();
        // Port 53 would make the small datagrams DNS; keep them opaque (10000..).
        let dport = match kind {
            "udp_quic_initial" => 443,
            _ => 10_000 + (i % 1000) as u16,
        };
        let dst = IpAddr::V4(Ipv4Addr::from(0xcb00_7100 | (i % 200)));
        rewrite::set_dst(&mut f, &info, dst, Some(dport), Default::default()).unwrap();
        if !matches!(e.process(t, Side::Inside, &mut f), Verdict::Drop(_)) {
            accepted += 1;
        }
    }
    let after = rss_kib();
    let flows = e.flow_count() as u64;
    assert!(
        flows > 0,
        "{kind}: no flow created ({accepted} frames passed)"
    );
    let st = e.stats();
    eprintln!(
        "{kind}: held {} B, l7 buffered {} B, fwd {} drop_hold_full {}",
        st.held_bytes, st.l7_bytes, st.fwd_out.packets, st.drop_hold_full.packets
    );
    println!(
        "{kind} {flows} {}",
        (after.saturating_sub(before)) * 1024 / flows
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    match (args.next(), args.next()) {
        (Some(k), Some(n)) if k.starts_with("--one=") => {
            measure(&k["--one=".len()..], n.parse().expect("flows"));
        }
        (n, _) => {
            let n: u32 = n.map_or(1_000_000, |n| n.parse().expect("flows"));
            let me = std::env::current_exe().expect("own path");
            println!("{:<18} {:>10} {:>10}", "flood", "flows", "bytes/flow");
            for kind in ["tcp_syn", "udp_small", "udp_quic_initial"] {
                let o = Command::new(&me)
                    .args([format!("--one={kind}"), n.to_string()])
                    .output()
                    .expect("child");
                let out = String::from_utf8_lossy(&o.stdout);
                let parts: Vec<&str> = out.split_whitespace().collect();
                match parts.as_slice() {
                    [k, f, b] if o.status.success() => println!("{k:<18} {f:>10} {b:>10}"),
                    _ => {
                        eprintln!("{kind}: {out}{}", String::from_utf8_lossy(&o.stderr));
                        std::process::exit(1);
                    }
                }
            }
        }
    }
}
