//! The fast-path hand-off (`Engine::set_offload`) against an in-memory kernel table: which
//! flows leave the engine and when, that they come back for FIN/RST/SYN, reloads and bypass
//! changes, that nothing pending or held is offloaded, and that records add the packets the
//! kernel forwarded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use etherparse::PacketBuilder;
use natfw_engine::engine::{
    AdoptPolicy, CompiledPolicy, Engine, EngineOptions, GeoDb, OffloadCounts, OffloadFlow,
    OffloadTable, Side, Verdict,
};
use natfw_engine::stats::Counter;
use natfw_engine::time::Timestamp;
use natfw_flowlog::SharedRecords;
use natfw_policy::Config;

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
const EIP: [u8; 4] = [192, 0, 2, 1];
const SERVER: [u8; 4] = [203, 0, 113, 5];
const CLIENT: [u8; 4] = [10, 0, 0, 5];
/// The embedded default's IPv6 EIP, a server and a ULA client (SNAT-bound to that EIP).
const EIP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const SERVER6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5,
];
const CLIENT6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];

/// The "kernel": entries and their counters; `refuse` makes `add` fail.
#[derive(Clone, Default)]
struct Mem {
    entries: Arc<Mutex<HashMap<OffloadFlow, OffloadCounts>>>,
    refuse: Arc<Mutex<bool>>,
}

impl Mem {
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
    /// An entry left by an earlier engine, `extra` packets each way beyond `base`.
    fn add_with(&self, f: OffloadFlow, base: OffloadCounts, extra: u64) {
        let mut c = base;
        c.out.packets += extra;
        c.inb.packets += extra;
        self.entries.lock().unwrap().insert(f, c);
    }
    /// The kernel forwarded `out`/`inb` packets of `bytes` each for every entry.
    fn forward(&self, out: u64, inb: u64, bytes: u64) {
        for c in self.entries.lock().unwrap().values_mut() {
            c.out.packets += out;
            c.out.bytes += out * bytes;
            c.inb.packets += inb;
            c.inb.bytes += inb * bytes;
        }
    }
}

impl OffloadTable for Mem {
    fn add(&mut self, f: &OffloadFlow) -> bool {
        if *self.refuse.lock().unwrap() {
            return false;
        }
        self.entries
            .lock()
            .unwrap()
            .insert(*f, OffloadCounts::default());
        true
    }
    fn read(&mut self, f: &OffloadFlow) -> Option<OffloadCounts> {
        self.entries.lock().unwrap().get(f).copied()
    }
    fn remove(&mut self, f: &OffloadFlow) -> Option<OffloadCounts> {
        self.entries.lock().unwrap().remove(f)
    }
}

fn engine_with(c: &Config) -> (Engine, SharedRecords, Mem) {
    let sink = SharedRecords::new("gw");
    let mut e = Engine::with_options(
        c,
        GeoDb::embedded(),
        Box::new(sink.clone()),
        EngineOptions::default(),
    )
    .unwrap();
    let mem = Mem::default();
    e.set_offload(Box::new(mem.clone()));
    (e, sink, mem)
}

fn engine() -> (Engine, SharedRecords, Mem) {
    let mut c = natfw_policy::config::embedded_default();
    c.gateway.bypass = vec!["10.9.0.0/16".parse().unwrap()];
    engine_with(&c)
}

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(1_000_000 + ms)
}

#[derive(Clone, Copy, PartialEq)]
enum K {
    Syn,
    SynAck,
    Ack,
    Fin,
    Rst,
}

#[allow(clippy::too_many_arguments)]
fn tcp(
    src: [u8; 4],
    dst: [u8; 4],
    sp: u16,
    dp: u16,
    seq: u32,
    ack: u32,
    k: K,
    data: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .tcp(sp, dp, seq, 64_000);
    let b = match k {
        K::Syn => b.syn(),
        K::SynAck => b.syn().ack(ack),
        K::Ack => b.psh().ack(ack),
        K::Fin => b.fin().ack(ack),
        K::Rst => b.rst(),
    };
    let mut out = Vec::new();
    b.write(&mut out, data).unwrap();
    out
}

/// [`tcp`] over IPv6.
#[allow(clippy::too_many_arguments)]
fn tcp6(
    src: [u8; 16],
    dst: [u8; 16],
    sp: u16,
    dp: u16,
    seq: u32,
    ack: u32,
    k: K,
    data: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6(src, dst, 64)
        .tcp(sp, dp, seq, 64_000);
    let b = match k {
        K::Syn => b.syn(),
        K::SynAck => b.syn().ack(ack),
        K::Ack => b.psh().ack(ack),
        K::Fin => b.fin().ack(ack),
        K::Rst => b.rst(),
    };
    let mut out = Vec::new();
    b.write(&mut out, data).unwrap();
    out
}

