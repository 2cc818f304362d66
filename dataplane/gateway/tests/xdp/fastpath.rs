//! Split mode's tc program `natfw_steer` and its fast-path lookup, in the kernel
//! (`BPF_PROG_TEST_RUN`, root only): a packet of a flow in the `offload` table is translated in
//! the kernel (counted `fastpath_forwarded` and in its entry), unless it carries SYN, FIN or RST
//! or is above the egress MTU (`fastpath_to_engine`) or its flow is not (or no longer) in the
//! table: then it goes to the slow path (the engine) as before. Both ways return
//! `TC_ACT_REDIRECT`; the counters tell them apart. IPv4 flows are in `offload`, IPv6 flows
//! in `offload6`.
//!
//! `BPF_PROG_TEST_RUN` hands the program a linear skb with `CHECKSUM_NONE` and no GSO: the
//! checksums of a translated frame are checked here, but `CHECKSUM_PARTIAL`, `CHECKSUM_COMPLETE`
//! and GSO super-frames cannot be produced by it (the lab tests carry real traffic for those).

use std::net::SocketAddr;

use etherparse::PacketBuilder;

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
    way_out(s, frame).0
}

/// [`way`] and the frame as the program left it.
fn way_out(s: &mut Steering, frame: &[u8]) -> (Counter, Vec<u8>) {
    let before = s.counters().unwrap();
    let (action, out) = s.test_run_steer_out(frame).expect("test run");
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
        return (Counter::FastToEngine, out);
    }
    assert_eq!(moved.len(), 1, "{moved:?}");
    (main, out)
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn flow(client: &str, server: &str, eip: &str, eport: u16, proto: u8) -> OffloadFlow {
    OffloadFlow {
        client: sa(client),
        server: sa(server),
        eip: eip.parse().unwrap(),
        eport,
        proto,
    }
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
    let flow = flow(
        "10.1.2.3:40000",
        "198.51.100.7:443",
        "203.0.113.1",
        40_001,
        6,
    );
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
    let flow4 = |port: u16| {
        flow(
            &format!("10.1.2.3:{port}"),
            "198.51.100.7:443",
            "203.0.113.1",
            port + 1,
            6,
        )
    };
    let flow6 = |port: u16| {
        flow(
            &format!("[fd00::5]:{port}"),
            "[2001:db8:5::7]:443",
            "2001:db8::1",
            port + 1,
            6,
        )
    };
    let (kept, dropped) = (flow4(40_000), flow4(40_010));
    let (kept6, dropped6) = (flow6(40_000), flow6(40_010));
    {
        let (mut a_in, mut a_out) = (load(IfSide::Inside, &din), load(IfSide::Outside, &dout));
        let mut t = KernelOffload::new(
            a_in.take_offload().unwrap(),
            a_out.take_offload().unwrap(),
            1,
            1,
        );
        for f in [&kept, &dropped, &kept6, &dropped6] {
            assert!(t.add(f));
        }
        assert_eq!(t.len(), (4, 4));
        // The first loader's kernel path forwards a packet of `kept` and of `kept6`: counted
        // in their entries.
        let ack = tcp_flags("10.1.2.3", "198.51.100.7", 40_000, 443, 0x10);
        assert_eq!(way(&mut a_in, &ack), Counter::FastForwarded);
        let ack6 = tcp6("fd00::5", "2001:db8:5::7", 40_000, 443, T::Ack, b"");
        assert_eq!(way(&mut a_in, &ack6), Counter::FastForwarded);
    }
    for d in [&din, &dout] {
        assert!(d.join("offload").exists() && d.join("offload6").exists());
    }
    let (mut b_in, mut b_out) = (load(IfSide::Inside, &din), load(IfSide::Outside, &dout));
    let mut t = KernelOffload::keeping(
        b_in.take_offload().unwrap(),
        b_out.take_offload().unwrap(),
        1,
        1,
        &[kept, kept6],
    );
    assert_eq!(t.len(), (2, 2), "only the handed-over flows are left");
    for f in [&kept, &kept6] {
        let c = t.read(f).expect("kept entry");
        assert_eq!(c.out.packets, 1, "its counters survived the loader: {f:?}");
    }
    assert!(t.read(&dropped).is_none());
    assert!(t.read(&dropped6).is_none());
    // The second loader's program uses the same maps.
    let ack = tcp_flags("10.1.2.3", "198.51.100.7", 40_000, 443, 0x10);
    assert_eq!(way(&mut b_in, &ack), Counter::FastForwarded);
    assert_eq!(t.read(&kept).unwrap().out.packets, 2);
    let ack6 = tcp6("fd00::5", "2001:db8:5::7", 40_000, 443, T::Ack, b"");
    assert_eq!(way(&mut b_in, &ack6), Counter::FastForwarded);
    assert_eq!(t.read(&kept6).unwrap().out.packets, 2);
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
    let (pin, pin6) = (side.join("offload"), side.join("offload6"));
    // Another map of the object (the one-entry `config` array) pinned where `offload` and
    // `offload6` go.
    {
        let mut other = aya::Ebpf::load(natfw_gateway::xdp::PROGRAM).expect("object");
        let m = other.map_mut("config").expect("config map");
        let aya::maps::Map::Array(data) = m else {
            panic!("config is not an array map");
        };
        data.pin(&pin).expect("pin");
        data.pin(&pin6).expect("pin");
    }
    for p in [&pin, &pin6] {
        let before = aya::maps::MapInfo::from_pin(p).expect("pinned").key_size();
        assert_eq!(before, 4, "an array map's key");
    }
    let mut s = Steering::load_pinned("lo", IfSide::Inside, &rules(), None, Some(&side))
        .expect("loads over an incompatible pin");
    let size = |p: &std::path::Path| {
        let info = aya::maps::MapInfo::from_pin(p).expect("pinned again");
        (info.key_size(), info.value_size())
    };
    use natfw_gateway::xdp::{Offload6Key, Offload6Val, OffloadKey, OffloadVal};
    use std::mem::size_of;
    assert_eq!(
        size(&pin),
        (
            size_of::<OffloadKey>() as u32,
            size_of::<OffloadVal>() as u32
        ),
        "the pin is this build's table now"
    );
    assert_eq!(
        size(&pin6),
        (
            size_of::<Offload6Key>() as u32,
            size_of::<Offload6Val>() as u32
        ),
        "the IPv6 pin is this build's table now"
    );
    assert!(s.take_offload().is_ok());
    drop(s);
    drop(fs);
}

