//! Engine-level SNAT and connection-tracking behaviour on crafted frames: translation both ways,
//! source-port keeping and collisions, ICMP echo ids and ICMP errors, bypass, eviction and
//! timeout records, firewall off, hot reload, conflicting retransmissions.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use etherparse::PacketBuilder;
use natfw_engine::engine::{
    CompiledPolicy, DropReason, Emit, Engine, EngineOptions, GeoDb, Side, Verdict,
};
use natfw_engine::time::Timestamp;
use natfw_engine::wire::{self, IcmpKind, L4};
use natfw_flowlog::SharedRecords;
use natfw_policy::{Action, Config, Destination, Mode, Protocol, Rule, RuleAction};

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
const EIP: [u8; 4] = [192, 0, 2, 1];
const SERVER: [u8; 4] = [203, 0, 113, 5];

/// The engine's records, rendered and readable while it runs.
type Sink = SharedRecords;

fn cfg() -> Config {
    let mut c = natfw_policy::config::embedded_default();
    c.gateway.bypass = vec!["10.9.0.0/16".parse().unwrap()];
    c
}

fn engine_with(c: &Config, opts: EngineOptions) -> (Engine, Sink) {
    let sink = SharedRecords::new("gw");
    let e = Engine::with_options(c, GeoDb::embedded(), Box::new(sink.clone()), opts).unwrap();
    (e, sink)
}

fn engine() -> (Engine, Sink) {
    engine_with(&cfg(), EngineOptions::default())
}

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(1_000_000 + ms)
}

#[derive(Clone, Copy)]
enum Tcp {
    Syn,
    SynAck,
    Ack,
    Psh,
    Fin,
    Rst,
}

fn tcp(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    seq: u32,
    kind: Tcp,
    data: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, seq, 64_000);
    let b = match kind {
        Tcp::Syn => b.syn(),
        Tcp::SynAck => b.syn().ack(1),
        Tcp::Ack => b.ack(1),
        Tcp::Psh => b.psh().ack(1),
        Tcp::Fin => b.fin().ack(1),
        Tcp::Rst => b.rst(),
    };
    let mut out = Vec::new();
    b.write(&mut out, data).unwrap();
    out
}

fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut out, data)
        .unwrap();
    out
}

fn ping(src: [u8; 4], dst: [u8; 4], id: u16, reply: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src, dst, 64);
    let b = if reply {
        b.icmpv4_echo_reply(id, 1)
    } else {
        b.icmpv4_echo_request(id, 1)
    };
    let mut out = Vec::new();
    b.write(&mut out, b"abcdefgh").unwrap();
    out
}

/// (src, sport/id, dst, dport/id) of a frame, checksums verified.
fn tuple(frame: &[u8]) -> (IpAddr, u16, IpAddr, u16) {
    let info = wire::parse(frame).unwrap();
    assert!(wire::verify_checksums(frame, &info), "invalid checksum");
    let (s, d) = info.ports().unwrap_or((0, 0));
    (info.src, s, info.dst, d)
}