fn udp6(src: [u8; 16], dst: [u8; 16], sp: u16, dp: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6(src, dst, 64)
        .udp(sp, dp)
        .write(&mut out, data)
        .unwrap();
    out
}

fn udp(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .udp(sp, dp)
        .write(&mut out, data)
        .unwrap();
    out
}

fn out(e: &mut Engine, now: Timestamp, mut f: Vec<u8>) -> Verdict {
    e.process(now, Side::Inside, &mut f)
}

fn inb(e: &mut Engine, now: Timestamp, mut f: Vec<u8>) -> Verdict {
    e.process(now, Side::Outside, &mut f)
}

const REQ: &[u8] = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";

/// Handshake, an HTTP request (identified), the server's ACK of it and a reply: the flow is
/// decided and its inspected bytes are acknowledged. Returns the engine's packet counts
/// (out, in) so far.
fn established(e: &mut Engine, sport: u16) -> (u64, u64) {
    assert_eq!(
        out(e, t(0), tcp(CLIENT, SERVER, sport, 80, 100, 0, K::Syn, &[])),
        Verdict::Forward
    );
    assert_eq!(
        inb(
            e,
            t(1),
            tcp(SERVER, EIP, 80, sport, 500, 101, K::SynAck, &[])
        ),
        Verdict::Forward
    );
    assert_eq!(
        out(
            e,
            t(2),
            tcp(CLIENT, SERVER, sport, 80, 101, 501, K::Ack, &[])
        ),
        Verdict::Forward
    );
    let v = out(
        e,
        t(3),
        tcp(CLIENT, SERVER, sport, 80, 101, 501, K::Ack, REQ),
    );
    assert!(matches!(v, Verdict::Forward | Verdict::Held), "{v:?}");
    let end = 101 + REQ.len() as u32;
    assert_eq!(
        inb(
            e,
            t(4),
            tcp(
                SERVER,
                EIP,
                80,
                sport,
                501,
                end,
                K::Ack,
                b"HTTP/1.1 200 OK\r\n"
            )
        ),
        Verdict::Forward
    );
    (3, 2)
}

/// [`established`] over IPv6 (client [`CLIENT6`], SNAT to [`EIP6`]).
fn established6(e: &mut Engine, sport: u16) -> (u64, u64) {
    let o = |e: &mut Engine, ms, seq, ack, k, d: &[u8]| {
        out(e, t(ms), tcp6(CLIENT6, SERVER6, sport, 80, seq, ack, k, d))
    };
    let i = |e: &mut Engine, ms, seq, ack, k, d: &[u8]| {
        inb(e, t(ms), tcp6(SERVER6, EIP6, 80, sport, seq, ack, k, d))
    };
    assert_eq!(o(e, 0, 100, 0, K::Syn, &[]), Verdict::Forward);
    assert_eq!(i(e, 1, 500, 101, K::SynAck, &[]), Verdict::Forward);
    assert_eq!(o(e, 2, 101, 501, K::Ack, &[]), Verdict::Forward);
    let v = o(e, 3, 101, 501, K::Ack, REQ);
    assert!(matches!(v, Verdict::Forward | Verdict::Held), "{v:?}");
    let end = 101 + REQ.len() as u32;
    assert_eq!(
        i(e, 4, 501, end, K::Ack, b"HTTP/1.1 200 OK\r\n"),
        Verdict::Forward
    );
    (3, 2)
}

#[test]
fn decided_tcp_flow_is_offloaded_and_its_record_adds_the_kernels_counters() {
    let (mut e, sink, mem) = engine();
    assert_eq!(mem.len(), 0);
    let (o, i) = established(&mut e, 40_000);
    assert_eq!(mem.len(), 1, "decided and acknowledged: offloaded");
    assert_eq!(e.offloaded_flows(), 1);
    let f = *mem.entries.lock().unwrap().keys().next().unwrap();
    assert_eq!(f.client.port(), 40_000);
    assert_eq!(f.server.port(), 80);
    assert_eq!(f.eip, std::net::IpAddr::from(EIP));
    assert_eq!(f.proto, 6);

    // The kernel forwards 1000 packets each way.
    mem.forward(1000, 1000, 1514);
    // A client FIN comes to the engine: the flow is taken back first.
    let end = 101 + REQ.len() as u32;
    assert_eq!(
        out(
            &mut e,
            t(10),
            tcp(CLIENT, SERVER, 40_000, 80, end, 519, K::Fin, &[])
        ),
        Verdict::Forward
    );
    assert_eq!(mem.len(), 0, "FIN: entry removed");
    assert_eq!(e.offloaded_flows(), 0);
    assert_eq!(
        inb(
            &mut e,
            t(11),
            tcp(SERVER, EIP, 80, 40_000, 518, end + 1, K::Fin, &[])
        ),
        Verdict::Forward
    );
    assert_eq!(mem.len(), 0, "a closing flow is not offloaded again");
    assert_eq!(
        out(
            &mut e,
            t(12),
            tcp(CLIENT, SERVER, 40_000, 80, end + 1, 519, K::Ack, &[])
        ),
        Verdict::Forward
    );
    let recs = sink.take();
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r.end_reason, "fin");
    assert_eq!(r.out_packet_count, o + 2 + 1000);
    assert_eq!(r.in_packet_count, i + 1 + 1000);
    assert!(r.out_packet_bytes >= 1000 * 1514);
    assert_eq!(e.stats().offload_forwarded.packets, 2000);
}

