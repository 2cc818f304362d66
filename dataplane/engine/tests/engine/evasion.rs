//! Ways past the policy on crafted frames: a new connection on the tuple of a closed flow, a
//! TTL-limited decoy ClientHello, conflicting bytes after release, a ClientHello cut finely
//! (more segments than a client window), padding past the limits and
//! `firewall.on_unidentifiable`.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use etherparse::PacketBuilder;
use natfw_engine::engine::{DropReason, Emit, Engine, EngineOptions, GeoDb, Side, Verdict};
use natfw_engine::time::Timestamp;
use natfw_engine::wire::{self, L4};
use natfw_flowlog::{FlowEnd, FlowRecord, FlowSink};
use natfw_policy::{
    Action, Config, Destination, DomainPattern, Mode, OnUnidentifiable, Protocol, Rule, RuleAction,
};

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
const EIP: [u8; 4] = [192, 0, 2, 1];
const SERVER: [u8; 4] = [203, 0, 113, 5];
const HOST: [u8; 4] = [10, 0, 0, 1];
const SPORT: u16 = 40_000;

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<FlowRecord>>>);

impl FlowSink for Sink {
    fn flow_end(&mut self, ev: FlowEnd) {
        self.0
            .lock()
            .unwrap()
            .push(natfw_flowlog::render(&ev, "gw"));
    }
}

impl Sink {
    fn take(&self) -> Vec<FlowRecord> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn domain_rule(name: &str, domain: &str, action: RuleAction) -> Rule {
    Rule {
        name: name.into(),
        description: String::new(),
        source: None,
        destination: Destination::Domains(vec![DomainPattern::Exact(domain.into())]),
        domain_mode: Default::default(),
        protocol: Protocol::Tcp,
        ports: None,
        applications: None,
        action,
        enabled: true,
        pos: Default::default(),
    }
}

/// Loose mode, default accept, `denied.example` dropped by name.
fn cfg_deny() -> Config {
    let mut c = natfw_policy::config::embedded_default();
    c.firewall.rules = vec![domain_rule("no-denied", "denied.example", RuleAction::Drop)];
    c
}

/// Default drop, `allowed.example` accepted by name.
fn cfg_allow_only(mode: Mode, on: OnUnidentifiable) -> Config {
    let mut c = natfw_policy::config::embedded_default();
    c.firewall.mode = mode;
    c.firewall.on_unidentifiable = on;
    c.firewall.default_action = Action::Drop;
    c.firewall.rules = vec![domain_rule(
        "allowed",
        "allowed.example",
        RuleAction::Accept,
    )];
    c
}

fn engine_with(c: &Config) -> (Engine, Sink) {
    let sink = Sink::default();
    let e = Engine::with_options(
        c,
        GeoDb::embedded(),
        Box::new(sink.clone()),
        EngineOptions::default(),
    )
    .unwrap();
    (e, sink)
}

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(1_000_000 + ms)
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
const FIN: u8 = 0x01;

#[allow(clippy::too_many_arguments)]
fn seg(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    ttl: u8,
    data: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, ttl)
        .tcp(sport, dport, seq, 64_000);
    if flags & SYN != 0 {
        b = b.syn();
    }
    if flags & FIN != 0 {
        b = b.fin();
    }
    if flags & PSH != 0 {
        b = b.psh();
    }
    if flags & ACK != 0 {
        b = b.ack(ack);
    }
    let mut out = Vec::new();
    b.write(&mut out, data).unwrap();
    out
}

fn process_out(e: &mut Engine, now: Timestamp, mut f: Vec<u8>) -> Verdict {
    e.process(now, Side::Inside, &mut f)
}

/// A server segment as it arrives at the EIP.
fn sseg(eport: u16, dport: u16, seq: u32, ack: u32, flags: u8, data: &[u8]) -> Vec<u8> {
    seg(SERVER, EIP, dport, eport, seq, ack, flags, 64, data)
}

fn emits(e: &mut Engine) -> Vec<Emit> {
    let mut out = Vec::new();
    e.drain_emits(&mut out);
    out
}

struct Conn {
    isn_c: u32,
    isn_s: u32,
    eport: u16,
    dport: u16,
}