fn ip(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

/// SYN out, SYN-ACK back: returns the translated source port.
fn open(e: &mut Engine, now: Timestamp, host: [u8; 4], sport: u16, dport: u16) -> u16 {
    let mut f = tcp(host, SERVER, sport, dport, 100, Tcp::Syn, &[]);
    assert_eq!(e.process(now, Side::Inside, &mut f), Verdict::Forward);
    let (s, sp, d, dp) = tuple(&f);
    assert_eq!((s, d, dp), (ip(EIP), ip(SERVER), dport));
    let mut back = tcp(SERVER, EIP, dport, sp, 500, Tcp::SynAck, &[]);
    assert_eq!(e.process(now, Side::Outside, &mut back), Verdict::Forward);
    assert_eq!(tuple(&back), (ip(SERVER), dport, ip(host), sport));
    sp
}

#[test]
fn tcp_translated_both_ways_and_port_kept() {
    let (mut e, sink) = engine();
    let p = open(&mut e, t(0), [10, 0, 0, 5], 40_000, 443);
    assert_eq!(p, 40_000, "free source port is kept");
    // Data both ways after the handshake.
    let mut f = tcp([10, 0, 0, 5], SERVER, 40_000, 443, 101, Tcp::Ack, &[]);
    assert_eq!(e.process(t(1), Side::Inside, &mut f), Verdict::Forward);
    let mut f = tcp(
        [10, 0, 0, 5],
        SERVER,
        40_000,
        443,
        101,
        Tcp::Psh,
        b"hello, not tls",
    );
    assert_eq!(e.process(t(2), Side::Inside, &mut f), Verdict::Forward);
    assert_eq!(tuple(&f), (ip(EIP), 40_000, ip(SERVER), 443));
    // Close: FIN, FIN, ACK.
    let mut f = tcp([10, 0, 0, 5], SERVER, 40_000, 443, 115, Tcp::Fin, &[]);
    assert_eq!(e.process(t(3), Side::Inside, &mut f), Verdict::Forward);
    let mut f = tcp(SERVER, EIP, 443, 40_000, 501, Tcp::Fin, &[]);
    assert_eq!(e.process(t(4), Side::Outside, &mut f), Verdict::Forward);
    assert!(sink.take().is_empty());
    let mut f = tcp([10, 0, 0, 5], SERVER, 40_000, 443, 116, Tcp::Ack, &[]);
    assert_eq!(e.process(t(5), Side::Inside, &mut f), Verdict::Forward);
    let recs = sink.take();
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r.end_reason, "fin");
    assert_eq!(
        (r.snat_ip.as_deref(), r.snat_port),
        (Some("192.0.2.1"), Some(40_000))
    );
    assert_eq!(r.out_packet_count, 5);
    assert_eq!(r.in_packet_count, 2);
    assert_eq!(r.app_name.as_deref(), Some("Unknown"));
    // Stragglers after the close still pass; the record is not repeated.
    let mut f = tcp(SERVER, EIP, 443, 40_000, 502, Tcp::Ack, &[]);
    assert_eq!(e.process(t(6), Side::Outside, &mut f), Verdict::Forward);
    e.poll(t(6 + 11_000));
    assert_eq!(e.flow_count(), 0);
    e.shutdown(t(20_000));
    assert!(sink.take().is_empty(), "exactly one record per flow");
}

#[test]
fn colliding_source_ports_get_distinct_ports_and_replies_route_back() {
    let (mut e, _sink) = engine();
    let mut ports = Vec::new();
    for h in 1..=50u8 {
        ports.push(open(&mut e, t(0), [10, 0, 1, h], 33_333, 443));
    }
    let mut uniq = ports.clone();
    uniq.sort_unstable();
    uniq.dedup();
    assert_eq!(uniq.len(), 50, "no two flows share a reply tuple");
    assert_eq!(ports[0], 33_333);
    // A reply to each translated port reaches its own host.
    for (h, p) in (1..=50u8).zip(&ports) {
        let mut ack = tcp([10, 0, 1, h], SERVER, 33_333, 443, 101, Tcp::Ack, &[]);
        assert_eq!(e.process(t(1), Side::Inside, &mut ack), Verdict::Forward);
        let mut f = tcp(SERVER, EIP, 443, *p, 501, Tcp::Ack, &[]);
        assert_eq!(e.process(t(1), Side::Outside, &mut f), Verdict::Forward);
        assert_eq!(tuple(&f), (ip(SERVER), 443, ip([10, 0, 1, h]), 33_333));
    }
    // Unknown return traffic is dropped.
    let mut f = tcp(SERVER, EIP, 443, 9, 1, Tcp::Ack, &[]);
    assert_eq!(
        e.process(t(1), Side::Outside, &mut f),
        Verdict::Drop(DropReason::NoFlow)
    );
}