#[test]
fn rst_takes_the_flow_back_and_ends_it() {
    let (mut e, sink, mem) = engine();
    established(&mut e, 40_001);
    assert_eq!(mem.len(), 1);
    mem.forward(7, 5, 100);
    let end = 101 + REQ.len() as u32;
    let _ = inb(
        &mut e,
        t(20),
        tcp(SERVER, EIP, 80, 40_001, 518, end, K::Rst, &[]),
    );
    assert_eq!(mem.len(), 0);
    let recs = sink.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].end_reason, "rst");
    assert_eq!(recs[0].out_packet_count, 3 + 7);
    assert_eq!(recs[0].in_packet_count, 2 + 1 + 5);
}

#[test]
fn a_syn_takes_the_flow_back_and_a_reused_tuple_is_inspected_again() {
    let (mut e, sink, mem) = engine();
    established(&mut e, 40_002);
    assert_eq!(mem.len(), 1);
    // A SYN on the offloaded tuple always reaches the engine (XDP never offloads one): the
    // flow is taken back before the engine judges it (an in-window SYN of an established
    // flow is dropped; the flow stays established and decided, so it is offloaded again).
    mem.forward(2, 2, 100);
    let v = out(
        &mut e,
        t(30),
        tcp(CLIENT, SERVER, 40_002, 80, 9_000, 0, K::Syn, &[]),
    );
    assert_ne!(v, Verdict::Forward);
    assert_eq!(e.stats().offload_removed, 1, "SYN: taken back");
    assert_eq!(
        e.stats().offload_forwarded.packets,
        4,
        "its counters credited"
    );
    let end = 101 + REQ.len() as u32;
    let _ = out(
        &mut e,
        t(31),
        tcp(CLIENT, SERVER, 40_002, 80, end, 519, K::Ack, &[]),
    );
    assert_eq!(mem.len(), 1);
    // Close: FIN both ways, the last ACK; the record is written, the entry is gone.
    let _ = out(
        &mut e,
        t(32),
        tcp(CLIENT, SERVER, 40_002, 80, end, 519, K::Fin, &[]),
    );
    assert_eq!(mem.len(), 0);
    let _ = inb(
        &mut e,
        t(33),
        tcp(SERVER, EIP, 80, 40_002, 518, end + 1, K::Fin, &[]),
    );
    let _ = out(
        &mut e,
        t(34),
        tcp(CLIENT, SERVER, 40_002, 80, end + 1, 519, K::Ack, &[]),
    );
    assert_eq!(sink.take().len(), 1);
    assert_eq!(mem.len(), 0);
    // The same source port again: a new connection, inspected before it may be offloaded.
    let v = out(
        &mut e,
        t(40),
        tcp(CLIENT, SERVER, 40_002, 80, 9_000, 0, K::Syn, &[]),
    );
    assert_eq!(v, Verdict::Forward);
    let _ = inb(
        &mut e,
        t(41),
        tcp(SERVER, EIP, 80, 40_002, 70, 9_001, K::SynAck, &[]),
    );
    let _ = out(
        &mut e,
        t(42),
        tcp(CLIENT, SERVER, 40_002, 80, 9_001, 71, K::Ack, &[]),
    );
    assert_eq!(mem.len(), 0, "established but nothing identified yet");
    let _ = out(
        &mut e,
        t(43),
        tcp(CLIENT, SERVER, 40_002, 80, 9_001, 71, K::Ack, REQ),
    );
    assert_eq!(
        mem.len(),
        0,
        "identified, not yet acknowledged by the server"
    );
    let end2 = 9_001 + REQ.len() as u32;
    let _ = inb(
        &mut e,
        t(44),
        tcp(
            SERVER,
            EIP,
            80,
            40_002,
            71,
            end2,
            K::Ack,
            b"HTTP/1.1 200 OK\r\n",
        ),
    );
    assert_eq!(mem.len(), 1, "decided and acknowledged: offloaded");
}

