//! Split mode's tc program `natfw_steer` and its fast-path lookup, in the kernel
//! (`BPF_PROG_TEST_RUN`, root only): a packet of a flow in the `offload` table is translated in
//! the kernel (counted `fastpath_forwarded` and in its entry), unless it carries SYN, FIN or RST
//! (`fastpath_to_engine`) or its flow is not (or no longer) in the table: then it goes to the
//! slow path (the engine) as before. Both ways return `TC_ACT_REDIRECT`; the counters tell them
//! apart.

use std::net::{Ipv4Addr, SocketAddrV4};

use natfw_engine::engine::{OffloadFlow, OffloadTable};
use natfw_gateway::xdp::offload::KernelOffload;
use natfw_gateway::xdp::{Counter, IfSide, Steering};

use crate::support::*;

const TC_ACT_OK: u32 = 0;
const TC_ACT_REDIRECT: u32 = 7;

fn tcp_flags(src: &str, dst: &str, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut l4 = ports(sport, dport);
    l4[12] = 0x50; // data offset 5
    l4[13] = flags;
    v4(src, dst, 6, &l4)
}

/// Which way `natfw_steer` sent `frame`: the counter slot that moved (exactly one).
fn way(s: &mut Steering, frame: &[u8]) -> Counter {
    let before = s.counters().unwrap();
    let action = s.test_run_steer(frame).expect("test run");
    let after = s.counters().unwrap();
    let moved: Vec<Counter> = Counter::ALL
        .into_iter()
        .filter(|c| after.get(*c) != before.get(*c))
        .collect();
    // SYN/FIN/RST of an offloaded flow count `fastpath_to_engine` and the steering slot.
    let main = *moved
        .iter()
        .find(|c| **c != Counter::FastToEngine)
        .expect("a counter moved");
    match main {
        Counter::FastForwarded | Counter::SteeredInside | Counter::SteeredOutside => {
            assert_eq!(action, TC_ACT_REDIRECT, "{moved:?}")
        }
        _ => assert_eq!(action, TC_ACT_OK, "{moved:?}"),
    }
    if moved.contains(&Counter::FastToEngine) {
        return Counter::FastToEngine;
    }
    assert_eq!(moved.len(), 1, "{moved:?}");
    main
}

#[test]
fn offloaded_flows_are_translated_in_tc_and_syn_fin_rst_or_removed_entries_go_to_the_engine() {
    if skip() {
        return;
    }
    let (Some(mut inside), Some(mut outside)) = (load(IfSide::Inside), load(IfSide::Outside))
    else {
        return;
    };
    let mut table = KernelOffload::new(
        inside.take_offload().expect("inside offload map"),
        outside.take_offload().expect("outside offload map"),
        1,
        1,
    );
    let flow = OffloadFlow {
        client: SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 40_000),
        server: SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 443),
        eip: Ipv4Addr::new(203, 0, 113, 1),
        eport: 40_001,
        proto: 6,
    };
    let out_ack = || tcp_flags("10.1.2.3", "198.51.100.7", 40_000, 443, 0x10);
    let in_ack = || tcp_flags("198.51.100.7", "203.0.113.1", 443, 40_001, 0x10);
    assert_eq!(
        way(&mut inside, &out_ack()),
        Counter::SteeredInside,
        "no entry yet"
    );
    assert_eq!(
        way(&mut outside, &in_ack()),
        Counter::SteeredOutside,
        "no entry yet"
    );
    assert!(table.add(&flow));
    assert_eq!(table.len(), (1, 1));

    assert_eq!(way(&mut inside, &out_ack()), Counter::FastForwarded);
    assert_eq!(way(&mut outside, &in_ack()), Counter::FastForwarded);
    for (name, flags) in [
        ("SYN", 0x02),
        ("FIN", 0x11),
        ("RST", 0x04),
        ("SYN-ACK", 0x12),
    ] {
        let f = tcp_flags("10.1.2.3", "198.51.100.7", 40_000, 443, flags);
        assert_eq!(way(&mut inside, &f), Counter::FastToEngine, "inside {name}");
        let f = tcp_flags("198.51.100.7", "203.0.113.1", 443, 40_001, flags);
        assert_eq!(
            way(&mut outside, &f),
            Counter::FastToEngine,
            "outside {name}"
        );
    }
    // Another port, another protocol, a fragment, an in-frame VLAN tag: not this flow's way.
    let other = tcp_flags("10.1.2.3", "198.51.100.7", 40_002, 443, 0x10);
    assert_eq!(way(&mut inside, &other), Counter::SteeredInside);
    let udp = v4("10.1.2.3", "198.51.100.7", 17, &ports(40_000, 443));
    assert_eq!(way(&mut inside, &udp), Counter::SteeredInside);
    let mut l4 = ports(40_000, 443);
    l4[12] = 0x50;
    l4[13] = 0x10;
    let frag = v4_with(eth(0x0800), "10.1.2.3", "198.51.100.7", 6, 0x2000, &l4);
    assert_eq!(
        way(&mut inside, &frag),
        Counter::SteeredInside,
        "first fragment"
    );
    let mut tagged = eth(0x8100);
    tagged.extend_from_slice(&[0, 5, 0x08, 0x00]);
    let tagged = v4_with(tagged, "10.1.2.3", "198.51.100.7", 6, 0, &l4);
    assert_eq!(
        way(&mut inside, &tagged),
        Counter::SteeredInside,
        "VLAN tag"
    );
    // The reply tuple is only known on the outside (on the inside it is the gateway's own).
    assert_eq!(
        way(&mut inside, &in_ack()),
        Counter::PassGateway,
        "not steered on the inside"
    );

    // The two translated packets were counted in the entries, wire bytes included.
    let counts = table.remove(&flow).expect("entries were there");
    assert_eq!(counts.out.packets, 1, "{counts:?}");
    assert_eq!(counts.out.bytes, out_ack().len() as u64, "{counts:?}");
    assert_eq!(table.len(), (0, 0));
    assert_eq!(
        way(&mut inside, &out_ack()),
        Counter::SteeredInside,
        "removed: engine"
    );
    assert_eq!(
        way(&mut outside, &in_ack()),
        Counter::SteeredOutside,
        "removed: engine"
    );
    assert!(table.remove(&flow).is_none());
}
