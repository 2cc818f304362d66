//! DNS facts in the engine: the gateway's own resolution (gateway-scoped), the forwarder's
//! answers (client-scoped), and the race-free `fqdn_and_dns` verification: a flow whose name is
//! known but whose addresses are not waits, payload held, for the gateway's on-demand
//! resolution, then is decided; a timeout makes the verification unknown.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use etherparse::PacketBuilder;
use natfw_engine::engine::{
    DropReason, Emit, Engine, EngineOptions, GeoDb, ResolveOutcome, Side, Verdict,
};
use natfw_engine::time::Timestamp;
use natfw_engine::wire;
use natfw_flowlog::{FlowEnd, FlowRecord, FlowSink};
use natfw_policy::{
    Action, Config, Destination, DomainMode, DomainPattern, Mode, Protocol, Rule, RuleAction,
};

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
const EIP: [u8; 4] = [192, 0, 2, 1];
const GOOD: [u8; 4] = [203, 0, 113, 5];
const EVIL: [u8; 4] = [198, 51, 100, 66];
const CLIENT: [u8; 4] = [10, 0, 0, 7];

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

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(1_000_000 + ms)
}

fn ip(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

fn rule(name: &str, pattern: &str, mode: DomainMode) -> Rule {
    let pattern = match pattern.strip_prefix("*.") {
        Some(suffix) => DomainPattern::Wildcard(suffix.into()),
        None => DomainPattern::Exact(pattern.into()),
    };
    Rule {
        name: name.into(),
        description: String::new(),
        source: None,
        destination: Destination::Domains(vec![pattern]),
        domain_mode: mode,
        protocol: Protocol::Tcp,
        ports: None,
        applications: None,
        action: RuleAction::Accept,
        enabled: true,
        pos: Default::default(),
    }
}

fn cfg(rules: Vec<Rule>, mode: Mode) -> Config {
    let mut c = natfw_policy::config::embedded_default();
    c.firewall.rules = rules;
    c.firewall.mode = mode;
    c.firewall.default_action = Action::Drop;
    c
}

fn engine(c: &Config, on_demand: bool) -> (Engine, Sink) {
    let sink = Sink::default();
    let opts = EngineOptions {
        on_demand_resolution: on_demand,
        resolve_timeout_ms: 1_000,
        ..EngineOptions::default()
    };
    let e = Engine::with_options(c, GeoDb::embedded(), Box::new(sink.clone()), opts).unwrap();
    (e, sink)
}

fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, seq: u32, flags: &str) -> Vec<u8> {
    tcp_data(src, dst, sport, dport, seq, flags, &[])
}

fn tcp_data(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    seq: u32,
    flags: &str,
    data: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, seq, 64_000);
    if flags.contains('S') {
        b = b.syn();
    }
    if flags.contains('A') {
        b = b.ack(1);
    }
    if flags.contains('P') {
        b = b.psh();
    }
    let mut out = Vec::new();
    b.write(&mut out, data).unwrap();
    out
}

/// A minimal TLS 1.2 ClientHello record carrying `sni`.
fn client_hello(sni: &str) -> Vec<u8> {
    let name = sni.as_bytes();
    let mut sni_ext = Vec::new();
    sni_ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni_ext.push(0);
    sni_ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni_ext.extend_from_slice(name);
    let mut exts = vec![0, 0];
    exts.extend_from_slice(&(sni_ext.len() as u16).to_be_bytes());
    exts.extend(sni_ext);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0xc0, 0x2f]); // one cipher suite
    body.extend_from_slice(&[1, 0]); // null compression
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend(exts);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