#[test]
fn pending_or_held_flows_are_never_offloaded() {
    let (mut e, _sink, mem) = engine();
    // TLS to 443 with only half a ClientHello: the verdict waits, payload is held.
    assert_eq!(
        out(
            &mut e,
            t(0),
            tcp(CLIENT, SERVER, 40_010, 443, 100, 0, K::Syn, &[])
        ),
        Verdict::Forward
    );
    let _ = inb(
        &mut e,
        t(1),
        tcp(SERVER, EIP, 443, 40_010, 500, 101, K::SynAck, &[]),
    );
    let _ = out(
        &mut e,
        t(2),
        tcp(CLIENT, SERVER, 40_010, 443, 101, 501, K::Ack, &[]),
    );
    assert_eq!(mem.len(), 0, "handshake only");
    // A TLS record header announcing a long ClientHello, then a few bytes of it.
    let partial = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    let _ = out(
        &mut e,
        t(3),
        tcp(CLIENT, SERVER, 40_010, 443, 101, 501, K::Ack, &partial),
    );
    let _ = inb(
        &mut e,
        t(4),
        tcp(SERVER, EIP, 443, 40_010, 501, 101, K::Ack, &[]),
    );
    assert_eq!(
        mem.len(),
        0,
        "pending verdict, held payload: stays in the engine"
    );
}

#[test]
fn reload_and_bypass_changes_flush_the_table() {
    let (mut e, _sink, mem) = engine();
    established(&mut e, 40_020);
    assert_eq!(mem.len(), 1);
    // Hot reload (a new compiled policy): the next poll takes every flow back.
    let c = natfw_policy::config::embedded_default();
    e.policy_handle()
        .store(Arc::new(CompiledPolicy::new(&c.firewall)));
    e.poll(t(100));
    assert_eq!(mem.len(), 0, "reload: no stale entry");
    assert_eq!(e.offloaded_flows(), 0);
    // Still decided: its next packet offloads it again.
    let end = 101 + REQ.len() as u32;
    let _ = out(
        &mut e,
        t(101),
        tcp(CLIENT, SERVER, 40_020, 80, end, 519, K::Ack, &[]),
    );
    assert_eq!(mem.len(), 1);
    e.set_bypass("10.8.0.0/16".parse().unwrap(), true);
    assert_eq!(mem.len(), 0, "bypass change: no stale entry");
}

#[test]
fn firewall_off_reload_flushes() {
    let (mut e, _sink, mem) = engine();
    established(&mut e, 40_021);
    assert_eq!(mem.len(), 1);
    let mut c = natfw_policy::config::embedded_default();
    c.firewall.enabled = false;
    e.policy_handle()
        .store(Arc::new(CompiledPolicy::new(&c.firewall)));
    e.poll(t(100));
    assert_eq!(mem.len(), 0);
}

#[test]
fn idle_offloaded_flow_is_kept_alive_by_kernel_traffic_and_times_out_with_its_counters() {
    let (mut e, sink, mem) = engine();
    // UDP to a non-DNS port: decided on its first datagram.
    assert_eq!(
        out(&mut e, t(0), udp(CLIENT, SERVER, 5000, 7000, b"hello")),
        Verdict::Forward
    );
    assert_eq!(
        inb(&mut e, t(1), udp(SERVER, EIP, 7000, 5000, b"world")),
        Verdict::Forward
    );
    let _ = out(&mut e, t(2), udp(CLIENT, SERVER, 5000, 7000, b"again"));
    assert_eq!(mem.len(), 1, "decided UDP flow offloaded");
    // The kernel carries it for 10 minutes: every sync sees traffic, the flow stays.
    let mut now = 2;
    for _ in 0..600 {
        now += 1000;
        mem.forward(1, 1, 60);
        e.poll(t(now));
    }
    assert_eq!(e.flow_count(), 1, "kernel traffic refreshes the idle timer");
    assert!(sink.take().is_empty());
    // Then silence: the flow times out, its entry goes, the record has every packet.
    for _ in 0..700 {
        now += 1000;
        e.poll(t(now));
    }
    assert_eq!(e.flow_count(), 0);
    assert_eq!(mem.len(), 0, "timed out: entry removed");
    let recs = sink.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].end_reason, "timeout");
    assert_eq!(recs[0].out_packet_count, 2 + 600);
    assert_eq!(recs[0].in_packet_count, 1 + 600);
    assert_eq!(recs[0].out_packet_bytes, 2 * 47 + 600 * 60);
}

#[test]
fn a_refused_entry_leaves_the_flow_in_the_engine() {
    let (mut e, sink, mem) = engine();
    *mem.refuse.lock().unwrap() = true;
    established(&mut e, 40_030);
    assert_eq!(mem.len(), 0);
    assert_eq!(e.offloaded_flows(), 0);
    assert_eq!(e.stats().offload_add_failed, 1);
    e.shutdown(t(50));
    assert_eq!(sink.take().len(), 1);
}

#[test]
fn shutdown_reads_the_counters_back() {
    let (mut e, sink, mem) = engine();
    established(&mut e, 40_040);
    mem.forward(3, 4, 10);
    e.shutdown(t(50));
    assert_eq!(mem.len(), 0);
    let recs = sink.take();
    assert_eq!(recs[0].out_packet_count, 3 + 3);
    assert_eq!(recs[0].in_packet_count, 2 + 4);
    let _ = Counter::default();
}