/// TCP flags of [`tcp6`].
#[derive(Clone, Copy, Debug)]
enum T {
    Ack,
    Syn,
    Fin,
    Rst,
}

fn ip6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

/// An IPv6 TCP frame with valid checksums (hop limit 64).
fn tcp6(src: &str, dst: &str, sport: u16, dport: u16, k: T, data: &[u8]) -> Vec<u8> {
    tcp6_hl(src, dst, sport, dport, k, data, 64)
}

fn tcp6_hl(src: &str, dst: &str, sport: u16, dport: u16, k: T, data: &[u8], hl: u8) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv6(ip6(src), ip6(dst), hl)
        .tcp(sport, dport, 1000, 64_000);
    let b = match k {
        T::Ack => b.ack(5000).psh(),
        T::Syn => b.syn(),
        T::Fin => b.fin().ack(5000),
        T::Rst => b.rst(),
    };
    let mut out = Vec::new();
    b.write(&mut out, data).unwrap();
    out
}

/// An IPv6 UDP frame with a valid checksum.
fn udp6(src: &str, dst: &str, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv6(ip6(src), ip6(dst), 64)
        .udp(sport, dport)
        .write(&mut out, data)
        .unwrap();
    out
}

/// What a translated frame says: addresses, ports, hop limit, and whether its checksums are
/// right (the engine's own check).
fn seen(frame: &[u8]) -> (String, String, u8, bool) {
    let info = natfw_engine::wire::parse(frame).expect("parses");
    let (sp, dp) = info.ports().expect("ports");
    (
        SocketAddr::new(info.src, sp).to_string(),
        SocketAddr::new(info.dst, dp).to_string(),
        info.ttl,
        natfw_engine::wire::verify_checksums(frame, &info),
    )
}