#[test]
fn icmp_echo_ids_translated() {
    let (mut e, sink) = engine();
    let mut a = ping([10, 0, 0, 1], SERVER, 77, false);
    let mut b = ping([10, 0, 0, 2], SERVER, 77, false);
    assert_eq!(e.process(t(0), Side::Inside, &mut a), Verdict::Forward);
    assert_eq!(e.process(t(0), Side::Inside, &mut b), Verdict::Forward);
    let (_, ida, _, _) = tuple(&a);
    let (_, idb, _, _) = tuple(&b);
    assert_eq!(ida, 77);
    assert_ne!(idb, 77);
    for (id, host) in [(ida, [10, 0, 0, 1]), (idb, [10, 0, 0, 2])] {
        let mut r = ping(SERVER, EIP, id, true);
        assert_eq!(e.process(t(1), Side::Outside, &mut r), Verdict::Forward);
        assert_eq!(tuple(&r), (ip(SERVER), 77, ip(host), 77));
    }
    e.poll(t(11_001));
    let recs = sink.take();
    assert_eq!(recs.len(), 2);
    assert!(recs.iter().all(|r| r.end_reason == "timeout"
        && r.app_name.as_deref() == Some("ICMP")
        && r.src_port.is_none()));
}

#[test]
fn icmp_error_from_outside_reaches_the_inside_host() {
    let (mut e, _sink) = engine();
    // Two hosts with the same source port: the second is translated.
    let mut a = udp([10, 0, 0, 1], SERVER, 5353, 9999, b"x");
    let mut b = udp([10, 0, 0, 2], SERVER, 5353, 9999, b"y");
    assert_eq!(e.process(t(0), Side::Inside, &mut a), Verdict::Forward);
    assert_eq!(e.process(t(0), Side::Inside, &mut b), Verdict::Forward);
    let (_, pb, _, _) = tuple(&b);
    assert_ne!(pb, 5353);
    // Port unreachable quoting b as it left (IP header + 8 bytes of UDP).
    let quoted = &b[14..14 + 28];
    let mut err = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(SERVER, EIP, 64)
        .icmpv4_raw(3, 3, [0; 4])
        .write(&mut err, quoted)
        .unwrap();
    assert_eq!(e.process(t(1), Side::Outside, &mut err), Verdict::Forward);
    let info = wire::parse(&err).unwrap();
    assert!(wire::verify_checksums(&err, &info));
    assert_eq!(info.dst, ip([10, 0, 0, 2]));
    let L4::Icmp {
        kind: IcmpKind::Error { inner, .. },
        ..
    } = info.l4
    else {
        panic!("not an icmp error")
    };
    assert_eq!((inner.src, inner.sport), (ip([10, 0, 0, 2]), 5353));
    assert_eq!((inner.dst, inner.dport), (ip(SERVER), 9999));
    // An error about a flow we do not have is dropped.
    let mut stray = Vec::new();
    let mut q = quoted.to_vec();
    q[20] = 0x01; // another source port
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(SERVER, EIP, 64)
        .icmpv4_raw(3, 4, [0, 0, 5, 0xdc])
        .write(&mut stray, &q)
        .unwrap();
    assert_eq!(
        e.process(t(1), Side::Outside, &mut stray),
        Verdict::Drop(DropReason::NoFlow)
    );
}