/// A flow's record as the handover must keep it: everything but counters and end time.
fn facts(r: &natfw_flowlog::FlowRecord) -> String {
    format!(
        "{} {:?} {} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {} {}",
        r.start_time,
        r.src_port,
        r.dst_ip,
        r.snat_ip,
        r.snat_port,
        r.app_name,
        r.domain,
        r.domain_source,
        r.acl_rule_id,
        r.monitor_rules,
        r.action,
        r.reason
    )
}

/// Engine A hands its offloaded flow over (no record, entry left), engine B adopts it: the
/// flow stays offloaded and its one record, at its FIN, has the facts A decided and the
/// packets of both engines and of the kernel (before, during and after the restart).
#[test]
fn a_handed_over_flow_is_adopted_and_recorded_once_with_all_its_counters() {
    let (mut a, sink_a, mem) = engine();
    // A reference flow ended under A, for the facts its record carries.
    established(&mut a, 40_050);
    let end = 101 + REQ.len() as u32;
    let _ = inb(
        &mut a,
        t(5),
        tcp(SERVER, EIP, 80, 40_050, 518, end, K::Rst, &[]),
    );
    let reference = sink_a.take();
    assert_eq!(reference.len(), 1);

    let (o, i) = established(&mut a, 40_051);
    mem.forward(10, 20, 100);
    let flows = a.handover();
    assert_eq!(flows.len(), 1);
    assert_eq!(mem.len(), 1, "the kernel entry stays");
    a.shutdown(t(6));
    assert!(sink_a.take().is_empty(), "no record at the handover");
    assert_eq!(mem.len(), 1);
    assert_eq!(a.stats().offload_handed_over, 1);

    // The text form round-trips.
    let line = flows[0].encode();
    assert!(!line.contains('\n'));
    let decoded = natfw_engine::engine::HandoverFlow::decode(&line).expect("decodes");
    assert_eq!(decoded, flows[0]);
    assert!(natfw_engine::engine::HandoverFlow::decode("proto=6 client=x").is_none());

    // No engine: the kernel keeps forwarding.
    mem.forward(5, 5, 100);

    let c = {
        let mut c = natfw_policy::config::embedded_default();
        c.gateway.bypass = vec!["10.9.0.0/16".parse().unwrap()];
        c
    };
    let sink_b = SharedRecords::new("gw");
    let mut b = Engine::with_options(
        &c,
        GeoDb::embedded(),
        Box::new(sink_b.clone()),
        EngineOptions::default(),
    )
    .unwrap();
    b.set_offload(Box::new(mem.clone()));
    let st = b.adopt(t(100), vec![decoded], AdoptPolicy::Same);
    assert_eq!((st.adopted, st.ended), (1, 0));
    assert_eq!(b.offloaded_flows(), 1);
    assert_eq!(b.flow_count(), 1);
    assert_eq!(b.stats().offload_adopted, 1);
    mem.forward(1, 1, 100);
    b.poll(t(1200));
    assert!(sink_b.take().is_empty());

    // The flow ends at B: FIN both ways.
    assert_eq!(
        out(
            &mut b,
            t(1300),
            tcp(CLIENT, SERVER, 40_051, 80, end, 519, K::Fin, &[])
        ),
        Verdict::Forward
    );
    assert_eq!(mem.len(), 0, "FIN: the adopted entry is taken back");
    assert_eq!(
        inb(
            &mut b,
            t(1301),
            tcp(SERVER, EIP, 80, 40_051, 518, end + 1, K::Fin, &[])
        ),
        Verdict::Forward
    );
    assert_eq!(
        out(
            &mut b,
            t(1302),
            tcp(CLIENT, SERVER, 40_051, 80, end + 1, 519, K::Ack, &[])
        ),
        Verdict::Forward
    );
    let recs = sink_b.take();
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r.end_reason, "fin");
    assert_eq!(r.src_port, Some(40_051));
    assert_eq!(r.out_packet_count, o + 10 + 5 + 1 + 2);
    assert_eq!(r.in_packet_count, i + 20 + 5 + 1 + 1);
    // Same facts as the reference flow (start time and port aside).
    let strip = |s: String| {
        s.split_once(' ')
            .map(|x| x.1.to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        strip(facts(r)).replace("40051", "P"),
        strip(facts(&reference[0])).replace("40050", "P")
    );
}