/// SYN, SYN-ACK, ACK on (HOST, SPORT) → SERVER:`dport`; returns the translated port.
fn handshake(e: &mut Engine, now: Timestamp, isn_c: u32, dport: u16) -> Conn {
    let mut f = seg(HOST, SERVER, SPORT, dport, isn_c, 0, SYN, 64, &[]);
    assert_eq!(e.process(now, Side::Inside, &mut f), Verdict::Forward);
    let eport = wire::parse(&f).unwrap().ports().unwrap().0;
    let isn_s = isn_c.wrapping_mul(7).wrapping_add(12345);
    let mut f = sseg(eport, dport, isn_s, isn_c + 1, SYN | ACK, &[]);
    assert_eq!(e.process(now, Side::Outside, &mut f), Verdict::Forward);
    let mut f = seg(
        HOST,
        SERVER,
        SPORT,
        dport,
        isn_c + 1,
        isn_s + 1,
        ACK,
        64,
        &[],
    );
    assert_eq!(e.process(now, Side::Inside, &mut f), Verdict::Forward);
    Conn {
        isn_c,
        isn_s,
        eport,
        dport,
    }
}

impl Conn {
    fn client(&self, off: u32, flags: u8, ttl: u8, data: &[u8]) -> Vec<u8> {
        seg(
            HOST,
            SERVER,
            SPORT,
            self.dport,
            self.isn_c + 1 + off,
            self.isn_s + 1,
            flags,
            ttl,
            data,
        )
    }

    /// The server acknowledges `off` client stream bytes.
    fn server_ack(&self, off: u32) -> Vec<u8> {
        sseg(
            self.eport,
            self.dport,
            self.isn_s + 1,
            self.isn_c + 1 + off,
            ACK,
            &[],
        )
    }

    /// Orderly close after `sent` client bytes: client FIN, server FIN, client ACK.
    fn close(&self, e: &mut Engine, now: Timestamp, sent: u32) {
        let f = self.client(sent, FIN | ACK, 64, &[]);
        assert_eq!(process_out(e, now, f), Verdict::Forward);
        let mut f = sseg(
            self.eport,
            self.dport,
            self.isn_s + 1,
            self.isn_c + 2 + sent,
            FIN | ACK,
            &[],
        );
        assert_eq!(e.process(now, Side::Outside, &mut f), Verdict::Forward);
        let f = seg(
            HOST,
            SERVER,
            SPORT,
            self.dport,
            self.isn_c + 2 + sent,
            self.isn_s + 2,
            ACK,
            64,
            &[],
        );
        assert_eq!(process_out(e, now, f), Verdict::Forward);
    }
}

fn tls_record(body: &[u8]) -> Vec<u8> {
    let mut rec = vec![22, 3, 1];
    rec.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
    rec.push(1);
    rec.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    rec.extend_from_slice(body);
    rec
}

/// A ClientHello for `host` with `pad` zero bytes of padding extension *before* server_name
/// (and ALPN after it). Returns the record and the stream offset of the server_name extension.
fn client_hello(host: &str, pad: usize) -> (Vec<u8>, usize) {
    let mut exts = Vec::new();
    if pad > 0 {
        exts.extend_from_slice(&[0, 21]);
        exts.extend_from_slice(&(pad as u16).to_be_bytes());
        exts.extend(std::iter::repeat_n(0u8, pad));
    }
    let sni_at_ext = exts.len();
    let h = host.as_bytes();
    exts.extend_from_slice(&[0, 0]);
    exts.extend_from_slice(&((h.len() + 5) as u16).to_be_bytes());
    exts.extend_from_slice(&((h.len() + 3) as u16).to_be_bytes());
    exts.push(0);
    exts.extend_from_slice(&(h.len() as u16).to_be_bytes());
    exts.extend_from_slice(h);
    exts.extend_from_slice(&[0, 16, 0, 5, 0, 3, 2, b'h', b'2']);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    let sni_at = 9 + body.len() + sni_at_ext;
    body.extend_from_slice(&exts);
    (tls_record(&body), sni_at)
}

fn http_get(host: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: t\r\n\r\n").into_bytes()
}

