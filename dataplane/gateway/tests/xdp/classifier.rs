//! The Rust packet classifier (`natfw_engine::steer::SteeringRules::decide`) and the kernel
//! programs make the same decision: every frame below runs through the real programs in the
//! kernel (`BPF_PROG_TEST_RUN`, as loaded by the gateway) — classic mode's XDP `natfw_xdp` and
//! split mode's tc `natfw_steer` — and through the Rust function, and the counter slot each
//! program bumped must name the Rust decision. Root only (SKIP otherwise).

use natfw_engine::steer::Decision;
use natfw_engine::Side;
use natfw_gateway::xdp::{Counter, IfSide, Steering};

use crate::support::*;

/// The decision a counter slot stands for. With no socket registered, a steered frame falls
/// back to XDP_DROP and counts as `redirect_failed`.
fn decision_of(c: Counter) -> Decision {
    match c {
        Counter::RedirectFailed | Counter::SteeredInside | Counter::SteeredOutside => {
            Decision::Steer
        }
        Counter::PassArp => Decision::PassArp,
        Counter::PassNonIp => Decision::PassNonIp,
        Counter::PassGateway => Decision::PassGateway,
        Counter::PassBypass => Decision::PassBypass,
        Counter::PassNotSnat => Decision::PassNotSnat,
        Counter::PassOther => Decision::PassOther,
        // The offload table is empty in these tests: no frame may take the fast path.
        Counter::FastToEngine | Counter::FastForwarded | Counter::FastError => {
            panic!("fast-path counter {c:?} moved with an empty offload table")
        }
        _ => panic!("{c:?} is a worker slot, not a decision"),
    }
}

/// Which program of the object runs.
#[derive(Debug, Clone, Copy)]
enum Program {
    /// Classic mode: XDP on the real interface.
    Xdp,
    /// Split mode: tc ingress on the real interface.
    Steer,
}

const TC_ACT_OK: u32 = 0;
const TC_ACT_REDIRECT: u32 = 7;

/// Run `frame` through the program; the decision is the one counter slot that moved. `None`:
/// the kernel's test harness builds no skb from this frame (a tc test run refuses an IP
/// header shorter than its minimum with EINVAL), so the tc program cannot be asked.
fn kernel_decision(s: &mut Steering, prog: Program, name: &str, frame: &[u8]) -> Option<Decision> {
    let before = s.counters().unwrap();
    let action = match prog {
        Program::Xdp => s.test_run(frame),
        Program::Steer => s.test_run_steer(frame),
    };
    let action = match action {
        Ok(a) => a,
        Err(e) if matches!(prog, Program::Steer) && e.raw_os_error() == Some(libc_einval()) => {
            return None
        }
        Err(e) => panic!("{name}: {prog:?} test run: {e}"),
    };
    let after = s.counters().unwrap();
    let (dist, moved): (Vec<Counter>, Vec<Counter>) = Counter::ALL
        .into_iter()
        .filter(|c| after.get(*c) != before.get(*c))
        .partition(|c| c.is_distribution());
    assert_eq!(moved.len(), 1, "{name}: counters moved: {moved:?}");
    let d = decision_of(moved[0]);
    // One worker (loaded without slow paths): tc sends every steered frame to worker 0.
    let want_dist = match (prog, d == Decision::Steer) {
        (Program::Steer, true) => vec![Counter::SteeredWorker0],
        _ => vec![],
    };
    assert_eq!(dist, want_dist, "{name}: worker counters");
    let want_action = match (prog, d == Decision::Steer) {
        (Program::Xdp, true) => STEER,
        (Program::Xdp, false) => XDP_PASS,
        (Program::Steer, true) => TC_ACT_REDIRECT,
        (Program::Steer, false) => TC_ACT_OK,
    };
    assert_eq!(
        action, want_action,
        "{name}: action vs counter {:?}",
        moved[0]
    );
    Some(d)
}

fn libc_einval() -> i32 {
    22
}

fn vlan(tpid: u16, inner: u16) -> Vec<u8> {
    let mut f = eth(tpid);
    f.extend_from_slice(&[0, 5]);
    f.extend_from_slice(&inner.to_be_bytes());
    f
}