#[test]
fn bypass_and_foreign_sources_go_to_the_kernel() {
    let (mut e, sink) = engine();
    let mut f = tcp([10, 9, 0, 1], SERVER, 1000, 443, 1, Tcp::Syn, &[]);
    let before = f.clone();
    assert_eq!(e.process(t(0), Side::Inside, &mut f), Verdict::ToKernel);
    assert_eq!(f, before, "untouched");
    let mut g = tcp([8, 8, 8, 8], SERVER, 1000, 443, 1, Tcp::Syn, &[]);
    assert_eq!(e.process(t(0), Side::Inside, &mut g), Verdict::ToKernel);
    // Outside traffic not to an EIP, and a ping of the EIP itself.
    let mut h = tcp(SERVER, [198, 51, 100, 1], 443, 1000, 1, Tcp::Ack, &[]);
    assert_eq!(e.process(t(0), Side::Outside, &mut h), Verdict::ToKernel);
    let mut p = ping(SERVER, EIP, 1, false);
    assert_eq!(e.process(t(0), Side::Outside, &mut p), Verdict::ToKernel);
    assert_eq!(e.stats().bypassed.packets, 1);
    assert_eq!(e.stats().to_kernel.packets, 4);
    e.shutdown(t(1));
    assert!(sink.take().is_empty());
    // Garbage is dropped, never a panic.
    let mut junk = vec![0u8; 40];
    junk[12] = 0x08;
    assert_eq!(
        e.process(t(2), Side::Inside, &mut junk),
        Verdict::Drop(DropReason::Malformed)
    );
}

#[test]
fn mid_stream_tcp_without_syn_is_refused_and_the_client_reset() {
    let (mut e, sink) = engine();
    // E.g. a connection of a natfw process that crashed: no state here, so no pickup, and a
    // RST back to the client instead of leaving it to hang.
    let mut f = tcp([10, 0, 0, 5], SERVER, 1234, 443, 1, Tcp::Ack, b"data");
    assert_eq!(
        e.process(t(0), Side::Inside, &mut f),
        Verdict::Drop(DropReason::InvalidState)
    );
    assert_eq!(e.flow_count(), 0);
    let mut out: Vec<Emit> = Vec::new();
    e.drain_emits(&mut out);
    assert_eq!(out.len(), 1, "one RST expected");
    assert_eq!(out[0].side, Side::Inside);
    assert_eq!(
        tuple(&out[0].frame),
        (ip(SERVER), 443, ip([10, 0, 0, 5]), 1234)
    );
    let info = wire::parse(&out[0].frame).unwrap();
    let L4::Tcp { flags, seq, .. } = info.l4 else {
        panic!("not TCP");
    };
    assert!(flags.rst(), "not a RST");
    assert_eq!(seq, 1, "RST sequence must be the segment's ACK number");
    assert_eq!(e.stats().resets_no_flow, 1);
    // A RST of no flow is never answered.
    let mut r = tcp([10, 0, 0, 5], SERVER, 1234, 443, 1, Tcp::Rst, &[]);
    assert_eq!(
        e.process(t(0), Side::Inside, &mut r),
        Verdict::Drop(DropReason::InvalidState)
    );
    e.drain_emits(&mut out);
    assert_eq!(out.len(), 1, "a RST was answered");
    assert_eq!(e.stats().resets_no_flow, 1);
    e.shutdown(t(1));
    assert!(sink.take().is_empty());
}

#[test]
fn full_table_evicts_embryonic_first_with_records() {
    let opts = EngineOptions {
        max_flows: 8,
        ..EngineOptions::default()
    };
    let (mut e, sink) = engine_with(&cfg(), opts);
    // One established flow, then SYNs that never get answers.
    open(&mut e, t(0), [10, 0, 0, 1], 2000, 443);
    let mut ack = tcp([10, 0, 0, 1], SERVER, 2000, 443, 101, Tcp::Ack, &[]);
    assert_eq!(e.process(t(0), Side::Inside, &mut ack), Verdict::Forward);
    for i in 0..20u16 {
        let mut f = tcp([10, 0, 2, 1], SERVER, 3000 + i, 443, 1, Tcp::Syn, &[]);
        assert_eq!(
            e.process(t(u64::from(i) + 1), Side::Inside, &mut f),
            Verdict::Forward
        );
        assert!(e.flow_count() <= 8);
    }
    let recs = sink.take();
    assert_eq!(recs.len(), 13);
    assert!(recs.iter().all(|r| r.end_reason == "evicted"));
    // Oldest first: the first SYNs went.
    assert_eq!(recs[0].src_port, Some(3000));
    assert!(
        recs.iter().all(|r| r.src_port != Some(2000)),
        "established flow kept"
    );
    assert_eq!(e.stats().evictions, 13);
    // The rest time out (embryonic 30 s); the established flow is ended at shutdown.
    e.poll(t(40_000));
    let recs = sink.take();
    assert_eq!(recs.len(), 7);
    assert!(recs
        .iter()
        .all(|r| r.end_reason == "timeout" && r.app_dpi_state == "tcp_not_establish"));
    e.shutdown(t(40_001));
    let recs = sink.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].end_reason, "shutdown");
    assert_eq!(recs[0].app_dpi_state, "no_payload");
}