/// (seq, flags, payload) of a TCP frame.
fn tcp_of(frame: &[u8]) -> (u32, u8, Vec<u8>, IpAddr) {
    let info = wire::parse(frame).unwrap();
    assert!(wire::verify_checksums(frame, &info), "bad checksum");
    let L4::Tcp { seq, flags, .. } = info.l4 else {
        panic!("not TCP")
    };
    let p = frame[info.payload_offset..info.payload_offset + info.payload_len].to_vec();
    (seq, flags.0, p, info.dst)
}

fn rsts(out: &[Emit]) -> Vec<(Side, u32)> {
    out.iter()
        .filter_map(|m| {
            let (seq, flags, _, _) = tcp_of(&m.frame);
            (flags & 0x04 != 0).then_some((m.side, seq))
        })
        .collect()
}

// ------------------------------------------------------------------------------ tuple reuse

#[test]
fn tuple_reuse_after_close_is_a_new_inspected_flow_http_and_https() {
    let (mut e, sink) = engine_with(&cfg_deny());
    // 1. An allowed HTTP request, closed in order.
    let c1 = handshake(&mut e, t(0), 1000, 80);
    let req = http_get("ok.example");
    assert_eq!(
        process_out(&mut e, t(1), c1.client(0, PSH | ACK, 64, &req)),
        Verdict::Forward
    );
    c1.close(&mut e, t(2), req.len() as u32);
    assert_eq!(sink.take().len(), 1, "the first flow's record at close");
    // A straggler of the old connection (the FIN again) still passes; new data past its FIN
    // does not.
    let fin_again = c1.client(req.len() as u32, FIN | ACK, 64, &[]);
    assert_eq!(process_out(&mut e, t(3), fin_again), Verdict::Forward);
    let past_fin = c1.client(req.len() as u32 + 1, PSH | ACK, 64, b"GET /more");
    assert_eq!(
        process_out(&mut e, t(3), past_fin),
        Verdict::Drop(DropReason::InvalidState)
    );
    assert!(e.stats().closed_flow_strays >= 1);

    // 2. Same source port, new ISN, HTTP to the denied name: a new flow, denied.
    let c2 = handshake(&mut e, t(100), 900_000, 80);
    assert_eq!(e.stats().tuple_reuses, 1);
    let req = http_get("denied.example");
    assert_eq!(
        process_out(&mut e, t(101), c2.client(0, PSH | ACK, 64, &req)),
        Verdict::Drop(DropReason::Policy)
    );
    let out = emits(&mut e);
    assert_eq!(rsts(&out).len(), 2, "RST both ways");
    let recs = sink.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].action, "drop");
    assert_eq!(recs[0].domain.as_deref(), Some("denied.example"));
    assert_eq!(recs[0].acl_rule_id.as_deref(), Some("no-denied"));

    // 3. The same tuple again (after the denial), now HTTPS on port 80's neighbour: use the
    // same port 80 tuple with a TLS ClientHello to the denied name.
    let c3 = handshake(&mut e, t(200), 3_000_000, 80);
    let (hello, _) = client_hello("denied.example", 0);
    assert_eq!(
        process_out(&mut e, t(201), c3.client(0, PSH | ACK, 64, &hello)),
        Verdict::Drop(DropReason::Policy)
    );
    let recs = sink.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].action, "drop");
    assert_eq!(recs[0].domain_source.as_deref(), Some("sni"));
    e.shutdown(t(300));
    assert!(sink.take().is_empty(), "exactly one record per flow");
}

#[test]
fn tuple_reuse_over_https_after_an_allowed_https_flow() {
    let (mut e, sink) = engine_with(&cfg_deny());
    let c1 = handshake(&mut e, t(0), 10, 443);
    let (ok, _) = client_hello("ok.example", 0);
    let v = process_out(&mut e, t(1), c1.client(0, PSH | ACK, 64, &ok));
    assert!(matches!(v, Verdict::Forward | Verdict::Held), "{v:?}");
    c1.close(&mut e, t(2), ok.len() as u32);
    // A SYN during the last ACK's round trip, before the server's FIN even (Closing state
    // counts too): a new ISN is a new connection.
    let c2 = handshake(&mut e, t(3), 77_777, 443);
    let (bad, _) = client_hello("denied.example", 0);
    assert_eq!(
        process_out(&mut e, t(4), c2.client(0, PSH | ACK, 64, &bad)),
        Verdict::Drop(DropReason::Policy)
    );
    e.shutdown(t(10));
    let recs = sink.take();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].domain.as_deref(), Some("ok.example"));
    assert_eq!(recs[0].action, "accept");
    assert_eq!(recs[1].domain.as_deref(), Some("denied.example"));
    assert_eq!(recs[1].action, "drop");
}