/// A changed policy (or kernel entries gone) takes handed-over flows back: their entries
/// are removed and their records written at once, with the kernel's last counters.
#[test]
fn a_handover_under_a_changed_policy_or_without_entries_ends_the_flows() {
    let (mut a, _sink_a, mem) = engine();
    let (o, _) = established(&mut a, 40_060);
    established(&mut a, 40_061);
    let flows = a.handover();
    assert_eq!(flows.len(), 2);
    mem.forward(4, 4, 100);
    // One entry vanished while no engine ran.
    let gone = flows
        .iter()
        .find(|f| f.flow.client.port() == 40_061)
        .unwrap()
        .flow;
    mem.entries.lock().unwrap().remove(&gone);

    let (mut b, sink_b, mem_b) = engine();
    drop(mem_b);
    b.set_offload(Box::new(mem.clone()));
    let st = b.adopt(t(100), flows.clone(), AdoptPolicy::Same);
    assert_eq!((st.adopted, st.ended), (1, 1));
    let recs = sink_b.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].src_port, Some(40_061));
    assert_eq!(recs[0].end_reason, "shutdown");
    b.shutdown(t(200));
    assert_eq!(sink_b.take().len(), 1);

    // The same flows again, entries back, but a changed policy: both end now.
    let (mut c, sink_c, mem_c) = engine();
    for f in &flows {
        mem_c.add_with(f.flow, f.kernel, 2);
    }
    let st = c.adopt(t(300), flows, AdoptPolicy::Other);
    assert_eq!((st.adopted, st.ended), (0, 2));
    assert_eq!(mem_c.len(), 0);
    let recs = sink_c.take();
    assert_eq!(recs.len(), 2);
    let r = recs.iter().find(|r| r.src_port == Some(40_060)).unwrap();
    assert_eq!(r.out_packet_count, o + 2);
    assert_eq!(r.end_reason, "shutdown");
    assert_eq!(c.flow_count(), 0);
}

/// A restart under a changed firewall section decides every handed-over flow again from its
/// facts: those the new policy accepts are adopted (and attributed to it), those it denies end
/// at once, their kernel entries removed.
#[test]
fn a_handover_under_a_changed_firewall_is_decided_again() {
    let (mut a, _sink_a, mem) = engine();
    established(&mut a, 40_070);
    established(&mut a, 40_071);
    let flows = a.handover();
    assert_eq!(flows.len(), 2);
    let base = {
        let mut c = natfw_policy::config::embedded_default();
        c.gateway.bypass = vec!["10.9.0.0/16".parse().unwrap()];
        c
    };

    // Still accepted (an unrelated rule was added): both adopted, decided by the default.
    let mut c = base.clone();
    c.firewall.rules = vec![super::nat::drop_port_rule(23)];
    let (mut b, sink_b, mem_b) = engine_with(&c);
    for f in &flows {
        mem_b.add_with(f.flow, f.kernel, 1);
    }
    let st = b.adopt(t(100), flows.clone(), AdoptPolicy::Reevaluate);
    assert_eq!(
        (st.adopted, st.reevaluated, st.ended, st.denied),
        (2, 2, 0, 0)
    );
    assert_eq!(mem_b.len(), 2);
    assert!(sink_b.take().is_empty());
    b.shutdown(t(200));
    let recs = sink_b.take();
    assert_eq!(recs.len(), 2);
    assert!(recs.iter().all(|r| r.action == "accept"), "{recs:?}");
    let _ = mem;

    // Denied now (port 80 dropped): both end at once, entries gone.
    let mut c = base.clone();
    c.firewall.rules = vec![super::nat::drop_port_rule(80)];
    let (mut d, sink_d, mem_d) = engine_with(&c);
    for f in &flows {
        mem_d.add_with(f.flow, f.kernel, 1);
    }
    let st = d.adopt(t(300), flows, AdoptPolicy::Reevaluate);
    assert_eq!((st.adopted, st.ended, st.denied), (0, 2, 2));
    assert_eq!(mem_d.len(), 0, "no entry of a denied flow stays");
    assert_eq!(d.flow_count(), 0);
    let recs = sink_d.take();
    assert_eq!(recs.len(), 2);
    assert!(recs.iter().all(|r| r.end_reason == "shutdown"), "{recs:?}");
}