/// Handshake to `dst` and the ClientHello for `sni`; returns the hello's verdict.
fn connect(e: &mut Engine, now: Timestamp, sport: u16, dst: [u8; 4], sni: &str) -> Verdict {
    let mut syn = tcp(CLIENT, dst, sport, 443, 100, "S");
    assert_eq!(e.process(now, Side::Inside, &mut syn), Verdict::Forward);
    let info = wire::parse(&syn).unwrap();
    let (eport, _) = info.ports().unwrap();
    let mut synack = tcp(dst, EIP, 443, eport, 500, "SA");
    assert_eq!(e.process(now, Side::Outside, &mut synack), Verdict::Forward);
    let mut ack = tcp(CLIENT, dst, sport, 443, 101, "A");
    assert_eq!(e.process(now, Side::Inside, &mut ack), Verdict::Forward);
    let mut hello = tcp_data(CLIENT, dst, sport, 443, 101, "PA", &client_hello(sni));
    e.process(now, Side::Inside, &mut hello)
}

/// Frames the engine emitted: (to the outside with payload, RSTs).
fn emitted(e: &mut Engine) -> (usize, usize) {
    let mut out: Vec<Emit> = Vec::new();
    e.drain_emits(&mut out);
    let mut payload = 0;
    let mut rsts = 0;
    for em in &out {
        let info = wire::parse(&em.frame).unwrap();
        if let wire::L4::Tcp { flags, .. } = info.l4 {
            if flags.rst() {
                rsts += 1;
                continue;
            }
        }
        if em.side == Side::Outside && info.payload_len > 0 {
            payload += 1;
        }
    }
    (payload, rsts)
}

fn requests(e: &mut Engine) -> Vec<String> {
    let mut v = Vec::new();
    e.drain_resolve_requests(&mut v);
    v.iter().map(|n| n.to_string()).collect()
}

fn answer(e: &mut Engine, now: Timestamp, name: &str, addrs: &[[u8; 4]]) {
    e.resolution(
        now,
        name,
        ResolveOutcome::Addresses {
            addrs: addrs.iter().map(|a| ip(*a)).collect(),
            valid_secs: 300,
        },
    );
}

#[test]
fn fqdn_and_dns_wildcard_waits_for_the_gateway_and_accepts_a_true_name() {
    let c = cfg(
        vec![rule("cdn", "*.cdn.example.test", DomainMode::FqdnAndDns)],
        Mode::Loose,
    );
    let (mut e, sink) = engine(&c, true);
    assert_eq!(
        connect(&mut e, t(0), 4000, GOOD, "a.cdn.example.test"),
        Verdict::Held
    );
    // Nothing left: the name is being resolved, the payload is held.
    assert_eq!(emitted(&mut e), (0, 0));
    assert_eq!(requests(&mut e), ["a.cdn.example.test"]);
    // A second flow presenting the same name joins the wait: no second request.
    assert_eq!(
        connect(&mut e, t(1), 4001, GOOD, "a.cdn.example.test"),
        Verdict::Held
    );
    assert!(requests(&mut e).is_empty());
    assert_eq!(e.stats().dns_resolve_waits, 2);
    answer(&mut e, t(5), "a.cdn.example.test", &[GOOD]);
    // Both held hellos leave now, once each.
    assert_eq!(emitted(&mut e), (2, 0));
    e.shutdown(t(10));
    let recs = sink.take();
    assert_eq!(recs.len(), 2);
    for r in &recs {
        assert_eq!(r.action, "accept", "{r:?}");
        assert_eq!(r.acl_rule_id.as_deref(), Some("cdn"));
        assert_eq!(r.dns_verified.as_deref(), Some("gateway_resolution"));
        assert!(r.reason.contains("gateway_resolution"), "{}", r.reason);
    }
}