#[test]
fn udp_and_dns_timeouts() {
    let (mut e, sink) = engine();
    let mut f = udp(
        [10, 0, 0, 1],
        SERVER,
        4000,
        4001,
        b"not a known protocol at all",
    );
    assert_eq!(e.process(t(0), Side::Inside, &mut f), Verdict::Forward);
    e.poll(t(59_999));
    assert!(sink.take().is_empty());
    e.poll(t(60_000));
    let recs = sink.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].end_reason, "timeout");
    assert_eq!(recs[0].ip_protocol, "udp");
}

#[test]
fn firewall_disabled_accepts_everything() {
    let mut c = cfg();
    c.firewall.enabled = false;
    c.firewall.default_action = Action::Drop;
    let (mut e, sink) = engine_with(&c, EngineOptions::default());
    open(&mut e, t(0), [10, 0, 0, 1], 2000, 443);
    e.shutdown(t(1));
    let recs = sink.take();
    assert_eq!(recs[0].action, "accept");
    assert!(
        recs[0].reason.contains("firewall disabled"),
        "{}",
        recs[0].reason
    );
}

pub(super) fn drop_port_rule(port: u16) -> Rule {
    Rule {
        name: "no-telnet".into(),
        description: String::new(),
        source: None,
        destination: Destination::Any,
        domain_mode: Default::default(),
        protocol: Protocol::Tcp,
        ports: Some(vec![port..=port]),
        applications: None,
        action: RuleAction::Drop,
        enabled: true,
        pos: Default::default(),
    }
}

#[test]
fn l4_drop_refuses_the_syn_with_an_rst_and_no_snat() {
    let mut c = cfg();
    c.firewall.rules = vec![drop_port_rule(23)];
    let (mut e, sink) = engine_with(&c, EngineOptions::default());
    let mut f = tcp([10, 0, 0, 1], SERVER, 2000, 23, 1, Tcp::Syn, &[]);
    assert_eq!(
        e.process(t(0), Side::Inside, &mut f),
        Verdict::Drop(DropReason::Policy)
    );
    let mut out: Vec<Emit> = Vec::new();
    e.drain_emits(&mut out);
    assert_eq!(
        out.len(),
        1,
        "RST to the client only: the server never saw it"
    );
    assert_eq!(out[0].side, Side::Inside);
    assert_eq!(
        tuple(&out[0].frame),
        (ip(SERVER), 23, ip([10, 0, 0, 1]), 2000)
    );
    // Retransmitted SYN: dropped, no second record.
    let mut f = tcp([10, 0, 0, 1], SERVER, 2000, 23, 1, Tcp::Syn, &[]);
    assert_eq!(
        e.process(t(1000), Side::Inside, &mut f),
        Verdict::Drop(DropReason::Policy)
    );
    e.shutdown(t(2000));
    let recs = sink.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].action, "drop");
    assert_eq!(recs[0].end_reason, "denied");
    assert_eq!(recs[0].acl_rule_id.as_deref(), Some("no-telnet"));
}