/// An adopted UDP flow lives on the kernel's traffic and times out like any other, with one
/// record counting both engines' and the kernel's packets.
#[test]
fn an_adopted_udp_flow_is_kept_alive_by_kernel_traffic_and_times_out_with_its_counters() {
    let (mut a, sink_a, mem) = engine();
    assert_eq!(
        out(&mut a, t(0), udp(CLIENT, SERVER, 5001, 7000, b"hello")),
        Verdict::Forward
    );
    assert_eq!(
        inb(&mut a, t(1), udp(SERVER, EIP, 7000, 5001, b"world")),
        Verdict::Forward
    );
    let _ = out(&mut a, t(2), udp(CLIENT, SERVER, 5001, 7000, b"again"));
    assert_eq!(mem.len(), 1);
    mem.forward(3, 3, 60);
    let flows = a.handover();
    a.shutdown(t(3));
    assert!(sink_a.take().is_empty());

    let (mut b, sink_b, mem_b) = engine();
    drop(mem_b);
    b.set_offload(Box::new(mem.clone()));
    let line = flows[0].encode();
    let flows = vec![natfw_engine::engine::HandoverFlow::decode(&line).expect("decodes")];
    assert_eq!(b.adopt(t(10), flows, AdoptPolicy::Same).adopted, 1);
    let mut now = 10;
    for _ in 0..120 {
        now += 1000;
        mem.forward(1, 1, 60);
        b.poll(t(now));
    }
    assert_eq!(
        b.flow_count(),
        1,
        "kernel traffic refreshes the adopted flow"
    );
    for _ in 0..700 {
        now += 1000;
        b.poll(t(now));
    }
    assert_eq!(b.flow_count(), 0);
    assert_eq!(mem.len(), 0);
    let recs = sink_b.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].end_reason, "timeout");
    assert_eq!(recs[0].out_packet_count, 2 + 3 + 120);
    assert_eq!(recs[0].in_packet_count, 1 + 3 + 120);
}

/// An IPv6 TCP flow takes the fast path like an IPv4 one: offloaded once decided and
/// acknowledged (SNAT to the IPv6 EIP), taken back at FIN, its record counting the kernel's
/// packets.
#[test]
fn a_decided_ipv6_tcp_flow_is_offloaded_and_taken_back_at_fin() {
    let (mut e, sink, mem) = engine();
    let (o, i) = established6(&mut e, 41_000);
    assert_eq!(mem.len(), 1, "decided and acknowledged: offloaded");
    let f = *mem.entries.lock().unwrap().keys().next().unwrap();
    assert!(f.is_v6());
    assert_eq!(f.client, "[fd00::5]:41000".parse().unwrap());
    assert_eq!(f.server, "[2001:db8:ff::5]:80".parse().unwrap());
    assert_eq!(f.eip, std::net::IpAddr::from(EIP6));
    assert_eq!(f.proto, 6);
    mem.forward(100, 200, 1500);
    let end = 101 + REQ.len() as u32;
    assert_eq!(
        out(
            &mut e,
            t(10),
            tcp6(CLIENT6, SERVER6, 41_000, 80, end, 519, K::Fin, &[])
        ),
        Verdict::Forward
    );
    assert_eq!(mem.len(), 0, "FIN: taken back");
    let _ = inb(
        &mut e,
        t(11),
        tcp6(SERVER6, EIP6, 80, 41_000, 518, end + 1, K::Fin, &[]),
    );
    assert_eq!(mem.len(), 0, "a closing flow is not offloaded again");
    let _ = out(
        &mut e,
        t(12),
        tcp6(CLIENT6, SERVER6, 41_000, 80, end + 1, 519, K::Ack, &[]),
    );
    let recs = sink.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].end_reason, "fin");
    assert_eq!(recs[0].out_packet_count, o + 2 + 100);
    assert_eq!(recs[0].in_packet_count, i + 1 + 200);
    assert_eq!(e.stats().offload_forwarded.packets, 300);
}

#[test]
fn rst_takes_an_ipv6_flow_back_and_ends_it() {
    let (mut e, sink, mem) = engine();
    established6(&mut e, 41_001);
    assert_eq!(mem.len(), 1);
    mem.forward(7, 5, 100);
    let end = 101 + REQ.len() as u32;
    let _ = inb(
        &mut e,
        t(20),
        tcp6(SERVER6, EIP6, 80, 41_001, 518, end, K::Rst, &[]),
    );
    assert_eq!(mem.len(), 0);
    let recs = sink.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].end_reason, "rst");
    assert_eq!(recs[0].out_packet_count, 3 + 7);
    assert_eq!(recs[0].in_packet_count, 2 + 1 + 5);
}