/// An IPv6 flow in `offload6`: its TCP and UDP packets are translated in the kernel both ways
/// (source to the EIP inside, destination back to the client outside, hop limit decremented,
/// checksums right) and counted in their entries; SYN, FIN, RST, packets above the egress MTU,
/// extension headers, a hop limit of 1 and a VLAN tag go to the engine.
#[test]
fn offloaded_ipv6_flows_are_translated_in_tc_with_valid_checksums() {
    if skip() {
        return;
    }
    let (Some(mut inside), Some(mut outside)) = (load(IfSide::Inside), load(IfSide::Outside))
    else {
        return;
    };
    // Client packets leave by a 576-byte-MTU veth, the server's by lo.
    let small = SmallMtuLink::new();
    let mut table = KernelOffload::new(
        inside.take_offload().expect("inside offload maps"),
        outside.take_offload().expect("outside offload maps"),
        1,
        small.ifindex,
    );
    let (client, server, eip) = ("fd00::5", "2001:db8:5::7", "2001:db8::1");
    let tcp = flow("[fd00::5]:40000", "[2001:db8:5::7]:443", eip, 40_001, 6);
    let udp = flow("[fd00::5]:5000", "[2001:db8:5::7]:7000", eip, 5_001, 17);
    let out_tcp = || tcp6(client, server, 40_000, 443, T::Ack, b"hello, server");
    let in_tcp = || tcp6(server, eip, 443, 40_001, T::Ack, b"hello, client");
    let out_udp = || udp6(client, server, 5_000, 7_000, b"ping");
    let in_udp = || udp6(server, eip, 7_000, 5_001, b"pong");
    for f in [out_tcp(), out_udp()] {
        assert_eq!(way(&mut inside, &f), Counter::SteeredInside, "no entry yet");
    }
    for f in [in_tcp(), in_udp()] {
        assert_eq!(
            way(&mut outside, &f),
            Counter::SteeredOutside,
            "no entry yet"
        );
    }
    assert!(table.add(&tcp));
    assert!(table.add(&udp));
    assert_eq!(table.len(), (2, 2));

    // Both directions of both flows, translated with valid checksums.
    let cases = [
        (
            true,
            out_tcp(),
            "[2001:db8::1]:40001",
            "[2001:db8:5::7]:443",
            20,
        ),
        (
            false,
            in_tcp(),
            "[2001:db8:5::7]:443",
            "[fd00::5]:40000",
            20,
        ),
        (
            true,
            out_udp(),
            "[2001:db8::1]:5001",
            "[2001:db8:5::7]:7000",
            8,
        ),
        (false, in_udp(), "[2001:db8:5::7]:7000", "[fd00::5]:5000", 8),
    ];
    for (out, frame, src, dst, l4_len) in &cases {
        assert!(seen(frame).3, "the test frame's checksums are right");
        let s = if *out { &mut inside } else { &mut outside };
        let (w, translated) = way_out(s, frame);
        assert_eq!(w, Counter::FastForwarded, "{src} -> {dst}");
        assert_eq!(translated.len(), frame.len());
        assert_eq!(
            seen(&translated),
            (src.to_string(), dst.to_string(), 63, true),
            "{src} -> {dst}"
        );
        // The payload is untouched.
        assert_eq!(translated[14 + 40 + l4_len..], frame[14 + 40 + l4_len..]);
    }
    // Counted in the entries: one wire packet each way, its bytes.
    let c = table.read(&tcp).expect("tcp entries");
    assert_eq!((c.out.packets, c.inb.packets), (1, 1), "{c:?}");
    assert_eq!(c.out.bytes, out_tcp().len() as u64);
    assert_eq!(c.inb.bytes, in_tcp().len() as u64);
    let c = table.read(&udp).expect("udp entries");
    assert_eq!((c.out.packets, c.inb.packets), (1, 1), "{c:?}");
    assert_eq!(c.out.bytes, out_udp().len() as u64);

    // SYN, FIN, RST: the engine's, both sides.
    for k in [T::Syn, T::Fin, T::Rst] {
        let f = tcp6(client, server, 40_000, 443, k, b"");
        assert_eq!(way(&mut inside, &f), Counter::FastToEngine, "inside {k:?}");
        let f = tcp6(server, eip, 443, 40_001, k, b"");
        assert_eq!(
            way(&mut outside, &f),
            Counter::FastToEngine,
            "outside {k:?}"
        );
    }
    // Above the egress MTU (576): the engine answers it (ICMPv6 packet too big).
    let big = tcp6(client, server, 40_000, 443, T::Ack, &[0u8; 600]);
    assert_eq!(
        way(&mut inside, &big),
        Counter::FastToEngine,
        "above the MTU"
    );
    // A hop limit of 1: the engine's (it answers time exceeded).
    let last_hop = tcp6_hl(client, server, 40_000, 443, T::Ack, b"", 1);
    assert_eq!(
        way(&mut inside, &last_hop),
        Counter::SteeredInside,
        "hop limit 1"
    );
    // Extension headers (hop-by-hop options, a fragment header) before the TCP header: not
    // looked up, the engine's.
    let mut l4 = ports(40_000, 443);
    l4[12] = 0x50;
    l4[13] = 0x10;
    let mut hbh = vec![6, 0, 1, 4, 0, 0, 0, 0]; // next TCP, 8 bytes, PadN
    hbh.extend_from_slice(&l4);
    let f = v6(client, server, 0, &hbh);
    assert_eq!(way(&mut inside, &f), Counter::SteeredInside, "hop-by-hop");
    let mut frag = vec![6, 0, 0, 1, 0, 0, 0, 7]; // next TCP, offset 0, M=1
    frag.extend_from_slice(&l4);
    let f = v6(client, server, 44, &frag);
    assert_eq!(
        way(&mut inside, &f),
        Counter::SteeredInside,
        "fragment header"
    );
    // An in-frame VLAN tag.
    let mut tagged = eth(0x8100);
    tagged.extend_from_slice(&[0, 5, 0x86, 0xdd]);
    tagged.extend_from_slice(&out_tcp()[14..]);
    assert_eq!(
        way(&mut inside, &tagged),
        Counter::SteeredInside,
        "VLAN tag"
    );
    // Another port: not this flow.
    let other = tcp6(client, server, 40_002, 443, T::Ack, b"");
    assert_eq!(way(&mut inside, &other), Counter::SteeredInside);
    // None of those was counted in the entries.
    assert_eq!(table.read(&tcp).unwrap().out.packets, 1);

    // Removed: the engine's again; the IPv4 table never saw these flows.
    let c = table.remove(&tcp).expect("entries were there");
    assert_eq!(c.out.packets, 1);
    assert_eq!(way(&mut inside, &out_tcp()), Counter::SteeredInside);
    assert_eq!(way(&mut outside, &in_tcp()), Counter::SteeredOutside);
    assert!(table.remove(&udp).is_some());
    assert_eq!(table.len(), (0, 0));
}