#[test]
fn syn_retransmission_of_a_closing_flow_is_not_a_new_flow() {
    let (mut e, sink) = engine_with(&cfg_deny());
    let c = handshake(&mut e, t(0), 5000, 80);
    // Client FIN only (FinWait): the original SYN again is not a new connection.
    let f = c.client(0, FIN | ACK, 64, &[]);
    assert_eq!(process_out(&mut e, t(1), f), Verdict::Forward);
    let syn = seg(HOST, SERVER, SPORT, 80, 5000, 0, SYN, 64, &[]);
    assert_eq!(
        process_out(&mut e, t(2), syn),
        Verdict::Drop(DropReason::InvalidState)
    );
    assert_eq!(e.stats().tuple_reuses, 0);
    e.shutdown(t(3));
    assert_eq!(sink.take().len(), 1);
}

// ------------------------------------------------------------------------------ insertion

#[test]
fn ttl_decoy_clienthello_resets_the_flow_in_loose_mode() {
    for mode in [Mode::Loose, Mode::Strict] {
        let mut c = cfg_deny();
        c.firewall.mode = mode;
        let (mut e, sink) = engine_with(&c);
        let conn = handshake(&mut e, t(0), 7000, 443);
        // The decoy names an allowed host and carries a TTL that expires after the gateway.
        let (decoy, _) = client_hello("allowed.example", 0);
        let (real, _) = client_hello("denied.example", 0);
        let v = process_out(&mut e, t(1), conn.client(0, PSH | ACK, 2, &decoy));
        assert_eq!(v, Verdict::Forward, "{mode:?}: the decoy decides accept");
        // The real ClientHello: same sequence range, other bytes, full TTL.
        let v = process_out(&mut e, t(2), conn.client(0, PSH | ACK, 64, &real));
        assert_eq!(v, Verdict::Drop(DropReason::Evasion), "{mode:?}");
        let out = emits(&mut e);
        let r = rsts(&out);
        assert_eq!(r.len(), 2, "{mode:?}: RST both ways");
        // The server never acknowledged anything: its RST sits at the stream start.
        assert!(r.contains(&(Side::Outside, conn.isn_c + 1)), "{r:?}");
        assert!(r.iter().any(|(s, _)| *s == Side::Inside));
        // Nothing more of the flow passes.
        let v = process_out(&mut e, t(3), conn.client(0, PSH | ACK, 64, &real));
        assert_eq!(v, Verdict::Drop(DropReason::Policy));
        e.shutdown(t(4));
        let recs = sink.take();
        assert_eq!(recs.len(), 1);
        let rec = &recs[0];
        assert_eq!(rec.action, "drop");
        assert_eq!(rec.app_dpi_state, "unknown_strict");
        assert!(rec.reason.contains("evasion"), "{}", rec.reason);
        assert_eq!(rec.acl_rule_id, None);
        assert_eq!(e.stats().l7_conflicts, 1);
    }
}

#[test]
fn a_clienthello_expiring_at_the_gateway_is_not_inspected() {
    let (mut e, sink) = engine_with(&cfg_deny());
    let conn = handshake(&mut e, t(0), 7000, 443);
    let (decoy, _) = client_hello("allowed.example", 0);
    let (real, _) = client_hello("denied.example", 0);
    assert_eq!(
        process_out(&mut e, t(1), conn.client(0, PSH | ACK, 1, &decoy)),
        Verdict::Drop(DropReason::TtlExceeded)
    );
    // The real one is identified as if the decoy had never been: denied by name.
    assert_eq!(
        process_out(&mut e, t(2), conn.client(0, PSH | ACK, 64, &real)),
        Verdict::Drop(DropReason::Policy)
    );
    let recs = sink.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].domain.as_deref(), Some("denied.example"));
    assert_eq!(recs[0].acl_rule_id.as_deref(), Some("no-denied"));
}