/// IPv6 TCP and UDP flows are handed over in the text form ([`HandoverFlow::encode`]) and
/// adopted by the next engine, still offloaded; the UDP one then idles out with one record.
#[test]
fn ipv6_flows_are_handed_over_and_adopted() {
    let (mut a, sink_a, mem) = engine();
    established6(&mut a, 41_010);
    assert_eq!(
        out(&mut a, t(5), udp6(CLIENT6, SERVER6, 5002, 7000, b"hello")),
        Verdict::Forward
    );
    assert_eq!(
        inb(&mut a, t(6), udp6(SERVER6, EIP6, 7000, 5002, b"world")),
        Verdict::Forward
    );
    let _ = out(&mut a, t(7), udp6(CLIENT6, SERVER6, 5002, 7000, b"again"));
    assert_eq!(mem.len(), 2, "TCP and UDP offloaded");
    mem.forward(4, 4, 100);
    let flows = a.handover();
    assert_eq!(flows.len(), 2);
    a.shutdown(t(8));
    assert!(sink_a.take().is_empty(), "no record at the handover");
    assert_eq!(mem.len(), 2, "the kernel entries stay");

    let lines: Vec<String> = flows.iter().map(|f| f.encode()).collect();
    assert!(
        lines.iter().all(|l| l.contains("client=[fd00::5]:")),
        "{lines:?}"
    );
    assert!(
        lines.iter().all(|l| l.contains("eip=2001:db8::1 ")),
        "{lines:?}"
    );
    let decoded: Vec<natfw_engine::engine::HandoverFlow> = lines
        .iter()
        .map(|l| natfw_engine::engine::HandoverFlow::decode(l).expect("decodes"))
        .collect();
    assert_eq!(decoded, flows);

    let (mut b, sink_b, mem_b) = engine();
    drop(mem_b);
    b.set_offload(Box::new(mem.clone()));
    let st = b.adopt(t(100), decoded, AdoptPolicy::Same);
    assert_eq!((st.adopted, st.ended), (2, 0));
    assert_eq!(b.offloaded_flows(), 2);
    // The TCP flow ends at B with a FIN: taken back, one record.
    let end = 101 + REQ.len() as u32;
    let _ = out(
        &mut b,
        t(200),
        tcp6(CLIENT6, SERVER6, 41_010, 80, end, 519, K::Fin, &[]),
    );
    assert_eq!(mem.len(), 1, "FIN: the adopted TCP entry is taken back");
    let _ = inb(
        &mut b,
        t(201),
        tcp6(SERVER6, EIP6, 80, 41_010, 518, end + 1, K::Fin, &[]),
    );
    let _ = out(
        &mut b,
        t(202),
        tcp6(CLIENT6, SERVER6, 41_010, 80, end + 1, 519, K::Ack, &[]),
    );
    let recs = sink_b.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].end_reason, "fin");
    assert_eq!(recs[0].out_packet_count, 3 + 4 + 2);
    // The UDP flow idles out at B.
    let mut now = 300;
    for _ in 0..700 {
        now += 1000;
        b.poll(t(now));
    }
    assert_eq!(mem.len(), 0);
    let recs = sink_b.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].end_reason, "timeout");
    assert_eq!(recs[0].out_packet_count, 2 + 4);
    assert_eq!(recs[0].in_packet_count, 1 + 4);
}

/// The handover line format: IPv6 flows round-trip, a line written by the build that knew
/// only IPv4 still decodes, and addresses of mixed families are refused.
#[test]
fn handover_lines_of_both_families_and_the_old_ipv4_format_decode() {
    use natfw_engine::engine::HandoverFlow;
    // As the IPv4-only build wrote it.
    let old = "proto=6 client=10.0.0.5:40051 server=203.0.113.5:80 eip=192.0.2.1 eport=40051 \
               start=1000003000000 out=13,1600 in=22,2400 kout=10,1000 kin=20,2000 by=default \
               rule=- monitors=- domain=example.com dsrc=host dfact=k app=HTTP afact=k why=- \
               country=- dnsv=- ech=0 payload=1 fwoff=0 isn=100,500";
    let h = HandoverFlow::decode(old).expect("the IPv4-only format decodes");
    assert_eq!(h.flow.client, "10.0.0.5:40051".parse().unwrap());
    assert_eq!(h.flow.server, "203.0.113.5:80".parse().unwrap());
    assert_eq!(h.flow.eip, std::net::IpAddr::from(EIP));
    assert_eq!((h.flow.eport, h.flow.proto), (40_051, 6));
    assert_eq!((h.out.packets, h.kernel.inb.bytes), (13, 2000));
    assert_eq!(h.domain.as_deref(), Some("example.com"));
    // Encoded again it is the same line: the IPv4 form did not change.
    assert_eq!(
        h.encode(),
        old.split_whitespace().collect::<Vec<_>>().join(" ")
    );

    let v6 = old
        .replace("client=10.0.0.5:40051", "client=[fd00::5]:40051")
        .replace("server=203.0.113.5:80", "server=[2001:db8:ff::5]:80")
        .replace("eip=192.0.2.1", "eip=2001:db8::1");
    let h6 = HandoverFlow::decode(&v6).expect("IPv6 decodes");
    assert!(h6.flow.is_v6());
    assert_eq!(h6.flow.client, "[fd00::5]:40051".parse().unwrap());
    assert_eq!(h6.flow.eip, std::net::IpAddr::from(EIP6));
    assert_eq!(HandoverFlow::decode(&h6.encode()), Some(h6));

    for mixed in [
        old.replace("eip=192.0.2.1", "eip=2001:db8::1"),
        old.replace("client=10.0.0.5:40051", "client=[fd00::5]:40051"),
        v6.replace("server=[2001:db8:ff::5]:80", "server=203.0.113.5:80"),
    ] {
        assert!(HandoverFlow::decode(&mixed).is_none(), "{mixed}");
    }
}