/// Per-rule counters: the hit is credited when the rule decides the flow (its first packet
/// here, an L4 rule), not when the flow ends; the flow's bytes are added when it ends.
#[test]
fn rule_hit_is_credited_at_the_decision_and_bytes_at_the_end() {
    let mut c = cfg();
    let mut rule = drop_port_rule(8080);
    rule.name = "web-alt".into();
    rule.action = RuleAction::Accept;
    c.firewall.rules = vec![rule];
    let (mut e, sink) = engine_with(&c, EngineOptions::default());
    let policy = e.policy_handle().load_full();
    let counter = |p: &CompiledPolicy| p.counters().get(Some(natfw_policy::RuleId(0))).get();
    assert_eq!(counter(&policy).hits, 0);
    let p = open(&mut e, t(0), [10, 0, 0, 1], 2000, 8080);
    // Decided, still open: the hit is counted, no record yet, no bytes yet.
    let now = counter(&policy);
    assert_eq!(now.hits, 1);
    assert_eq!(now.bytes, 0);
    assert_eq!(now.last_hit_ns, Some(t(0).as_nanos()));
    assert!(sink.take().is_empty());
    let mut f = tcp(
        [10, 0, 0, 1],
        SERVER,
        2000,
        8080,
        101,
        Tcp::Psh,
        b"GET / HTTP/1.0\r\n\r\n",
    );
    assert_eq!(e.process(t(1), Side::Inside, &mut f), Verdict::Forward);
    assert_eq!(counter(&policy).hits, 1, "one hit per flow, not per packet");
    let mut f = tcp(SERVER, EIP, 8080, p, 501, Tcp::Rst, &[]);
    assert_eq!(e.process(t(2), Side::Outside, &mut f), Verdict::Forward);
    let recs = sink.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].acl_rule_id.as_deref(), Some("web-alt"));
    let end = counter(&policy);
    assert_eq!(end.hits, 1);
    assert_eq!(
        end.bytes,
        recs[0].out_packet_bytes + recs[0].in_packet_bytes,
        "the ended flow's bytes are credited to its rule"
    );
    assert!(end.bytes > 0);
    // The default action has its own counter, untouched here.
    assert_eq!(policy.counters().get(None).get().hits, 0);
}

#[test]
fn hot_reload_applies_to_new_flows() {
    let (mut e, sink) = engine();
    open(&mut e, t(0), [10, 0, 0, 1], 2000, 23);
    let mut fw = cfg().firewall;
    fw.rules = vec![drop_port_rule(23)];
    e.policy_handle().store(Arc::new(CompiledPolicy::new(&fw)));
    // The established flow keeps its verdict...
    let mut f = tcp([10, 0, 0, 1], SERVER, 2000, 23, 101, Tcp::Ack, &[]);
    assert_eq!(e.process(t(1), Side::Inside, &mut f), Verdict::Forward);
    // ...a new one is refused.
    let mut g = tcp([10, 0, 0, 1], SERVER, 2001, 23, 1, Tcp::Syn, &[]);
    assert_eq!(
        e.process(t(2), Side::Inside, &mut g),
        Verdict::Drop(DropReason::Policy)
    );
    e.shutdown(t(3));
    assert_eq!(sink.take().len(), 2);
}

#[test]
fn conflicting_retransmission_is_evasion_reset_in_every_mode() {
    for mode in [Mode::Loose, Mode::Strict] {
        let mut c = cfg();
        c.firewall.mode = mode;
        let (mut e, sink) = engine_with(&c, EngineOptions::default());
        open(&mut e, t(0), [10, 0, 0, 1], 2000, 80);
        // A partial request (verdict already accept, identification still running)...
        let mut f = tcp([10, 0, 0, 1], SERVER, 2000, 80, 101, Tcp::Psh, b"GET / HT");
        assert_eq!(e.process(t(1), Side::Inside, &mut f), Verdict::Forward);
        // ...then the same bytes again, different.
        let mut g = tcp([10, 0, 0, 1], SERVER, 2000, 80, 101, Tcp::Psh, b"GET /xHT");
        let v = e.process(t(2), Side::Inside, &mut g);
        assert_eq!(v, Verdict::Drop(DropReason::Evasion), "{mode:?}");
        e.shutdown(t(3));
        let recs = sink.take();
        assert_eq!(recs.len(), 1);
        assert!(recs[0].reason.contains("evasion"), "{}", recs[0].reason);
        assert_eq!(recs[0].action, "drop");
        assert_eq!(recs[0].app_dpi_state, "unknown_strict");
        let mut out = Vec::new();
        e.drain_emits(&mut out);
        assert_eq!(out.len(), 2, "RSTs both ways");
    }
}