#[test]
fn fqdn_and_dns_drops_a_forged_sni_after_the_gateway_resolved_it() {
    let c = cfg(
        vec![rule("cdn", "*.cdn.example.test", DomainMode::FqdnAndDns)],
        Mode::Loose,
    );
    let (mut e, sink) = engine(&c, true);
    // The allowed name sent to another server's address.
    assert_eq!(
        connect(&mut e, t(0), 4000, EVIL, "a.cdn.example.test"),
        Verdict::Held
    );
    assert_eq!(requests(&mut e), ["a.cdn.example.test"]);
    answer(&mut e, t(5), "a.cdn.example.test", &[GOOD]);
    let (payload, rsts) = emitted(&mut e);
    assert_eq!(payload, 0, "no payload byte of a forged flow leaves");
    assert_eq!(rsts, 2, "both ends reset");
    // The name is now known: the next forged flow is dropped at once, no request.
    assert_eq!(
        connect(&mut e, t(6), 4001, EVIL, "a.cdn.example.test"),
        Verdict::Drop(DropReason::Policy)
    );
    assert!(requests(&mut e).is_empty());
    e.shutdown(t(10));
    let recs = sink.take();
    assert_eq!(recs.len(), 2);
    for r in &recs {
        assert_eq!(r.action, "drop", "{r:?}");
        assert_eq!(r.acl_rule_id, None, "default drop: the rule did not match");
        assert_eq!(r.dns_verified, None);
    }
}

#[test]
fn resolution_timeout_is_unknown_loose_skips_strict_drops() {
    for mode in [Mode::Loose, Mode::Strict] {
        let mut rules = vec![rule("cdn", "*.cdn.example.test", DomainMode::FqdnAndDns)];
        // Loose: after the unknown rule is skipped, this one accepts.
        if mode == Mode::Loose {
            rules.push(rule("fallback", "*.example.test", DomainMode::Fqdn));
        }
        let c = cfg(rules, mode);
        let (mut e, sink) = engine(&c, true);
        assert_eq!(
            connect(&mut e, t(0), 4000, GOOD, "b.cdn.example.test"),
            Verdict::Held
        );
        assert_eq!(requests(&mut e), ["b.cdn.example.test"]);
        e.poll(t(500));
        assert_eq!(emitted(&mut e), (0, 0), "still waiting");
        e.poll(t(1_001));
        assert_eq!(e.stats().dns_resolve_timeouts, 1);
        let (payload, _) = emitted(&mut e);
        // A late answer is stored for later flows and changes nothing for this one.
        answer(&mut e, t(1_100), "b.cdn.example.test", &[GOOD]);
        assert_eq!(e.stats().dns_gateway_names, 1);
        assert_eq!(emitted(&mut e), (0, 0));
        e.shutdown(t(2_000));
        let recs = sink.take();
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        match mode {
            Mode::Loose => {
                assert_eq!(payload, 1, "released after the fallback rule accepted");
                assert_eq!(r.action, "accept");
                assert_eq!(r.acl_rule_id.as_deref(), Some("fallback"));
            }
            Mode::Strict => {
                assert_eq!(payload, 0);
                assert_eq!(r.action, "drop");
                assert_eq!(r.app_dpi_state, "unknown_strict");
                assert_eq!(r.acl_rule_id.as_deref(), Some("cdn"));
            }
        }
        assert!(r.reason.contains("could not resolve"), "{}", r.reason);
    }
}

#[test]
fn without_on_demand_resolution_a_missing_address_is_final() {
    let c = cfg(
        vec![rule("cdn", "*.cdn.example.test", DomainMode::FqdnAndDns)],
        Mode::Loose,
    );
    let (mut e, sink) = engine(&c, false);
    assert_eq!(
        connect(&mut e, t(0), 4000, GOOD, "a.cdn.example.test"),
        Verdict::Drop(DropReason::Policy)
    );
    assert!(requests(&mut e).is_empty());
    e.shutdown(t(1));
    assert_eq!(sink.take()[0].action, "drop");
}

#[test]
fn flows_that_need_no_dns_fact_never_wait() {
    let c = cfg(
        vec![
            rule("cdn", "*.cdn.example.test", DomainMode::FqdnAndDns),
            rule("plain", "*.example.test", DomainMode::Fqdn),
        ],
        Mode::Loose,
    );
    let (mut e, _sink) = engine(&c, true);
    // The name does not match the fqdn_and_dns rule: decided by the fqdn rule at once.
    assert_eq!(
        connect(&mut e, t(0), 4000, GOOD, "www.example.test"),
        Verdict::Forward
    );
    assert!(requests(&mut e).is_empty());
    assert_eq!(e.stats().dns_resolve_waits, 0);
}