#[test]
fn conflicting_bytes_after_release_reset_until_the_server_acknowledged_them() {
    let (mut e, sink) = engine_with(&cfg_deny());
    let conn = handshake(&mut e, t(0), 100, 80);
    let req = http_get("ok.example");
    assert_eq!(
        process_out(&mut e, t(1), conn.client(0, PSH | ACK, 64, &req)),
        Verdict::Forward
    );
    // An identical retransmission passes.
    assert_eq!(
        process_out(&mut e, t(2), conn.client(0, PSH | ACK, 64, &req)),
        Verdict::Forward
    );
    // A later segment overlapping the inspected request with other bytes: reset.
    let mut forged = http_get("denied.example");
    forged.truncate(req.len());
    let v = process_out(&mut e, t(3), conn.client(4, PSH | ACK, 64, &forged[4..]));
    assert_eq!(v, Verdict::Drop(DropReason::Evasion));
    assert_eq!(rsts(&emits(&mut e)).len(), 2);
    let recs = sink.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].action, "drop");
    assert!(recs[0].reason.contains("evasion"), "{}", recs[0].reason);

    // Once the server acknowledged the inspected bytes it reads no other version of them: the
    // copy is let go and later segments are not judged against it.
    let (mut e, sink) = engine_with(&cfg_deny());
    let conn = handshake(&mut e, t(0), 100, 80);
    assert_eq!(
        process_out(&mut e, t(1), conn.client(0, PSH | ACK, 64, &req)),
        Verdict::Forward
    );
    let mut ack = conn.server_ack(req.len() as u32);
    assert_eq!(e.process(t(2), Side::Outside, &mut ack), Verdict::Forward);
    assert_eq!(e.stats().held_bytes, 0, "nothing kept past the ACK");
    let next = conn.client(req.len() as u32, PSH | ACK, 64, b"more");
    assert_eq!(process_out(&mut e, t(3), next), Verdict::Forward);
    e.shutdown(t(4));
    let recs = sink.take();
    assert_eq!(recs[0].action, "accept");
}

// ------------------------------------------------------------------------------ starvation

/// Send `hello` in `mss`-byte segments; returns per segment (verdict, frames emitted).
fn send_fine(e: &mut Engine, conn: &Conn, hello: &[u8], mss: usize) -> Vec<(Verdict, Vec<Emit>)> {
    hello
        .chunks(mss)
        .enumerate()
        .map(|(i, part)| {
            let f = conn.client((i * mss) as u32, PSH | ACK, 64, part);
            let v = process_out(e, t(10 + i as u64), f);
            (v, emits(e))
        })
        .collect()
}

#[test]
fn fine_segmentation_releases_the_bytes_before_the_name_and_holds_the_rest() {
    let (mut e, sink) = engine_with(&cfg_allow_only(Mode::Loose, OnUnidentifiable::Accept));
    let conn = handshake(&mut e, t(0), 42, 443);
    // 1,200 bytes of padding before the name, cut into 20-byte segments: 65 segments, far
    // more than a client's initial window of 10; the name spans the last three.
    let (hello, sni_at) = client_hello("allowed.example", 1200);
    let mss = 20;
    assert!(hello.len().div_ceil(mss) - sni_at / mss >= 3);
    let steps = send_fine(&mut e, &conn, &hello, mss);
    // The server_name extension: 4 header bytes, list length, type, name length, name.
    let sni_end = sni_at + 9 + "allowed.example".len();
    let mut released = Vec::new();
    let mut decided_at = None;
    for (i, (v, out)) in steps.iter().enumerate() {
        let start = i * mss;
        let end = (start + mss).min(hello.len());
        for m in out {
            let (seq, _, p, dst) = tcp_of(&m.frame);
            assert_eq!(m.side, Side::Outside);
            assert_eq!(dst, IpAddr::V4(Ipv4Addr::from(SERVER)));
            released.push((seq.wrapping_sub(conn.isn_c + 1) as usize, p));
        }
        if end <= sni_at {
            // Wholly before the name: sent on at once, this very segment.
            assert_eq!(*v, Verdict::Held, "segment {i}");
            assert_eq!(out.len(), 1, "segment {i} ({start}..{end}) goes at once");
        } else if end < sni_end {
            assert_eq!(*v, Verdict::Held, "segment {i}");
            assert!(
                out.is_empty(),
                "segment {i} ({start}..{end}) reaches the name: held"
            );
        } else if decided_at.is_none() {
            // The name is complete: decided (before the rest of the ClientHello), the held
            // segments and this one go.
            decided_at = Some(i);
            assert_eq!(*v, Verdict::Held, "segment {i}");
            assert!(out.len() >= 2, "segment {i}: {} released", out.len());
        } else {
            assert_eq!(*v, Verdict::Forward, "segment {i}: accepted, passes");
        }
    }
    assert!(
        decided_at.is_some_and(|i| i < steps.len() - 1),
        "{decided_at:?}"
    );
    // What was forwarded directly completes the stream.
    for (i, (v, _)) in steps.iter().enumerate() {
        if *v == Verdict::Forward {
            let start = i * mss;
            let end = (start + mss).min(hello.len());
            released.push((start, hello[start..end].to_vec()));
        }
    }
    // Every byte reached the server exactly once, in order.
    let mut stream = Vec::new();
    for (off, p) in &released {
        assert_eq!(*off, stream.len());
        stream.extend_from_slice(p);
    }
    assert_eq!(stream, hello);
    assert!(e.stats().pre_name_released.packets >= (sni_at / mss) as u64);
    e.shutdown(t(1000));
    let recs = sink.take();
    assert_eq!(recs[0].action, "accept");
    assert_eq!(recs[0].domain.as_deref(), Some("allowed.example"));
    assert_eq!(recs[0].app_dpi_state, "success");
}