#[test]
fn pending_timeout_fires_once_per_flow() {
    // A domain rule keeps TCP pending until the first payload; with no payload the flow
    // stays pending without a deadline and its handshake passes.
    let mut c = cfg();
    c.firewall.rules = vec![Rule {
        destination: Destination::Domains(vec![natfw_policy::DomainPattern::Exact(
            "x.test".into(),
        )]),
        protocol: Protocol::Any,
        ports: None,
        ..drop_port_rule(0)
    }];
    let (mut e, sink) = engine_with(&c, EngineOptions::default());
    open(&mut e, t(0), [10, 0, 0, 1], 2000, 443);
    e.poll(t(10_000));
    assert!(sink.take().is_empty());
    let mut f = tcp(
        [10, 0, 0, 1],
        SERVER,
        2000,
        443,
        101,
        Tcp::Psh,
        &[0x16, 3, 1, 0, 200, 1],
    );
    assert_eq!(e.process(t(10_001), Side::Inside, &mut f), Verdict::Held);
    e.poll(t(15_002));
    let mut out = Vec::new();
    e.drain_emits(&mut out);
    assert_eq!(
        out.len(),
        1,
        "loose: unknown domain, default accept: the held segment goes"
    );
    assert_eq!(out[0].side, Side::Outside);
    assert_eq!(tuple(&out[0].frame).0, ip(EIP));
    e.poll(t(30_000));
    e.shutdown(t(30_001));
    let recs = sink.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].action, "accept");
    assert!(recs[0].reason.contains("timed out"), "{}", recs[0].reason);
}

#[test]
fn rst_ends_the_flow_at_once() {
    let (mut e, sink) = engine();
    let p = open(&mut e, t(0), [10, 0, 0, 1], 2000, 443);
    let mut f = tcp(SERVER, EIP, 443, p, 501, Tcp::Rst, &[]);
    assert_eq!(e.process(t(1), Side::Outside, &mut f), Verdict::Forward);
    assert_eq!(tuple(&f).2, ip([10, 0, 0, 1]));
    assert_eq!(e.flow_count(), 0);
    let recs = sink.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].end_reason, "rst");
    // The port is free again.
    assert_eq!(open(&mut e, t(2), [10, 0, 0, 2], 2000, 443), 2000);
}

fn dns_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

pub(super) fn dns_query(name: &str) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    m.extend(dns_name(name));
    m.extend_from_slice(&[0, 1, 0, 1]);
    m
}

pub(super) fn dns_answer(name: &str, addr: [u8; 4]) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
    m.extend(dns_name(name));
    m.extend_from_slice(&[0, 1, 0, 1]);
    m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 1, 0x2c, 0, 4]);
    m.extend_from_slice(&addr);
    m
}

