//! Split mode's tc program `natfw_steer` and its fast-path lookup, in the kernel
//! (`BPF_PROG_TEST_RUN`, root only): a packet of a flow in the `offload` table is translated in
//! the kernel (counted `fastpath_forwarded` and in its entry), unless it carries SYN, FIN or RST
//! or is above the egress MTU (`fastpath_to_engine`) or its flow is not (or no longer) in the
//! table: then it goes to the slow path (the engine) as before. Both ways return
//! `TC_ACT_REDIRECT`; the counters tell them apart.

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
    // The worker slots (one worker here: worker 0 for what goes to the slow path) aside.
    let moved: Vec<Counter> = Counter::ALL
        .into_iter()
        .filter(|c| after.get(*c) != before.get(*c) && !c.is_distribution())
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
    // The client's packets leave by an interface with a 576-byte MTU (a veth made for the
    // test), the server's by lo.
    let small = SmallMtuLink::new();
    let mut table = KernelOffload::new(
        inside.take_offload().expect("inside offload map"),
        outside.take_offload().expect("outside offload map"),
        1,
        small.ifindex,
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
    // Above the egress MTU: the engine answers it (ICMP fragmentation needed).
    let mut l4 = ports(40_000, 443);
    l4[12] = 0x50;
    l4[13] = 0x10;
    l4.extend_from_slice(&[0u8; 600]);
    let big = v4("10.1.2.3", "198.51.100.7", 6, &l4);
    assert_eq!(
        way(&mut inside, &big),
        Counter::FastToEngine,
        "above the MTU"
    );
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

/// Unmounts and removes a test's bpffs directory.
struct Bpffs(std::path::PathBuf);

impl Bpffs {
    /// A bpffs mounted on a fresh temporary directory named after `name`; `None` (skipped,
    /// with the reason) when it cannot be mounted.
    fn mount(name: &str) -> Option<Bpffs> {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fs = Bpffs(dir);
        let mounted = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&fs.0)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: cannot mount a bpffs");
            return None;
        }
        Some(fs)
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The restart handover's kernel half: an `offload` map pinned by one load is the same map in
/// the next load (entries and counters kept), `KernelOffload::keeping` removes every entry
/// but the handed-over flows', and `remove_pins` leaves nothing behind.
#[test]
fn a_pinned_offload_table_outlives_its_loader_and_keeps_only_handed_over_flows() {
    if skip() {
        return;
    }
    let Some(fs) = Bpffs::mount("natfw-xdp-pins") else {
        return;
    };
    let dir = fs.0.clone();
    let (din, dout) = (dir.join("inside"), dir.join("outside"));
    let load = |side, d: &std::path::Path| {
        Steering::load_pinned("lo", side, &rules(), None, Some(d)).expect("load pinned")
    };
    let flow = |port: u16| OffloadFlow {
        client: SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), port),
        server: SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 443),
        eip: Ipv4Addr::new(203, 0, 113, 1),
        eport: port + 1,
        proto: 6,
    };
    let (kept, dropped) = (flow(40_000), flow(40_010));
    {
        let (mut a_in, mut a_out) = (load(IfSide::Inside, &din), load(IfSide::Outside, &dout));
        let mut t = KernelOffload::new(
            a_in.take_offload().unwrap(),
            a_out.take_offload().unwrap(),
            1,
            1,
        );
        assert!(t.add(&kept));
        assert!(t.add(&dropped));
        assert_eq!(t.len(), (2, 2));
        // The first loader's kernel path forwards a packet of `kept`: counted in its entry.
        let ack = tcp_flags("10.1.2.3", "198.51.100.7", 40_000, 443, 0x10);
        assert_eq!(way(&mut a_in, &ack), Counter::FastForwarded);
    }
    assert!(din.join("offload").exists() && dout.join("offload").exists());
    let (mut b_in, mut b_out) = (load(IfSide::Inside, &din), load(IfSide::Outside, &dout));
    let mut t = KernelOffload::keeping(
        b_in.take_offload().unwrap(),
        b_out.take_offload().unwrap(),
        1,
        1,
        &[kept],
    );
    assert_eq!(t.len(), (1, 1), "only the handed-over flow is left");
    let c = t.read(&kept).expect("kept entry");
    assert_eq!(c.out.packets, 1, "its counters survived the loader");
    assert!(t.read(&dropped).is_none());
    // The second loader's program uses the same map.
    let ack = tcp_flags("10.1.2.3", "198.51.100.7", 40_000, 443, 0x10);
    assert_eq!(way(&mut b_in, &ack), Counter::FastForwarded);
    assert_eq!(t.read(&kept).unwrap().out.packets, 2);
    drop((t, b_in, b_out));
    for d in [&din, &dout] {
        assert!(
            !natfw_gateway::xdp::remove_pins(d).unwrap(),
            "no link was pinned"
        );
        assert!(!d.exists());
    }
    drop(fs);
}

/// A veth pair with a 576-byte MTU in the test's namespace, removed on drop.
struct SmallMtuLink {
    ifindex: u32,
}

impl SmallMtuLink {
    const NAME: &'static str = "nfwt-mtu0";

    fn new() -> SmallMtuLink {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", Self::NAME])
            .output();
        let st = std::process::Command::new("ip")
            .args([
                "link",
                "add",
                Self::NAME,
                "mtu",
                "576",
                "type",
                "veth",
                "peer",
                "name",
            ])
            .arg("nfwt-mtu1")
            .status()
            .expect("ip link add");
        assert!(st.success(), "creating {}", Self::NAME);
        let ifindex = natfw_gateway::netlink::if_index(Self::NAME).expect("its index");
        SmallMtuLink { ifindex }
    }
}

impl Drop for SmallMtuLink {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", Self::NAME])
            .output();
    }
}

/// A pinned `offload` map of another layout (an upgrade changed `ebpf/natfw.h`) is not reused:
/// the load replaces it with a fresh map of this build's layout.
#[test]
fn a_pinned_table_of_another_layout_is_replaced_not_reused() {
    if skip() {
        return;
    }
    let Some(fs) = Bpffs::mount("natfw-xdp-badpin") else {
        return;
    };
    let dir = fs.0.clone();
    let side = dir.join("inside");
    std::fs::create_dir_all(&side).unwrap();
    let pin = side.join("offload");
    // Another map of the object (the one-entry `config` array) pinned where `offload` goes.
    {
        let mut other = aya::Ebpf::load(natfw_gateway::xdp::PROGRAM).expect("object");
        let m = other.map_mut("config").expect("config map");
        let aya::maps::Map::Array(data) = m else {
            panic!("config is not an array map");
        };
        data.pin(&pin).expect("pin");
    }
    let before = aya::maps::MapInfo::from_pin(&pin)
        .expect("pinned")
        .key_size();
    assert_eq!(before, 4, "an array map's key");
    let mut s = Steering::load_pinned("lo", IfSide::Inside, &rules(), None, Some(&side))
        .expect("loads over an incompatible pin");
    let info = aya::maps::MapInfo::from_pin(&pin).expect("pinned again");
    assert_eq!(
        (info.key_size(), info.value_size()),
        (
            std::mem::size_of::<natfw_gateway::xdp::OffloadKey>() as u32,
            std::mem::size_of::<natfw_gateway::xdp::OffloadVal>() as u32
        ),
        "the pin is this build's table now"
    );
    assert!(s.take_offload().is_ok());
    drop(s);
    drop(fs);
}