fn icmp6(typ: u8) -> Vec<u8> {
    let mut m = vec![typ, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&[0; 16]);
    m
}

/// The frames, per side: IPv4/IPv6, VLAN, bypassed, spoofed, to an EIP, the gateway's own, ARP.
fn frames() -> Vec<(String, Vec<u8>)> {
    let mut arp = eth(0x0806);
    arp.extend_from_slice(&[0; 28]);
    let mut lldp = eth(0x88cc);
    lldp.extend_from_slice(&[0; 30]);
    let mut short4 = eth(0x0800);
    short4.extend_from_slice(&[0x45; 10]);
    let mut short6 = eth(0x86dd);
    short6.extend_from_slice(&[0x60; 30]);
    let opts = {
        // IHL 6 (one option word) and a kernel port behind it.
        let mut f = v4("198.51.100.7", "203.0.113.1", 6, &[0; 4]);
        f[14] = 0x46;
        f.truncate(14 + 20);
        f.extend_from_slice(&[1, 1, 1, 0]);
        f.extend_from_slice(&ports(1, 61500));
        f
    };
    let cases = vec![
        ("v4 SNAT source", tcp4("10.1.2.3", "198.51.100.7", 443)),
        (
            "v4 ICMP echo",
            v4("10.1.2.3", "198.51.100.7", 1, &[8, 0, 0, 0, 0, 1, 0, 1]),
        ),
        (
            "v4 802.1Q",
            v4_with(
                vlan(0x8100, 0x0800),
                "10.1.2.3",
                "198.51.100.7",
                6,
                0,
                &ports(1, 443),
            ),
        ),
        (
            "v4 802.1ad",
            v4_with(
                vlan(0x88a8, 0x0800),
                "10.9.2.3",
                "198.51.100.7",
                6,
                0,
                &ports(1, 443),
            ),
        ),
        (
            "v4 two tags",
            v4_with(
                vlan(0x8100, 0x8100),
                "10.1.2.3",
                "198.51.100.7",
                6,
                0,
                &ports(1, 443),
            ),
        ),
        ("v4 bypassed", tcp4("10.9.1.1", "198.51.100.7", 443)),
        (
            "v4 spoofed public source",
            tcp4("198.51.100.9", "198.51.100.7", 443),
        ),
        (
            "v4 spoofed private source to the EIP",
            tcp4("10.1.2.3", "203.0.113.1", 443),
        ),
        (
            "v4 not SNAT-bound",
            tcp4("192.168.1.1", "198.51.100.7", 443),
        ),
        ("v4 to the gateway", tcp4("10.1.2.3", "10.0.0.1", 22)),
        ("v4 to the EIP", tcp4("198.51.100.7", "203.0.113.1", 40000)),
        (
            "v4 to a kernel port",
            tcp4("198.51.100.7", "203.0.113.1", 61500),
        ),
        ("v4 options, kernel port", opts),
        (
            "v4 later fragment",
            v4_with(
                eth(0x0800),
                "198.51.100.7",
                "203.0.113.1",
                17,
                0x00b9,
                &ports(1, 61500),
            ),
        ),
        (
            "v4 first fragment (MF)",
            v4_with(
                eth(0x0800),
                "198.51.100.7",
                "203.0.113.1",
                17,
                0x2000,
                &ports(1, 61500),
            ),
        ),
        (
            "v4 TCP header cut short",
            v4("198.51.100.7", "203.0.113.1", 6, &[0xf0, 0x00, 0xf0]),
        ),
        (
            "v4 to another address",
            tcp4("198.51.100.7", "203.0.113.77", 40000),
        ),
        (
            "v4 multicast",
            v4("10.1.2.3", "224.0.0.251", 17, &ports(5353, 5353)),
        ),
        (
            "v4 broadcast",
            v4("10.1.2.3", "255.255.255.255", 17, &ports(68, 67)),
        ),
        ("ARP", arp),
        ("LLDP", lldp),
        ("truncated IPv4", short4),
        ("truncated IPv6", short6),
        (
            "v6 SNAT source",
            v6("fd00::5", "2001:db8:ffff::1", 6, &ports(1, 443)),
        ),
        ("v6 802.1Q", {
            let mut f = v6("fd00::5", "2001:db8:ffff::1", 6, &ports(1, 443));
            f.splice(12..14, [0x81, 0x00, 0, 7, 0x86, 0xdd]);
            f
        }),
        (
            "v6 bypassed",
            v6("fd00:9::5", "2001:db8:ffff::1", 6, &ports(1, 443)),
        ),
        (
            "v6 spoofed public source",
            v6("2001:db8:ffff::9", "2001:db8:ffff::1", 6, &ports(1, 443)),
        ),
        (
            "v6 NS multicast",
            v6("fd00::5", "ff02::1:ff00:1", 58, &icmp6(135)),
        ),
        (
            "v6 NS unicast",
            v6("fd00::5", "2001:db8:ffff::1", 58, &icmp6(135)),
        ),
        (
            "v6 NA to the EIP",
            v6("2001:db8:ffff::1", "2001:db8::1", 58, &icmp6(136)),
        ),
        (
            "v6 echo to the EIP",
            v6("2001:db8:ffff::1", "2001:db8::1", 58, &icmp6(129)),
        ),
        (
            "v6 ICMPv6 cut short",
            v6("2001:db8:ffff::1", "2001:db8::1", 58, &[]),
        ),
        (
            "v6 to the gateway",
            v6("fd00::5", "fd00::1", 6, &ports(1, 22)),
        ),
        (
            "v6 UDP to the EIP",
            v6("2001:db8:ffff::1", "2001:db8::1", 17, &ports(443, 5000)),
        ),
        (
            "v6 to a kernel port",
            v6("2001:db8:ffff::1", "2001:db8::1", 17, &ports(53, 61000)),
        ),
        (
            "v6 to the v4-mapped EIP",
            v6(
                "2001:db8:ffff::1",
                "::ffff:203.0.113.1",
                17,
                &ports(443, 5000),
            ),
        ),
        ("v6 multicast", v6("fd00::5", "ff05::2", 17, &ports(1, 2))),
    ];
    let mut out: Vec<(String, Vec<u8>)> =
        cases.into_iter().map(|(n, f)| (n.to_string(), f)).collect();
    // The same IPv4 frame cut ever shorter: every bounds check on the way (the kernel runs
    // no frame shorter than an Ethernet header).
    let whole = tcp4("198.51.100.7", "203.0.113.1", 61500);
    for cut in [14, 17, 33, 34, 36, 37] {
        out.push((format!("v4 cut at {cut}"), whole[..cut].to_vec()));
    }
    out
}

