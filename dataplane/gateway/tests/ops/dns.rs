//! The gateway's DNS thread against a real DNS server (dnsmasq on a loopback port, answering from
//! a hosts file): rule names resolved (A, AAAA, CNAME), refreshed by TTL (a changed answer
//! replaces the old addresses), bounded, added and dropped by a reload; on-demand verification of
//! the name a flow presents; the forwarder's per-client facts and refusals.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use hickory_resolver::proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RecordType};
use natfw_engine::engine::{DropReason, Emit, Engine, EngineOptions, GeoDb, Side, Verdict};
use natfw_engine::time::Timestamp;
use natfw_flowlog::{FlowEnd, FlowRecord, FlowSink};
use natfw_gateway::dns::{resolve, DnsService, DnsUpdate};
use natfw_policy::compile::CompiledPolicy;
use natfw_policy::{
    Action, Config, Destination, DnsConfig, DomainMode, DomainPattern, ForwarderConfig, Protocol,
    Refusal, Rule, RuleAction,
};

/// dnsmasq answering `example.test` from a hosts file on 127.0.0.1:PORT; NXDOMAIN for other
/// names under it. Killed on drop.
struct Dnsmasq {
    child: Child,
    port: u16,
    hosts: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    fn start(hosts: &str, ttl: u32) -> Option<Dnsmasq> {
        if Command::new("dnsmasq").arg("--version").output().is_err() {
            eprintln!("SKIP: dnsmasq is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(&path, hosts).unwrap();
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--pid-file=",
                "--user=root",
                "--local=/example.test/",
                "--cname=www.example.test,shop.example.test",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--local-ttl={ttl}"))
            .arg(format!("--addn-hosts={}", path.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let d = Dnsmasq {
            child,
            port,
            hosts: path,
            _dir: dir,
        };
        // Ready once it answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        while query(d.addr(), "shop.example.test").is_none() {
            assert!(Instant::now() < deadline, "dnsmasq did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(d)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// New hosts file; SIGHUP makes dnsmasq reread it.
    fn set_hosts(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).unwrap();
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const HOSTS: &str = "198.51.100.10 shop.example.test\n2001:db8::10 shop.example.test\n\
                     203.0.113.20 api.example.test\n198.51.100.30 a.cdn.example.test\n";

/// One A query to `server`; the decoded reply.
fn query(server: SocketAddr, name: &str) -> Option<Message> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut m = Message::new();
    m.set_id(0x4242)
        .set_message_type(MessageType::Query)
        .set_recursion_desired(true);
    m.add_query(Query::query(
        Name::from_ascii(format!("{name}.")).unwrap(),
        RecordType::A,
    ));
    s.send_to(&m.to_vec().unwrap(), server).ok()?;
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).ok()?;
    Message::from_vec(&buf[..n]).ok()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn domain_rule(name: &str, pattern: &str, mode: DomainMode, action: RuleAction) -> Rule {
    let p = match pattern.strip_prefix("*.") {
        Some(s) => DomainPattern::Wildcard(s.into()),
        None => DomainPattern::Exact(pattern.into()),
    };
    Rule {
        name: name.into(),
        description: String::new(),
        source: None,
        destination: Destination::Domains(vec![p]),
        domain_mode: mode,
        protocol: Protocol::Tcp,
        ports: None,
        applications: None,
        action,
        enabled: true,
        pos: Default::default(),
    }
}

fn config(rules: Vec<Rule>, dns: DnsConfig) -> Config {
    let mut c = natfw_policy::config::embedded_default();
    c.firewall.rules = rules;
    c.firewall.default_action = Action::Drop;
    c.dns = dns;
    c
}

fn dns_cfg(server: &Dnsmasq) -> DnsConfig {
    DnsConfig {
        resolvers: vec![server.addr()],
        refresh_min_secs: 1,
        refresh_max_secs: 2,
        verify_timeout_ms: 1500,
        ..DnsConfig::default()
    }
}

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

fn engine(c: &Config) -> (Engine, Sink) {
    let sink = Sink::default();
    let opts = EngineOptions {
        on_demand_resolution: true,
        resolve_timeout_ms: c.dns.verify_timeout_ms,
        ..EngineOptions::default()
    };
    let e = Engine::with_options(c, GeoDb::embedded(), Box::new(sink.clone()), opts).unwrap();
    (e, sink)
}

fn syn(src: [u8; 4], dst: IpAddr, sport: u16) -> Vec<u8> {
    let IpAddr::V4(d) = dst else {
        panic!("v4 only")
    };
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, d.octets(), 64)
        .tcp(sport, 443, 1, 64_000)
        .syn()
        .write(&mut out, &[])
        .unwrap();
    out
}

/// Whether a new flow from 10.0.0.7 to `dst` is let through now.
fn allowed(e: &mut Engine, dst: &str, sport: u16) -> bool {
    let mut f = syn([10, 0, 0, 7], ip(dst), sport);
    match e.process(Timestamp::now(), Side::Inside, &mut f) {
        Verdict::Forward => true,
        Verdict::Drop(DropReason::Policy) => false,
        v => panic!("{v:?}"),
    }
}

/// Pump the DNS link into the engine until `done` holds (or 15 s pass: a failure).
fn pump_until(
    e: &mut Engine,
    link: &mut natfw_gateway::dns::DnsLink,
    what: &str,
    mut done: impl FnMut(&mut Engine) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        link.pump(e, Timestamp::now());
        e.poll(Timestamp::now());
        if done(e) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn lookup_follows_cnames_returns_a_and_aaaa_and_nxdomain() {
    let Some(d) = Dnsmasq::start(HOSTS, 60) else {
        return;
    };
    let cfg = dns_cfg(&d);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = resolve::build(&cfg, &[d.addr()]).unwrap();
    let t = Duration::from_secs(3);
    let want = vec![ip("198.51.100.10"), ip("2001:db8::10")];
    match rt.block_on(resolve::lookup(&r, "shop.example.test", t)) {
        resolve::Looked::Addrs { addrs, ttl } => {
            assert_eq!(addrs, want);
            assert!(ttl <= 60, "{ttl}");
        }
        o => panic!("{o:?}"),
    }
    // www is a CNAME of shop: the chain is followed to shop's addresses.
    match rt.block_on(resolve::lookup(&r, "www.example.test", t)) {
        resolve::Looked::Addrs { addrs, .. } => assert_eq!(addrs, want),
        o => panic!("{o:?}"),
    }
    assert_eq!(
        rt.block_on(resolve::lookup(&r, "nope.example.test", t)),
        resolve::Looked::NoRecords
    );
    // Nobody listening: a failure, not an empty answer.
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let r2 = resolve::build(&cfg, &[dead.local_addr().unwrap()]).unwrap();
    assert!(matches!(
        rt.block_on(resolve::lookup(
            &r2,
            "shop.example.test",
            Duration::from_millis(800)
        )),
        resolve::Looked::Failed(_)
    ));
}

#[test]
fn refresh_floor_ceiling_and_name_bounds() {
    let cfg = DnsConfig {
        refresh_min_secs: 30,
        refresh_max_secs: 600,
        ..DnsConfig::default()
    };
    assert_eq!(resolve::interval(&cfg, 0), 30);
    assert_eq!(resolve::interval(&cfg, 120), 120);
    assert_eq!(resolve::interval(&cfg, 86_400), 600);
    // The engine keeps a name's addresses past its next refresh, never much longer.
    let v = resolve::validity(&cfg, 120);
    assert!(v > 120 && v <= 120 + 60 + 3, "{v}");
    let rules = ["a.test", "b.test", "c.test", "*.w.test"]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            domain_rule(
                &format!("r{i}"),
                n,
                if n.starts_with('*') {
                    DomainMode::FqdnAndDns
                } else {
                    DomainMode::Dns
                },
                RuleAction::Accept,
            )
        })
        .collect();
    let c = config(rules, DnsConfig::default());
    let p = CompiledPolicy::new(&c.firewall);
    let (names, over) = resolve::rule_names(&p, 2);
    let names: Vec<&str> = names.iter().map(|n| &**n).collect();
    assert_eq!((names, over), (vec!["a.test", "b.test"], 1));
}

#[test]
fn rule_names_resolved_refreshed_by_ttl_and_reloaded() {
    let Some(d) = Dnsmasq::start(HOSTS, 1) else {
        return;
    };
    let c = config(
        vec![domain_rule(
            "shop",
            "shop.example.test",
            DomainMode::Dns,
            RuleAction::Accept,
        )],
        dns_cfg(&d),
    );
    let (mut e, sink) = engine(&c);
    let (svc, mut link) = DnsService::start(&c.dns, e.policy_handle()).unwrap();
    let mut port = 5000;
    let mut next_port = || {
        port += 1;
        port
    };
    assert!(
        !allowed(&mut e, "198.51.100.10", next_port()),
        "not resolved yet"
    );
    pump_until(&mut e, &mut link, "shop resolved", |e| {
        allowed(e, "198.51.100.10", next_port())
    });
    assert!(!allowed(&mut e, "198.51.100.99", next_port()));
    // The name moves: within a refresh (TTL 1 s, floor 1 s) the new address is its address
    // and the old one no longer is.
    d.set_hosts("198.51.100.99 shop.example.test\n203.0.113.20 api.example.test\n");
    pump_until(&mut e, &mut link, "refresh to the new address", |e| {
        allowed(e, "198.51.100.99", next_port())
    });
    assert!(!allowed(&mut e, "198.51.100.10", next_port()));
    let refreshes = svc
        .stats
        .rule_resolutions
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(refreshes >= 2, "{refreshes}");
    // Reload: the rule now names api instead of shop; shop is forgotten, api resolved.
    let mut fw = c.firewall.clone();
    fw.rules = vec![domain_rule(
        "api",
        "api.example.test",
        DomainMode::Dns,
        RuleAction::Accept,
    )];
    let handle = e.policy_handle();
    handle.store(Arc::new(CompiledPolicy::new(&fw)));
    pump_until(&mut e, &mut link, "api resolved after the reload", |e| {
        allowed(e, "203.0.113.20", next_port())
    });
    assert!(!allowed(&mut e, "198.51.100.99", next_port()));
    assert_eq!(e.stats().dns_gateway_names, 1, "shop was forgotten");
    drop(svc);
    e.shutdown(Timestamp::now());
    let recs = sink.0.lock().unwrap();
    let accepted: Vec<&FlowRecord> = recs.iter().filter(|r| r.action == "accept").collect();
    assert!(accepted.len() >= 3);
    assert!(accepted
        .iter()
        .all(|r| r.dns_verified.as_deref() == Some("gateway_resolution")));
}

/// A minimal TLS 1.2 ClientHello record carrying `sni`.
fn client_hello(sni: &str) -> Vec<u8> {
    let name = sni.as_bytes();
    let mut ext = Vec::new();
    ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    ext.extend_from_slice(name);
    let mut exts = vec![0, 0];
    exts.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    exts.extend(ext);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.extend_from_slice(&[0, 0, 2, 0xc0, 0x2f, 1, 0]);
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

fn tcp(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    seq: u32,
    kind: u8,
    data: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .tcp(sport, dport, seq, 64_000);
    b = match kind {
        b'S' => b.syn(),
        b'Y' => b.syn().ack(1),
        b'A' => b.ack(1),
        _ => b.psh().ack(1),
    };
    let mut out = Vec::new();
    b.write(&mut out, data).unwrap();
    out
}

/// Handshake and ClientHello from 10.0.0.7 to `dst` presenting `sni`; the hello's verdict.
fn hello(e: &mut Engine, dst: [u8; 4], sport: u16, sni: &str) -> Verdict {
    let now = Timestamp::now();
    let mut f = tcp([10, 0, 0, 7], dst, sport, 443, 100, b'S', &[]);
    assert_eq!(e.process(now, Side::Inside, &mut f), Verdict::Forward);
    let eport = natfw_engine::wire::parse(&f).unwrap().ports().unwrap().0;
    let mut f = tcp(dst, [192, 0, 2, 1], 443, eport, 500, b'Y', &[]);
    assert_eq!(e.process(now, Side::Outside, &mut f), Verdict::Forward);
    let mut f = tcp([10, 0, 0, 7], dst, sport, 443, 101, b'A', &[]);
    assert_eq!(e.process(now, Side::Inside, &mut f), Verdict::Forward);
    let mut f = tcp(
        [10, 0, 0, 7],
        dst,
        sport,
        443,
        101,
        b'P',
        &client_hello(sni),
    );
    e.process(now, Side::Inside, &mut f)
}

#[test]
fn on_demand_verification_of_a_wildcard_name() {
    let Some(d) = Dnsmasq::start(HOSTS, 60) else {
        return;
    };
    let c = config(
        vec![domain_rule(
            "cdn",
            "*.cdn.example.test",
            DomainMode::FqdnAndDns,
            RuleAction::Accept,
        )],
        dns_cfg(&d),
    );
    let (mut e, sink) = engine(&c);
    let (_svc, mut link) = DnsService::start(&c.dns, e.policy_handle()).unwrap();
    let mut out: Vec<Emit> = Vec::new();
    // The true server: held until the gateway's answer, then released.
    assert_eq!(
        hello(&mut e, [198, 51, 100, 30], 6000, "a.cdn.example.test"),
        Verdict::Held
    );
    // A forged one (the allowed name to another address): held, then reset.
    assert_eq!(
        hello(&mut e, [203, 0, 113, 20], 6001, "a.cdn.example.test"),
        Verdict::Held
    );
    e.drain_emits(&mut out);
    assert!(out.is_empty(), "nothing leaves before the answer");
    pump_until(&mut e, &mut link, "both flows decided", |e| {
        e.drain_emits(&mut out);
        out.len() >= 3
    });
    let payload_out = out
        .iter()
        .filter(|em| em.side == Side::Outside)
        .filter(|em| {
            let i = natfw_engine::wire::parse(&em.frame).unwrap();
            i.payload_len > 0
        })
        .map(|em| natfw_engine::wire::parse(&em.frame).unwrap().dst)
        .collect::<Vec<_>>();
    assert_eq!(payload_out, [ip("198.51.100.30")]);
    e.shutdown(Timestamp::now());
    let recs = sink.0.lock().unwrap();
    let good = recs.iter().find(|r| r.dst_ip == "198.51.100.30").unwrap();
    assert_eq!(good.action, "accept");
    assert_eq!(good.dns_verified.as_deref(), Some("gateway_resolution"));
    let forged = recs.iter().find(|r| r.dst_ip == "203.0.113.20").unwrap();
    assert_eq!(forged.action, "drop");
    assert_eq!(forged.dns_verified, None);
}

#[test]
fn forwarder_records_answers_per_client_and_refuses_denied_names() {
    let Some(d) = Dnsmasq::start(HOSTS, 60) else {
        return;
    };
    let mut dns = dns_cfg(&d);
    dns.forwarder = Some(ForwarderConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        refuse_denied: Some(Refusal::NxDomain),
        max_inflight: 16,
    });
    let c = config(
        vec![domain_rule(
            "no-api",
            "api.example.test",
            DomainMode::Fqdn,
            RuleAction::Drop,
        )],
        dns,
    );
    let (e, _sink) = engine(&c);
    let (svc, link) = DnsService::start(&c.dns, e.policy_handle()).unwrap();
    let fwd = svc.forwarder_addr.unwrap();
    let reply = query(fwd, "www.example.test").expect("forwarded answer");
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    // The fact for the asking client (this socket's address) was handed over before the
    // reply was sent: it is in the channel now.
    let mut facts = Vec::new();
    while let Some(u) = link.recv_timeout(Duration::from_millis(200)) {
        if let DnsUpdate::Answer {
            client,
            name,
            answers,
        } = u
        {
            facts.push((client, name, answers));
        }
    }
    let www = facts
        .iter()
        .find(|(_, n, _)| n == "www.example.test")
        .unwrap_or_else(|| panic!("{facts:?}"));
    assert_eq!(www.0, ip("127.0.0.1"));
    assert_eq!(
        www.2.iter().map(|a| a.0).collect::<Vec<_>>(),
        [ip("198.51.100.10")]
    );
    // The CNAME target is recorded too.
    assert!(facts.iter().any(|(_, n, _)| n == "shop.example.test"));
    // A name a drop rule names: NXDOMAIN, no upstream query, no fact.
    let refused = query(fwd, "api.example.test").unwrap();
    assert_eq!(refused.response_code(), ResponseCode::NXDomain);
    assert!(refused.answers().is_empty());
    assert!(link.recv_timeout(Duration::from_millis(200)).is_none());
    let st = &svc.stats;
    let g = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        (g(&st.fwd_queries), g(&st.fwd_answered), g(&st.fwd_refused)),
        (2, 1, 1)
    );
}
