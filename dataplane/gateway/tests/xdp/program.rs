//! The XDP steering program's decisions, run in the kernel with `BPF_PROG_TEST_RUN` on
//! hand-built frames (root only; skipped with the reason otherwise). No socket is registered,
//! so a frame the program steers comes back as XDP_DROP (the fail-closed fallback) and counts
//! as `redirect_failed`; a frame it leaves to the kernel comes back as XDP_PASS.

use natfw_gateway::xdp::{Counter, IfSide, Steering};

use crate::support::*;

fn check(s: &mut Steering, cases: &[(&str, Vec<u8>, u32)]) {
    for (name, frame, want) in cases {
        let got = s
            .test_run(frame)
            .unwrap_or_else(|e| panic!("{name}: test run: {e}"));
        assert_eq!(got, *want, "{name}");
    }
}

#[test]
fn inside_steers_snat_sources_only() {
    if skip() {
        return;
    }
    let Some(mut s) = load(IfSide::Inside) else {
        return;
    };
    let mut vlan = eth(0x8100);
    vlan.extend_from_slice(&[0, 5, 0x08, 0x00]);
    let vlan = v4_with(vlan, "10.1.2.3", "198.51.100.7", 6, 0, &ports(1, 443));
    let mut arp = eth(0x0806);
    arp.extend_from_slice(&[0; 28]);
    let mut lldp = eth(0x88cc);
    lldp.extend_from_slice(&[0; 30]);
    let mut short = eth(0x0800);
    short.extend_from_slice(&[0x45; 10]);
    let ns = {
        let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&[0; 16]);
        icmp
    };
    check(
        &mut s,
        &[
            (
                "v4 SNAT source",
                tcp4("10.1.2.3", "198.51.100.7", 443),
                STEER,
            ),
            (
                "v4 ICMP from SNAT source",
                v4("10.1.2.3", "198.51.100.7", 1, &[8, 0, 0, 0, 0, 1, 0, 1]),
                STEER,
            ),
            ("v4 VLAN-tagged SNAT source", vlan, STEER),
            (
                "v4 bypassed",
                tcp4("10.9.1.1", "198.51.100.7", 443),
                XDP_PASS,
            ),
            (
                "v4 not SNAT-bound",
                tcp4("192.168.1.1", "198.51.100.7", 443),
                XDP_PASS,
            ),
            (
                "v4 to the gateway",
                tcp4("10.1.2.3", "10.0.0.1", 22),
                XDP_PASS,
            ),
            (
                "v4 to the EIP (hairpin)",
                tcp4("10.1.2.3", "203.0.113.1", 80),
                XDP_PASS,
            ),
            (
                "v4 multicast",
                v4("10.1.2.3", "224.0.0.251", 17, &ports(5353, 5353)),
                XDP_PASS,
            ),
            (
                "v4 broadcast",
                v4("10.1.2.3", "255.255.255.255", 17, &ports(68, 67)),
                XDP_PASS,
            ),
            ("ARP", arp, XDP_PASS),
            ("LLDP", lldp, XDP_PASS),
            ("truncated IPv4", short, XDP_PASS),
            (
                "v6 SNAT source",
                v6("fd00::5", "2001:db8:ffff::1", 6, &ports(1, 443)),
                STEER,
            ),
            (
                "v6 bypassed",
                v6("fd00:9::5", "2001:db8:ffff::1", 6, &ports(1, 443)),
                XDP_PASS,
            ),
            (
                "v6 neighbour solicitation (multicast)",
                v6("fd00::5", "ff02::1:ff00:1", 58, &ns),
                XDP_PASS,
            ),
            (
                "v6 neighbour solicitation (unicast)",
                v6("fd00::5", "2001:db8:ffff::1", 58, &ns),
                XDP_PASS,
            ),
            (
                "v6 to the gateway",
                v6("fd00::5", "fd00::1", 6, &ports(1, 22)),
                XDP_PASS,
            ),
        ],
    );
    let c = s.counters().unwrap();
    assert_eq!(c.get(Counter::RedirectFailed), 4, "{c}");
    assert_eq!(c.get(Counter::PassBypass), 2, "{c}");
    assert_eq!(c.get(Counter::PassNotSnat), 1, "{c}");
    assert_eq!(c.get(Counter::PassGateway), 3, "{c}");
    assert_eq!(c.get(Counter::PassArp), 1, "{c}");
    assert_eq!(c.get(Counter::PassNonIp), 1, "{c}");
    assert_eq!(c.get(Counter::PassOther), 5, "{c}");
}

#[test]
fn outside_steers_traffic_to_eips_except_kernel_ports() {
    if skip() {
        return;
    }
    let Some(mut s) = load(IfSide::Outside) else {
        return;
    };
    let mut na = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
    na.extend_from_slice(&[0; 16]);
    check(
        &mut s,
        &[
            (
                "v4 TCP to the EIP",
                tcp4("198.51.100.7", "203.0.113.1", 40000),
                STEER,
            ),
            (
                "v4 ICMP to the EIP",
                v4("198.51.100.7", "203.0.113.1", 1, &[0, 0, 0, 0, 0, 1, 0, 1]),
                STEER,
            ),
            (
                "v4 to a kernel port",
                tcp4("198.51.100.7", "203.0.113.1", 61500),
                XDP_PASS,
            ),
            (
                "v4 later fragment (no ports)",
                v4_with(
                    eth(0x0800),
                    "198.51.100.7",
                    "203.0.113.1",
                    17,
                    0x00b9,
                    &ports(61500, 61500),
                ),
                STEER,
            ),
            (
                "v4 to another address",
                tcp4("198.51.100.7", "203.0.113.77", 40000),
                XDP_PASS,
            ),
            (
                "v6 UDP to the EIP",
                v6("2001:db8:ffff::1", "2001:db8::1", 17, &ports(443, 5000)),
                STEER,
            ),
            (
                "v6 to a kernel port",
                v6("2001:db8:ffff::1", "2001:db8::1", 17, &ports(53, 61000)),
                XDP_PASS,
            ),
            (
                "v6 neighbour advertisement to the EIP",
                v6("2001:db8:ffff::1", "2001:db8::1", 58, &na),
                XDP_PASS,
            ),
            (
                "v6 echo reply to the EIP",
                v6(
                    "2001:db8:ffff::1",
                    "2001:db8::1",
                    58,
                    &[129, 0, 0, 0, 0, 1, 0, 1],
                ),
                STEER,
            ),
        ],
    );
    let c = s.counters().unwrap();
    assert_eq!(c.get(Counter::RedirectFailed), 5, "{c}");
    assert_eq!(c.get(Counter::PassGateway), 2, "{c}");
    assert_eq!(c.get(Counter::PassOther), 2, "{c}");
}