#[test]
fn fine_segmentation_to_a_denied_name_sends_only_handshake_bytes_then_resets() {
    let (mut e, sink) = engine_with(&cfg_allow_only(Mode::Strict, OnUnidentifiable::Drop));
    let conn = handshake(&mut e, t(0), 42, 443);
    let (hello, sni_at) = client_hello("other.example", 600);
    let steps = send_fine(&mut e, &conn, &hello, 48);
    let mut sent_upto = 0;
    let mut rst = Vec::new();
    for (_, out) in &steps {
        for m in out {
            let (seq, flags, p, _) = tcp_of(&m.frame);
            if flags & 0x04 != 0 {
                rst.push((m.side, seq));
                continue;
            }
            let off = seq.wrapping_sub(conn.isn_c + 1) as usize;
            assert_eq!(off, sent_upto);
            sent_upto += p.len();
        }
    }
    assert!(
        sent_upto <= sni_at,
        "nothing from the name on left: {sent_upto} > {sni_at}"
    );
    assert!(sent_upto + 48 > sni_at, "everything before it did");
    assert_eq!(steps.last().unwrap().0, Verdict::Drop(DropReason::Policy));
    // The server's RST continues exactly where the released bytes end.
    assert!(
        rst.contains(&(Side::Outside, conn.isn_c + 1 + sent_upto as u32)),
        "{rst:?}"
    );
    assert!(rst.iter().any(|(s, _)| *s == Side::Inside));
    let recs = sink.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].action, "drop");
    assert_eq!(recs[0].domain.as_deref(), Some("other.example"));
}

#[test]
fn a_lost_ack_retransmission_of_released_bytes_goes_again() {
    let (mut e, _sink) = engine_with(&cfg_allow_only(Mode::Loose, OnUnidentifiable::Accept));
    let conn = handshake(&mut e, t(0), 42, 443);
    let (hello, _) = client_hello("allowed.example", 400);
    let first = conn.client(0, PSH | ACK, 64, &hello[..48]);
    assert_eq!(process_out(&mut e, t(1), first.clone()), Verdict::Held);
    assert_eq!(emits(&mut e).len(), 1);
    // The client did not see the server's ACK and sends the segment again.
    assert_eq!(process_out(&mut e, t(2), first), Verdict::Forward);
}

// ------------------------------------------------------------------------------ limits