#[test]
fn rust_classifier_decides_like_the_xdp_and_tc_programs() {
    if skip() {
        return;
    }
    let rules = rules();
    let mut seen = std::collections::BTreeSet::new();
    let mut refused = Vec::new();
    for (if_side, side) in [
        (IfSide::Inside, Side::Inside),
        (IfSide::Outside, Side::Outside),
    ] {
        let Some(mut s) = load(if_side) else {
            return;
        };
        let mut differ = Vec::new();
        for (name, frame) in frames() {
            let rust = rules.decide(side, &frame);
            for prog in [Program::Xdp, Program::Steer] {
                let Some(kernel) = kernel_decision(&mut s, prog, &name, &frame) else {
                    refused.push(format!("{if_side:?} {name}"));
                    continue;
                };
                seen.insert(format!("{kernel:?}"));
                if kernel != rust {
                    differ.push(format!(
                        "{if_side:?} {name}: {prog:?} {kernel:?}, Rust {rust:?}"
                    ));
                }
            }
        }
        assert!(differ.is_empty(), "{}", differ.join("\n"));
    }
    // The frames reach every decision, so a classifier that always says one thing fails.
    assert_eq!(seen.len(), 7, "{seen:?}");
    // Only frames whose IP header is cut short may be refused by the tc test harness.
    let short = |n: &str| n.contains("truncated") || n.contains("cut at") || n.contains("short");
    assert!(
        refused.iter().all(|n| short(n)),
        "tc test run refused {refused:?}"
    );
    eprintln!(
        "tc test run refused {} truncated frames: {refused:?}",
        refused.len()
    );
}
