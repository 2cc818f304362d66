//! The XDP program's fast-path lookup, in the kernel (`BPF_PROG_TEST_RUN`, root only): a
//! packet of a flow in the `offload` table is passed to the kernel (for the tc program) and
//! counted `fastpath_pass`, unless it carries SYN, FIN or RST or its flow is not (or no
//! longer) in the table: then it is steered to the engine as before.

use std::net::{Ipv4Addr, SocketAddrV4};

use natfw_engine::engine::{OffloadFlow, OffloadTable};
use natfw_gateway::xdp::offload::KernelOffload;
use natfw_gateway::xdp::{Counter, IfSide};

use crate::support::*;

fn tcp_flags(src: &str, dst: &str, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut l4 = ports(sport, dport);
    l4[12] = 0x50; // data offset 5
    l4[13] = flags;
    v4(src, dst, 6, &l4)
}

#[test]
fn offloaded_flows_pass_to_tc_and_syn_fin_rst_or_removed_entries_go_to_the_engine() {
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
    assert_eq!(inside.test_run(&out_ack()).unwrap(), STEER, "no entry yet");
    assert_eq!(outside.test_run(&in_ack()).unwrap(), STEER, "no entry yet");
    assert!(table.add(&flow));
    assert_eq!(table.len(), (1, 1));

    let before = inside.counters().unwrap().get(Counter::FastPass);
    assert_eq!(inside.test_run(&out_ack()).unwrap(), XDP_PASS);
    assert_eq!(
        inside.counters().unwrap().get(Counter::FastPass),
        before + 1
    );
    assert_eq!(outside.test_run(&in_ack()).unwrap(), XDP_PASS);
    for (name, flags) in [
        ("SYN", 0x02),
        ("FIN", 0x11),
        ("RST", 0x04),
        ("SYN-ACK", 0x12),
    ] {
        let f = tcp_flags("10.1.2.3", "198.51.100.7", 40_000, 443, flags);
        assert_eq!(inside.test_run(&f).unwrap(), STEER, "inside {name}");
        let f = tcp_flags("198.51.100.7", "203.0.113.1", 443, 40_001, flags);
        assert_eq!(outside.test_run(&f).unwrap(), STEER, "outside {name}");
    }
    // Another port, another protocol, a fragment: not this flow.
    let other = tcp_flags("10.1.2.3", "198.51.100.7", 40_002, 443, 0x10);
    assert_eq!(inside.test_run(&other).unwrap(), STEER);
    let udp = v4("10.1.2.3", "198.51.100.7", 17, &ports(40_000, 443));
    assert_eq!(inside.test_run(&udp).unwrap(), STEER);
    let mut l4 = ports(40_000, 443);
    l4[12] = 0x50;
    l4[13] = 0x10;
    let frag = v4_with(eth(0x0800), "10.1.2.3", "198.51.100.7", 6, 0x2000, &l4);
    assert_eq!(inside.test_run(&frag).unwrap(), STEER, "first fragment");
    // The reply tuple is only known on the outside.
    assert_eq!(
        inside.test_run(&in_ack()).unwrap(),
        XDP_PASS,
        "not SNAT-bound on the inside"
    );

    let counts = table.remove(&flow).expect("entries were there");
    assert_eq!(counts.out.packets, 0, "nothing ran through tc here");
    assert_eq!(table.len(), (0, 0));
    assert_eq!(
        inside.test_run(&out_ack()).unwrap(),
        STEER,
        "removed: engine"
    );
    assert_eq!(
        outside.test_run(&in_ack()).unwrap(),
        STEER,
        "removed: engine"
    );
    assert!(table.remove(&flow).is_none());
}