#[test]
fn padding_past_the_hold_limit_follows_on_unidentifiable() {
    // 17 KB of padding before the name: the ClientHello is over the 16 KiB the engine reads.
    for (on, action, state) in [
        (OnUnidentifiable::Accept, "accept", "unknown_loose"),
        (OnUnidentifiable::Drop, "drop", "unknown_strict"),
    ] {
        let mut c = cfg_allow_only(Mode::Loose, on);
        c.firewall.default_action = Action::Accept;
        c.firewall.rules = vec![domain_rule("no-denied", "denied.example", RuleAction::Drop)];
        let (mut e, sink) = engine_with(&c);
        let conn = handshake(&mut e, t(0), 42, 443);
        let body_pad = 17 * 1024;
        let mut hello = client_hello("denied.example", 0).0;
        // Re-frame with the padding: one handshake message, declared length over the limit.
        let (padded, _) = {
            let mut exts = vec![0, 21];
            exts.extend_from_slice(&(body_pad as u16).to_be_bytes());
            exts.extend(std::iter::repeat_n(0u8, body_pad));
            let sni_exts = &hello[5 + 4 + 2 + 32 + 7 + 2..];
            exts.extend_from_slice(sni_exts);
            let mut body = hello[9..9 + 2 + 32 + 7].to_vec();
            body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
            body.extend_from_slice(&exts);
            let mut m = vec![1];
            m.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            m.extend_from_slice(&body);
            // Two records: the handshake message is larger than one.
            let mut s = Vec::new();
            for part in m.chunks(16_000) {
                s.extend_from_slice(&[22, 3, 1]);
                s.extend_from_slice(&(part.len() as u16).to_be_bytes());
                s.extend_from_slice(part);
            }
            (s, 0)
        };
        hello = padded;
        let first = conn.client(0, PSH | ACK, 64, &hello[..1400]);
        let v = process_out(&mut e, t(1), first);
        match on {
            // Unidentifiable at the first segment (declared size over the limit): loose mode
            // goes on without the name, the denied name passes unknown.
            OnUnidentifiable::Accept => assert_eq!(v, Verdict::Forward),
            OnUnidentifiable::Drop => {
                assert_eq!(v, Verdict::Drop(DropReason::Policy));
                assert_eq!(rsts(&emits(&mut e)).len(), 2);
            }
        }
        e.shutdown(t(10));
        let recs = sink.take();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].action, action, "{on:?}");
        assert_eq!(recs[0].app_dpi_state, state, "{on:?}");
        assert!(
            recs[0].reason.contains("clienthello too large"),
            "{}",
            recs[0].reason
        );
        if on == OnUnidentifiable::Drop {
            assert!(
                recs[0].reason.contains("on_unidentifiable"),
                "{}",
                recs[0].reason
            );
        }
    }
}

#[test]
fn padding_within_the_limit_is_identified_when_cut_finely() {
    // 15 KB of zero padding before the name, in 1,000-byte segments: the bytes before the
    // name go on as they come, the name is read, the denied domain is denied.
    let (mut e, sink) = engine_with(&cfg_deny());
    let conn = handshake(&mut e, t(0), 42, 443);
    let (hello, _) = client_hello("denied.example", 15 * 1024);
    let steps = send_fine(&mut e, &conn, &hello, 1000);
    assert_eq!(steps.last().unwrap().0, Verdict::Drop(DropReason::Policy));
    let recs = sink.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].domain.as_deref(), Some("denied.example"));
    assert_eq!(recs[0].action, "drop");
}

#[test]
fn a_clienthello_that_stops_before_the_name_times_out_per_on_unidentifiable() {
    for (on, action) in [
        (OnUnidentifiable::Accept, "accept"),
        (OnUnidentifiable::Drop, "drop"),
    ] {
        let mut c = cfg_deny();
        c.firewall.on_unidentifiable = on;
        let (mut e, sink) = engine_with(&c);
        let conn = handshake(&mut e, t(0), 42, 443);
        let (hello, sni_at) = client_hello("denied.example", 300);
        // The client sends everything up to (and into) the name, then stops.
        let part = &hello[..sni_at + 3];
        assert_eq!(
            process_out(&mut e, t(1), conn.client(0, PSH | ACK, 64, part)),
            Verdict::Held
        );
        let early = emits(&mut e);
        assert!(
            early.is_empty(),
            "one segment reaching into the name: held whole"
        );
        e.poll(t(6_000));
        let out = emits(&mut e);
        match on {
            OnUnidentifiable::Accept => assert_eq!(out.len(), 1, "released at the deadline"),
            OnUnidentifiable::Drop => assert_eq!(rsts(&out).len(), 2),
        }
        e.shutdown(t(7_000));
        let recs = sink.take();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].action, action, "{on:?}");
        assert!(recs[0].reason.contains("timed out"), "{}", recs[0].reason);
    }
}