/// DNS answers crossing the gateway: the query flow carries its name, a later flow of the
/// same client to the answer's address carries it too (`dns`), and `dns`-mode rules match it.
#[test]
fn dns_answers_name_later_flows_and_feed_dns_rules() {
    let resolver = [198, 51, 100, 53];
    let mut c = cfg();
    c.firewall.rules = vec![Rule {
        destination: Destination::Domains(vec![natfw_policy::DomainPattern::Exact(
            "shop.example.test".into(),
        )]),
        domain_mode: natfw_policy::DomainMode::Dns,
        protocol: Protocol::Any,
        ports: None,
        name: "no-shop".into(),
        ..drop_port_rule(0)
    }];
    let (mut e, sink) = engine_with(&c, EngineOptions::default());
    let mut q = udp(
        [10, 0, 0, 7],
        resolver,
        5000,
        53,
        &dns_query("shop.example.test"),
    );
    assert_eq!(e.process(t(0), Side::Inside, &mut q), Verdict::Forward);
    let (_, qport, _, _) = tuple(&q);
    let mut a = udp(
        resolver,
        EIP,
        53,
        qport,
        &dns_answer("shop.example.test", SERVER),
    );
    assert_eq!(e.process(t(1), Side::Outside, &mut a), Verdict::Forward);
    assert_eq!(e.stats().dns_answers_learned, 1);
    // Another client's flow to that address: an answer crossing the gateway is a fact for the
    // client that asked only, so the dns-mode rule does not apply (no name in its log either).
    let mut f = tcp([10, 0, 0, 8], SERVER, 6000, 443, 1, Tcp::Syn, &[]);
    assert_eq!(e.process(t(2), Side::Inside, &mut f), Verdict::Forward);
    // The asking client's flow: same verdict, named from its own answer.
    let mut g = tcp([10, 0, 0, 7], SERVER, 6001, 443, 1, Tcp::Syn, &[]);
    assert_eq!(
        e.process(t(3), Side::Inside, &mut g),
        Verdict::Drop(DropReason::Policy)
    );
    e.shutdown(t(4));
    let recs = sink.take();
    let by_src = |ip: &str, proto: &str| {
        recs.iter()
            .find(|r| r.src_ip == ip && r.ip_protocol == proto)
            .unwrap_or_else(|| panic!("{ip} {proto}: {recs:?}"))
            .clone()
    };
    let q = by_src("10.0.0.7", "udp");
    assert_eq!(q.domain.as_deref(), Some("shop.example.test"));
    assert_eq!(q.domain_source.as_deref(), Some("dns"));
    assert_eq!(q.app_name.as_deref(), Some("DNS"));
    let other = by_src("10.0.0.8", "tcp");
    assert_eq!(other.domain, None);
    assert_eq!(other.acl_rule_id, None);
    assert_eq!(other.dns_verified, None);
    let same = by_src("10.0.0.7", "tcp");
    assert_eq!(same.domain.as_deref(), Some("shop.example.test"));
    assert_eq!(same.domain_source.as_deref(), Some("dns"));
    assert_eq!(same.action, "drop");
    assert_eq!(same.dns_verified.as_deref(), Some("client_answer"));
    assert!(same.reason.contains("client_answer"), "{}", same.reason);
}

#[test]
fn icmp_error_from_inside_is_translated_out() {
    let (mut e, _sink) = engine();
    let mut a = udp([10, 0, 0, 1], SERVER, 5353, 9999, b"x");
    assert_eq!(e.process(t(0), Side::Inside, &mut a), Verdict::Forward);
    let mut b = udp([10, 0, 0, 2], SERVER, 5353, 9999, b"y");
    assert_eq!(e.process(t(0), Side::Inside, &mut b), Verdict::Forward);
    let (_, pb, _, _) = tuple(&b);
    // The server's reply to host 2, as host 2 received it, quoted in host 2's port unreachable.
    let mut reply = udp(SERVER, EIP, 9999, pb, b"reply");
    assert_eq!(e.process(t(1), Side::Outside, &mut reply), Verdict::Forward);
    let quoted = reply[14..14 + 28].to_vec();
    let mut err = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4([10, 0, 0, 2], SERVER, 64)
        .icmpv4_raw(3, 3, [0; 4])
        .write(&mut err, &quoted)
        .unwrap();
    assert_eq!(e.process(t(2), Side::Inside, &mut err), Verdict::Forward);
    let info = wire::parse(&err).unwrap();
    assert!(wire::verify_checksums(&err, &info));
    assert_eq!((info.src, info.dst), (ip(EIP), ip(SERVER)));
    let L4::Icmp {
        kind: IcmpKind::Error { inner, .. },
        ..
    } = info.l4
    else {
        panic!("not an icmp error")
    };
    assert_eq!((inner.dst, inner.dport), (ip(EIP), pb));
    assert_eq!((inner.src, inner.sport), (ip(SERVER), 9999));
}