#[test]
fn gateway_facts_serve_every_client_and_reload_forgets_them() {
    let c = cfg(
        vec![rule("shop", "shop.example.test", DomainMode::Dns)],
        Mode::Loose,
    );
    let (mut e, sink) = engine(&c, true);
    e.learn_resolution(t(0), "shop.example.test", &[ip(GOOD)], 300);
    let mut syn = tcp(CLIENT, GOOD, 4000, 443, 1, "S");
    assert_eq!(e.process(t(1), Side::Inside, &mut syn), Verdict::Forward);
    let mut other = tcp(CLIENT, EVIL, 4001, 443, 1, "S");
    assert_eq!(
        e.process(t(1), Side::Inside, &mut other),
        Verdict::Drop(DropReason::Policy)
    );
    e.forget_resolution("shop.example.test");
    let mut again = tcp([10, 0, 0, 9], GOOD, 4002, 443, 1, "S");
    assert_eq!(
        e.process(t(2), Side::Inside, &mut again),
        Verdict::Drop(DropReason::Policy)
    );
    e.shutdown(t(3));
    let recs = sink.take();
    let ok = recs.iter().find(|r| r.action == "accept").unwrap();
    assert_eq!(ok.dns_verified.as_deref(), Some("gateway_resolution"));
    assert!(recs
        .iter()
        .filter(|r| r.action == "drop")
        .all(|r| r.dns_verified.is_none()));
}

#[test]
fn forwarder_answers_are_facts_for_the_asking_client_only() {
    let c = cfg(
        vec![rule("shop", "shop.example.test", DomainMode::Dns)],
        Mode::Loose,
    );
    let (mut e, sink) = engine(&c, false);
    e.learn_forwarded_answer(t(0), ip(CLIENT), "shop.example.test", &[(ip(GOOD), 60)]);
    assert_eq!(e.stats().dns_answers_forwarded, 1);
    let mut mine = tcp(CLIENT, GOOD, 4000, 443, 1, "S");
    assert_eq!(e.process(t(1), Side::Inside, &mut mine), Verdict::Forward);
    let mut theirs = tcp([10, 0, 0, 8], GOOD, 4001, 443, 1, "S");
    assert_eq!(
        e.process(t(1), Side::Inside, &mut theirs),
        Verdict::Drop(DropReason::Policy)
    );
    e.shutdown(t(2));
    let recs = sink.take();
    let mine = recs.iter().find(|r| r.src_ip == "10.0.0.7").unwrap();
    assert_eq!(mine.dns_verified.as_deref(), Some("forwarder"));
    assert_eq!(mine.domain.as_deref(), Some("shop.example.test"));
    assert!(mine.reason.contains("forwarder"), "{}", mine.reason);
}

#[test]
fn concurrency_bound_makes_extra_names_unknown_at_once() {
    let c = cfg(
        vec![rule("cdn", "*.cdn.example.test", DomainMode::FqdnAndDns)],
        Mode::Strict,
    );
    let sink = Sink::default();
    let opts = EngineOptions {
        on_demand_resolution: true,
        max_resolving: 1,
        ..EngineOptions::default()
    };
    let mut e = Engine::with_options(&c, GeoDb::embedded(), Box::new(sink.clone()), opts).unwrap();
    assert_eq!(
        connect(&mut e, t(0), 4000, GOOD, "a.cdn.example.test"),
        Verdict::Held
    );
    // A second name while one is being resolved: no wait, unknown, strict drops.
    assert_eq!(
        connect(&mut e, t(0), 4001, GOOD, "b.cdn.example.test"),
        Verdict::Drop(DropReason::Policy)
    );
    assert_eq!(requests(&mut e), ["a.cdn.example.test"]);
    assert_eq!(e.stats().dns_resolve_refused, 1);
}
