//! "No application payload byte reaches the outside before the verdict is final": real captures
//! driven through the engine frame by frame, every frame the engine forwards or emits inspected.
//! The one kind of client byte that may go on while the verdict waits is the part of a TLS
//! ClientHello before its server_name extension (handshake structure, no name, no application
//! data: it keeps a finely segmented ClientHello's window open); a dropped flow sends nothing
//! from the name on.
//!
//! Captures were taken on the inside, so server replies are first turned into what arrives at the
//! outside (`Engine::to_outside_view`), as `natfw replay` does.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use natfw_engine::engine::{Emit, Engine, EngineOptions, GeoDb, Side, Verdict};
use natfw_engine::time::Timestamp;
use natfw_engine::wire::{self, PacketInfo, L4};
use natfw_flowlog::{FlowRecord, SharedRecords};
use natfw_policy::{
    Action, Config, Destination, DomainMode, DomainPattern, Mode, Protocol, Rule, RuleAction,
};

/// A shared-corpus capture, or one of ours for a name starting with `captures/`.
fn corpus(name: &str) -> PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    match name.strip_prefix("captures/") {
        Some(own) => data.join("captures").join(own),
        None => data.join("corpus").join(name),
    }
}

fn frames(name: &str) -> Vec<(Timestamp, Vec<u8>)> {
    natfw_pcap::open(&corpus(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .map(|f| {
            let f = f.unwrap_or_else(|e| panic!("{name}: {e}"));
            (f.ts, f.data)
        })
        .collect()
}

/// A frame that left the engine: by which side, and whether it was a release/RST (emit).
#[derive(Debug)]
struct Out {
    side: Side,
    frame: Vec<u8>,
    emitted: bool,
}

struct Rig {
    engine: Engine,
    sink: SharedRecords,
    out: Vec<Out>,
    verdicts: Vec<Verdict>,
}

fn private(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(a) if a.octets()[0] == 10)
}

impl Rig {
    fn new(cfg: &Config, opts: EngineOptions) -> Rig {
        let sink = SharedRecords::new("gw");
        let engine =
            Engine::with_options(cfg, GeoDb::embedded(), Box::new(sink.clone()), opts).unwrap();
        Rig {
            engine,
            sink,
            out: Vec::new(),
            verdicts: Vec::new(),
        }
    }

    /// Feed one captured frame at `t`: outbound as is, replies as seen at the outside.
    fn feed(&mut self, t: Timestamp, frame: &[u8]) -> Verdict {
        let mut f = frame.to_vec();
        let Ok(info) = wire::parse(&f) else {
            // ARP and friends: the kernel's.
            let v = self.engine.process(t, Side::Inside, &mut f);
            assert_eq!(v, Verdict::ToKernel);
            return v;
        };
        let side = if private(info.src) {
            Side::Inside
        } else {
            assert!(self.engine.to_outside_view(&mut f), "reply without a flow");
            Side::Outside
        };
        self.engine.poll(t);
        let v = self.engine.process(t, side, &mut f);
        if v == Verdict::Forward {
            self.out.push(Out {
                side: side.other(),
                frame: f,
                emitted: false,
            });
        }
        self.drain();
        self.verdicts.push(v);
        v
    }

    fn drain(&mut self) {
        let mut emits: Vec<Emit> = Vec::new();
        self.engine.drain_emits(&mut emits);
        self.out.extend(emits.into_iter().map(|e| Out {
            side: e.side,
            frame: e.frame,
            emitted: true,
        }));
    }

    fn run(&mut self, name: &str) {
        let fs = frames(name);
        let last = fs.last().map_or(Timestamp(0), |f| f.0);
        for (t, f) in &fs {
            self.feed(*t, f);
        }
        self.finish(last);
    }

    fn finish(&mut self, last: Timestamp) {
        self.engine
            .shutdown(last.add(std::time::Duration::from_secs(1)));
        self.drain();
    }

    fn records(&self) -> Vec<FlowRecord> {
        self.sink.snapshot()
    }
}

/// What left by the outside before a drop is at most, per flow, the ClientHello bytes before
/// its server_name extension: assembled in sequence order from the first byte, contiguous, all
/// of it before the name (`bytes_before_name` of exactly these bytes is all of them) and never
/// containing `domain`.
fn assert_only_before_name(capture: &str, out: &[Out], domain: &str) {
    use std::collections::HashMap;
    let mut isn: HashMap<u16, u32> = HashMap::new();
    let mut sent: HashMap<u16, Vec<(u32, Vec<u8>)>> = HashMap::new();
    for o in out.iter().filter(|o| o.side == Side::Outside) {
        let info = wire::parse(&o.frame).unwrap();
        let L4::Tcp {
            sport, seq, flags, ..
        } = info.l4
        else {
            assert_eq!(info.payload_len, 0, "{capture}: payload leaked: {o:?}");
            continue;
        };
        if flags.syn() {
            isn.insert(sport, seq);
        }
        if info.payload_len > 0 {
            let p = o.frame[info.payload_offset..info.payload_offset + info.payload_len].to_vec();
            sent.entry(sport).or_default().push((seq, p));
        }
    }
    for (port, mut segs) in sent {
        let base = isn[&port].wrapping_add(1);
        segs.sort_by_key(|(seq, _)| seq.wrapping_sub(base));
        let mut stream = Vec::new();
        for (seq, p) in segs {
            let off = seq.wrapping_sub(base) as usize;
            assert!(off <= stream.len(), "{capture}: a gap before offset {off}");
            if off + p.len() > stream.len() {
                stream.extend_from_slice(&p[stream.len() - off..]);
            }
        }
        assert_eq!(
            natfw_engine::l7::tls::bytes_before_name(&stream),
            stream.len(),
            "{capture}: bytes from the server_name extension on left before the verdict"
        );
        assert!(
            !stream.windows(domain.len()).any(|w| w == domain.as_bytes()),
            "{capture}: the name left"
        );
    }
}

fn tcp(info: &PacketInfo) -> (u32, u8) {
    match info.l4 {
        L4::Tcp { seq, flags, .. } => (seq, flags.0),
        _ => panic!("not tcp"),
    }
}

const RST: u8 = 0x04;

fn rule(name: &str, domain: &str, action: RuleAction) -> Rule {
    let pattern = match domain.strip_prefix("*.") {
        Some(s) => DomainPattern::Wildcard(s.into()),
        None => DomainPattern::Exact(domain.into()),
    };
    Rule {
        name: name.into(),
        description: String::new(),
        source: None,
        destination: Destination::Domains(vec![pattern]),
        domain_mode: DomainMode::Fqdn,
        protocol: Protocol::Any,
        ports: None,
        applications: None,
        action,
        enabled: true,
        pos: Default::default(),
    }
}

fn config(rules: Vec<Rule>, default_action: Action, mode: Mode) -> Config {
    let mut cfg = natfw_policy::config::embedded_default();
    cfg.firewall.rules = rules;
    cfg.firewall.default_action = default_action;
    cfg.firewall.mode = mode;
    cfg
}

fn eip() -> IpAddr {
    "192.0.2.1".parse().unwrap()
}

/// Drop a domain: no payload byte of the flow ever leaves by the outside, both ends get RSTs,
/// the record says drop.
fn assert_dropped(capture: &str, domain: &str, server: &str, proto: &str) {
    let cfg = config(
        vec![rule("block", domain, RuleAction::Drop)],
        Action::Accept,
        Mode::Loose,
    );
    let mut rig = Rig::new(&cfg, EngineOptions::default());
    rig.run(capture);
    let server: IpAddr = server.parse().unwrap();
    let mut rst_in = 0;
    let mut rst_out = 0;
    for o in &rig.out {
        let info = wire::parse(&o.frame).unwrap();
        assert!(wire::verify_checksums(&o.frame, &info), "bad checksum");
        match o.side {
            Side::Outside => {
                assert_eq!(info.dst, server);
                assert_eq!(info.src, eip(), "left untranslated");
                if proto == "tcp" && tcp(&info).1 & RST != 0 && o.emitted {
                    rst_out += 1;
                }
            }
            Side::Inside => {
                if proto == "tcp" && tcp(&info).1 & RST != 0 && o.emitted {
                    assert_eq!(info.src, server);
                    assert!(private(info.dst));
                    rst_in += 1;
                }
            }
        }
    }
    assert_only_before_name(capture, &rig.out, domain.trim_start_matches("*."));
    let recs = rig.records();
    let flows: Vec<_> = recs
        .iter()
        .filter(|r| r.dst_ip == server.to_string() && r.ip_protocol == proto)
        .collect();
    assert!(!flows.is_empty());
    for r in &flows {
        assert_eq!(r.action, "drop", "{r:?}");
        assert_eq!(r.end_reason, "denied", "{r:?}");
        assert_eq!(r.acl_rule_id.as_deref(), Some("block"));
        assert_eq!(r.app_dpi_state, "policy_discard");
        assert!(
            r.reason.starts_with("matched rule block (domain "),
            "{}",
            r.reason
        );
    }
    if proto == "tcp" {
        assert_eq!(rst_in, flows.len(), "{capture}: one RST to each client");
        assert_eq!(rst_out, flows.len(), "{capture}: one RST to each server");
    }
    assert_eq!(rig.engine.flow_count(), 0);
}

#[test]
fn dropped_tls_sni_never_leaks() {
    assert_dropped("https_curl.pcap", "api.vendor.test", "203.0.113.10", "tcp");
}

#[test]
fn dropped_two_segment_chromium_hello_never_leaks() {
    assert_dropped(
        "https_chromium.pcap",
        "*.example.test",
        "198.51.100.10",
        "tcp",
    );
}

#[test]
fn dropped_out_of_order_hello_never_leaks() {
    assert_dropped(
        "tls_out_of_order.pcap",
        "ooo.vendor.test",
        "203.0.113.31",
        "tcp",
    );
}

#[test]
fn dropped_http_host_never_leaks() {
    assert_dropped(
        "http_curl.pcap",
        "shop.example.test",
        "198.51.100.10",
        "tcp",
    );
}

#[test]
fn dropped_quic_sni_never_leaks() {
    assert_dropped(
        "quic_aioquic.pcap",
        "h3.example.test",
        "198.51.100.30",
        "udp",
    );
}

/// Accept a domain under a default drop (so the verdict is pending until the name is seen): the
/// payload that leaves is exactly the client's stream, held bytes released once and in order.
fn assert_released_exactly(capture: &str, domain: &str, server: &str, expect_hold: bool) {
    let cfg = config(
        vec![rule("allow", domain, RuleAction::Accept)],
        Action::Drop,
        Mode::Loose,
    );
    let mut rig = Rig::new(&cfg, EngineOptions::default());
    let fs = frames(capture);
    let server: IpAddr = server.parse().unwrap();

    // The client streams per source port, from the capture: (isn, bytes by offset).
    let mut expected: std::collections::BTreeMap<u16, (u32, Vec<Option<u8>>)> = Default::default();
    for (_, f) in &fs {
        let Ok(info) = wire::parse(f) else { continue };
        let L4::Tcp {
            sport, seq, flags, ..
        } = info.l4
        else {
            continue;
        };
        if !private(info.src) {
            continue;
        }
        if flags.syn() {
            expected.insert(sport, (seq.wrapping_add(1), Vec::new()));
        }
        let (isn, bytes) = expected.get_mut(&sport).unwrap();
        let off = seq.wrapping_sub(*isn) as usize;
        for (i, b) in info.payload(f).iter().enumerate() {
            if bytes.len() <= off + i {
                bytes.resize(off + i + 1, None);
            }
            bytes[off + i] = Some(*b);
        }
    }

    let mut held_any = false;
    for (t, f) in &fs {
        if rig.feed(*t, f) == Verdict::Held {
            held_any = true;
        }
    }
    rig.finish(fs.last().unwrap().0);
    // Held only when identification needs more than the segment at hand.
    assert_eq!(held_any, expect_hold, "{capture}");

    // What left by the outside, per translated source port.
    let recs = rig.records();
    for r in recs.iter().filter(|r| r.dst_ip == server.to_string()) {
        assert_eq!(r.action, "accept", "{r:?}");
        assert_eq!(r.acl_rule_id.as_deref(), Some("allow"));
        let (isn, want) = &expected[&r.src_port.unwrap()];
        let snat_port = r.snat_port.unwrap();
        let mut got: Vec<Option<u8>> = Vec::new();
        let mut released: Vec<(u32, usize)> = Vec::new();
        for o in rig.out.iter().filter(|o| o.side == Side::Outside) {
            let info = wire::parse(&o.frame).unwrap();
            assert!(wire::verify_checksums(&o.frame, &info));
            let L4::Tcp { sport, seq, .. } = info.l4 else {
                continue;
            };
            if sport != snat_port || info.payload_len == 0 {
                continue;
            }
            assert_eq!(info.src, eip());
            let off = seq.wrapping_sub(*isn) as usize;
            if o.emitted {
                released.push((seq.wrapping_sub(*isn), info.payload_len));
            }
            for (i, b) in info.payload(&o.frame).iter().enumerate() {
                if got.len() <= off + i {
                    got.resize(off + i + 1, None);
                }
                if let Some(prev) = got[off + i] {
                    assert_eq!(prev, *b, "{capture}: different bytes at offset {}", off + i);
                }
                got[off + i] = Some(*b);
            }
        }
        assert_eq!(!released.is_empty(), expect_hold, "{capture}: {released:?}");
        // Released in order, each byte once.
        for w in released.windows(2) {
            assert!(
                w[0].0 as usize + w[0].1 <= w[1].0 as usize,
                "{capture}: {released:?}"
            );
        }
        assert_eq!(&got, want, "{capture}: the outside saw a different stream");
    }
}

#[test]
fn accepted_tls_released_exactly_once_in_order() {
    assert_released_exactly("https_curl.pcap", "api.vendor.test", "203.0.113.10", false);
}

#[test]
fn accepted_chromium_two_segments_released_in_order() {
    assert_released_exactly(
        "https_chromium.pcap",
        "www.pq.example.test",
        "198.51.100.10",
        true,
    );
}

#[test]
fn accepted_out_of_order_hello_released_in_order() {
    assert_released_exactly(
        "tls_out_of_order.pcap",
        "ooo.vendor.test",
        "203.0.113.31",
        true,
    );
}

#[test]
fn accepted_http_released_exactly() {
    assert_released_exactly(
        "http_curl.pcap",
        "shop.example.test",
        "198.51.100.10",
        false,
    );
}

/// 20,000 SYNs with no replies, while an established TLS flow is in the middle of its life:
/// the table stays bounded, the flood ages out, the established flow keeps working, and every
/// flow gets exactly one record.
#[test]
fn syn_flood_bounded_established_flow_survives() {
    let cfg = config(vec![], Action::Accept, Mode::Loose);
    let opts = EngineOptions {
        max_flows: 4_096,
        ..EngineOptions::default()
    };
    let mut rig = Rig::new(&cfg, opts);
    let curl = frames("https_curl.pcap");
    let flood = frames("syn_flood.pcap");
    assert_eq!(flood.len(), 20_000);
    let t0 = Timestamp::from_secs(1_000_000);
    let mut t = t0;
    let tick = |t: &mut Timestamp| {
        *t = t.add(std::time::Duration::from_micros(50));
        *t
    };
    // Handshake and ClientHello of the curl flow first.
    let (head, tail) = curl.split_at(4);
    for (_, f) in head {
        let now = tick(&mut t);
        assert_eq!(rig.feed(now, f), Verdict::Forward);
    }
    let mut max_flows = 0;
    for (_, f) in &flood {
        let now = tick(&mut t);
        rig.feed(now, f);
        max_flows = max_flows.max(rig.engine.flow_count());
    }
    assert!(max_flows <= 4_096);
    let st = rig.engine.stats();
    assert!(st.evictions >= 15_000, "{st:?}");
    for (_, f) in tail {
        let now = tick(&mut t);
        assert_eq!(
            rig.feed(now, f),
            Verdict::Forward,
            "established flow broken"
        );
    }
    // The flood's embryonic flows time out.
    rig.engine.poll(t.add(std::time::Duration::from_secs(31)));
    let recs = rig.records();
    let curl_recs: Vec<_> = recs.iter().filter(|r| r.dst_ip == "203.0.113.10").collect();
    assert_eq!(curl_recs.len(), 1);
    assert_eq!(curl_recs[0].domain.as_deref(), Some("api.vendor.test"));
    assert_eq!(curl_recs[0].action, "accept");
    let flood_recs: Vec<_> = recs.iter().filter(|r| r.dst_ip == "203.0.113.5").collect();
    let s = rig.engine.stats();
    // A few random SYNs repeat a tuple while it is still tracked (a retransmission, no new flow).
    assert!(s.flows_created > 19_900);
    assert_eq!(
        flood_recs.len() as u64 + 1,
        s.flows_created,
        "one record per flow"
    );
    assert!(flood_recs.iter().all(
        |r| r.app_dpi_state == "tcp_not_establish" && r.app_name.as_deref() == Some("Unknown")
    ));
    assert!(flood_recs
        .iter()
        .all(|r| r.end_reason == "evicted" || r.end_reason == "timeout"));
    assert_eq!(rig.engine.flow_count(), 0);
    assert_eq!(
        s.flows_ended_evicted + s.flows_ended_timeout + s.flows_ended_fin + s.flows_ended_rst,
        s.flows_created
    );
}

/// A ClientHello whose second segment never arrives: the flow is pending, its payload held; at
/// the identification timeout the domain is unidentifiable and the mode decides.
#[test]
fn incomplete_hello_times_out_into_unidentifiable() {
    for (mode, state) in [
        (Mode::Loose, "unknown_loose"),
        (Mode::Strict, "unknown_strict"),
    ] {
        let cfg = config(
            vec![rule("allow", "www.pq.example.test", RuleAction::Accept)],
            Action::Drop,
            mode,
        );
        let mut rig = Rig::new(&cfg, EngineOptions::default());
        let fs = frames("https_chromium.pcap");
        // The first connection's handshake and the first ClientHello segment only.
        let first = wire::parse(&fs[0].1).unwrap();
        let L4::Tcp { sport, .. } = first.l4 else {
            panic!()
        };
        let mut fed_payload = 0;
        let mut last = fs[0].0;
        for (t, f) in &fs {
            let Ok(info) = wire::parse(f) else { continue };
            let L4::Tcp {
                sport: s, dport, ..
            } = info.l4
            else {
                continue;
            };
            if s != sport && dport != sport {
                continue;
            }
            if info.payload_len > 0 {
                if fed_payload == 1 || !private(info.src) {
                    break;
                }
                fed_payload += 1;
                assert_eq!(rig.feed(*t, f), Verdict::Held);
            } else {
                rig.feed(*t, f);
            }
            last = *t;
        }
        assert_eq!(fed_payload, 1);
        assert!(rig.records().is_empty(), "decided too early");
        rig.engine.poll(last.add(std::time::Duration::from_secs(6)));
        rig.drain();
        let recs = rig.records();
        assert_eq!(recs.len(), 1, "{recs:?}");
        let r = &recs[0];
        assert_eq!(r.action, "drop");
        assert_eq!(r.domain, None);
        assert!(r.reason.contains("timed out"), "{}", r.reason);
        assert_eq!(r.app_dpi_state, state, "{r:?}");
        assert_only_before_name("https_chromium.pcap", &rig.out, "www.pq.example.test");
        // Both ends were reset; the server's RST follows the ClientHello bytes sent before the
        // name (the first segment lies wholly before server_name and went on at once).
        let (mut syn, mut released_end, mut rst_seq) = (None, None, Vec::new());
        for o in &rig.out {
            let info = wire::parse(&o.frame).unwrap();
            let (seq, flags) = tcp(&info);
            match o.side {
                Side::Outside if flags & 0x02 != 0 => syn = Some(seq),
                Side::Outside if o.emitted && info.payload_len > 0 => {
                    released_end = Some(seq.wrapping_add(info.payload_len as u32))
                }
                _ if o.emitted && flags & RST != 0 => rst_seq.push((o.side, seq)),
                _ => {}
            }
        }
        assert_eq!(rst_seq.len(), 2, "{rst_seq:?}");
        let expected = released_end.unwrap_or(syn.unwrap().wrapping_add(1));
        assert!(rst_seq.contains(&(Side::Outside, expected)), "{rst_seq:?}");
    }
}

#[test]
fn dropped_h2c_prior_knowledge_authority_never_leaks() {
    assert_dropped(
        "captures/h2c_prior_knowledge.pcap",
        "h2.example.test",
        "198.51.100.80",
        "tcp",
    );
}

#[test]
fn dropped_h2c_upgrade_host_never_leaks() {
    assert_dropped(
        "captures/h2c_upgrade.pcap",
        "up.example.test",
        "198.51.100.80",
        "tcp",
    );
}

/// Client streams of a capture by client port: (client ISN + 1, bytes).
fn client_streams(fs: &[(Timestamp, Vec<u8>)]) -> std::collections::BTreeMap<u16, (u32, Vec<u8>)> {
    let mut out: std::collections::BTreeMap<u16, (u32, Vec<u8>)> = Default::default();
    for (_, f) in fs {
        let Ok(info) = wire::parse(f) else { continue };
        let L4::Tcp {
            sport, seq, flags, ..
        } = info.l4
        else {
            continue;
        };
        if !private(info.src) {
            continue;
        }
        if flags.syn() {
            out.insert(sport, (seq.wrapping_add(1), Vec::new()));
            continue;
        }
        let Some((isn, bytes)) = out.get_mut(&sport) else {
            continue;
        };
        let off = seq.wrapping_sub(*isn) as usize;
        let p = info.payload(f);
        if p.is_empty() {
            continue;
        }
        if off + p.len() > bytes.len() {
            bytes.resize(off + p.len(), 0);
        }
        bytes[off..off + p.len()].copy_from_slice(p);
    }
    out
}

/// Offset of the TLS ClientHello that follows the plaintext negotiation.
fn hello_offset(stream: &[u8]) -> usize {
    (1..stream.len().saturating_sub(1))
        .find(|&i| stream[i - 1] == b'\n' && stream[i] == 0x16 && stream[i + 1] == 0x03)
        .expect("a ClientHello after the negotiation")
}

/// STARTTLS to a denied domain: the plaintext negotiation went out (the server had to answer
/// it), but not one byte of the ClientHello or after it; both ends are reset, the record says
/// drop with the SNI and the mail/file protocol.
fn assert_starttls_dropped(capture: &str, domain: &str, server: &str, app: &str) {
    let cfg = config(
        vec![rule("block", domain, RuleAction::Drop)],
        Action::Accept,
        Mode::Loose,
    );
    let mut rig = Rig::new(&cfg, EngineOptions::default());
    let fs = frames(capture);
    let streams = client_streams(&fs);
    rig.run(capture);
    let server: IpAddr = server.parse().unwrap();
    let recs = rig.records();
    let flows: Vec<_> = recs
        .iter()
        .filter(|r| r.dst_ip == server.to_string() && r.domain.as_deref() == Some(domain))
        .collect();
    assert!(
        !flows.is_empty(),
        "{capture}: no flow named {domain}: {recs:?}"
    );
    for r in &flows {
        assert_eq!(r.action, "drop", "{r:?}");
        assert_eq!(r.acl_rule_id.as_deref(), Some("block"));
        assert_eq!(r.domain_source.as_deref(), Some("sni"));
        assert_eq!(r.app_name.as_deref(), Some(app));
        let (isn, stream) = &streams[&r.src_port.unwrap()];
        let limit = hello_offset(stream);
        let snat_port = r.snat_port.unwrap();
        let mut plain_out = 0;
        let mut rst_out = 0;
        for o in rig.out.iter().filter(|o| o.side == Side::Outside) {
            let info = wire::parse(&o.frame).unwrap();
            let L4::Tcp {
                sport, seq, flags, ..
            } = info.l4
            else {
                continue;
            };
            if sport != snat_port {
                continue;
            }
            if flags.rst() && o.emitted {
                rst_out += 1;
            }
            if info.payload_len == 0 {
                continue;
            }
            let end = seq.wrapping_sub(*isn) as usize + info.payload_len;
            assert!(
                end <= limit,
                "{capture}: client bytes up to {end} left, the ClientHello starts at {limit}"
            );
            plain_out += info.payload_len;
        }
        assert!(plain_out > 0, "{capture}: the negotiation must pass");
        assert_eq!(rst_out, 1, "{capture}: one RST to the server");
        let rst_in = rig
            .out
            .iter()
            .filter(|o| o.side == Side::Inside && o.emitted)
            .filter(|o| {
                let info = wire::parse(&o.frame).unwrap();
                matches!(info.l4, L4::Tcp { dport, flags, .. } if flags.rst() && dport == r.src_port.unwrap())
            })
            .count();
        assert_eq!(rst_in, 1, "{capture}: one RST to the client");
    }
}

#[test]
fn dropped_smtp_starttls_domain_never_leaks_the_hello() {
    assert_starttls_dropped(
        "captures/smtp_starttls.pcap",
        "mx.example.test",
        "203.0.113.25",
        "SMTP",
    );
    assert_starttls_dropped(
        "captures/smtp_starttls.pcap",
        "relay.example.test",
        "203.0.113.25",
        "SMTP",
    );
}

#[test]
fn dropped_imap_pop3_ftp_starttls_domains_never_leak_the_hello() {
    assert_starttls_dropped(
        "captures/imap_starttls.pcap",
        "imap.example.test",
        "203.0.113.143",
        "IMAP",
    );
    assert_starttls_dropped(
        "captures/pop3_stls.pcap",
        "pop.example.test",
        "203.0.113.110",
        "POP3",
    );
    assert_starttls_dropped(
        "captures/ftp_auth_tls.pcap",
        "ftp.example.test",
        "203.0.113.21",
        "FTP",
    );
}

/// Accepted STARTTLS under a default drop: the negotiation passes while pending, the ClientHello
/// waits for the verdict, then the stream leaves complete, each byte once.
#[test]
fn accepted_starttls_stream_leaves_complete() {
    let cfg = config(
        vec![rule("allow", "mx.example.test", RuleAction::Accept)],
        Action::Drop,
        Mode::Loose,
    );
    let mut rig = Rig::new(&cfg, EngineOptions::default());
    let capture = "captures/smtp_starttls.pcap";
    let fs = frames(capture);
    let streams = client_streams(&fs);
    rig.run(capture);
    let recs = rig.records();
    let r = recs
        .iter()
        .find(|r| r.domain.as_deref() == Some("mx.example.test"))
        .expect("the port-25 session");
    assert_eq!(r.action, "accept", "{r:?}");
    assert_eq!(r.domain_source.as_deref(), Some("sni"));
    let (isn, want) = &streams[&r.src_port.unwrap()];
    let mut got: Vec<Option<u8>> = vec![None; want.len()];
    for o in rig.out.iter().filter(|o| o.side == Side::Outside) {
        let info = wire::parse(&o.frame).unwrap();
        let L4::Tcp { sport, seq, .. } = info.l4 else {
            continue;
        };
        if sport != r.snat_port.unwrap() {
            continue;
        }
        let off = seq.wrapping_sub(*isn) as usize;
        for (i, b) in info.payload(&o.frame).iter().enumerate() {
            if let Some(prev) = got[off + i] {
                assert_eq!(prev, *b);
            }
            got[off + i] = Some(*b);
        }
    }
    let missing: Vec<usize> = (0..got.len()).filter(|&i| got[i].is_none()).collect();
    assert!(
        missing.is_empty(),
        "the outside missed {} bytes from {:?} of {}; verdicts {:?}",
        missing.len(),
        missing.first(),
        got.len(),
        rig.verdicts
    );
    let got: Vec<u8> = got.into_iter().map(Option::unwrap).collect();
    assert_eq!(&got, want);
    // The other session (relay.example.test) is not allowed: default drop.
    let other = recs
        .iter()
        .find(|r| r.domain.as_deref() == Some("relay.example.test"))
        .expect("the port-2525 session");
    assert_eq!(other.action, "drop");
}

/// An accepted h2c connection that opens a second stream naming another authority: the frame
/// carrying it never reaches the server; the connection is reset.
#[test]
fn h2c_second_authority_is_cut_off() {
    smuggle(
        "captures/h2c_prior_knowledge.pcap",
        "h2.example.test",
        "198.51.100.80",
        &[],
    );
}

/// After an `Upgrade: h2c` request accepted on its Host and the server's `101`, the client's
/// HTTP/2 bytes (the capture's real preface, SETTINGS and PRIORITY frames, then a crafted
/// HEADERS for another authority) are watched the same way.
#[test]
fn h2c_upgrade_cannot_smuggle_another_authority() {
    smuggle(
        "captures/h2c_upgrade.pcap",
        "up.example.test",
        "198.51.100.80",
        &[],
    );
}

/// Replay `capture` under "allow `domain`, default drop", with a crafted client segment after
/// the client's last data segment: `prefix`, then a HEADERS frame on a new stream naming
/// another authority.
fn smuggle(capture: &str, domain: &str, server: &str, prefix: &[u8]) {
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
    let cfg = config(
        vec![rule("allow", domain, RuleAction::Accept)],
        Action::Drop,
        Mode::Loose,
    );
    let fs = frames(capture);
    // The client's last data segment: the smuggled request follows it.
    let (t_last, last) = fs
        .iter()
        .rev()
        .find(|(_, f)| {
            let i = wire::parse(f).unwrap();
            private(i.src) && i.payload_len > 0
        })
        .cloned()
        .expect("a client data segment");
    let p = SlicedPacket::from_ethernet(&last).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
        panic!("ipv4")
    };
    let Some(TransportSlice::Tcp(tcp)) = p.transport else {
        panic!("tcp")
    };
    // A HEADERS frame on stream 3, literals without indexing (valid in any HPACK state).
    let mut block = vec![0x82, 0x86, 0x84]; // :method GET, :scheme http, :path /
    block.push(0x01); // :authority, literal without indexing, indexed name 1
    let evil = b"evil.example.test";
    block.push(evil.len() as u8);
    block.extend_from_slice(evil);
    let mut frame = prefix.to_vec();
    frame.extend_from_slice(&(block.len() as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(&[1, 0x5, 0, 0, 0, 3]);
    frame.extend_from_slice(&block);
    let eth = etherparse::Ethernet2Header::from_slice(&last).unwrap().0;
    let b = PacketBuilder::ethernet2(eth.source, eth.destination)
        .ipv4(ip.header().source(), ip.header().destination(), 64)
        .tcp(
            tcp.source_port(),
            tcp.destination_port(),
            tcp.sequence_number()
                .wrapping_add(tcp.payload().len() as u32),
            tcp.window_size(),
        )
        .ack(tcp.acknowledgment_number())
        .psh();
    let mut smuggled = Vec::new();
    b.write(&mut smuggled, &frame).unwrap();

    let mut rig = Rig::new(&cfg, EngineOptions::default());
    let mut fed_smuggled = false;
    for (t, f) in &fs {
        rig.feed(*t, f);
        if f == &last && !fed_smuggled {
            let v = rig.feed(t_last, &smuggled);
            assert_eq!(v, Verdict::Drop(natfw_engine::engine::DropReason::Policy));
            fed_smuggled = true;
        }
    }
    rig.finish(fs.last().unwrap().0);
    assert!(fed_smuggled);
    // The smuggled bytes never left.
    for o in rig.out.iter().filter(|o| o.side == Side::Outside) {
        let info = wire::parse(&o.frame).unwrap();
        let p = info.payload(&o.frame);
        assert!(
            !p.windows(evil.len()).any(|w| w == evil),
            "the smuggled request left"
        );
    }
    let recs = rig.records();
    let r = recs
        .iter()
        .find(|r| r.dst_ip == server && r.src_port == Some(tcp.source_port()))
        .expect("record of the smuggling connection");
    assert_eq!(r.action, "drop", "{r:?}");
    assert_eq!(r.domain.as_deref(), Some(domain));
    assert!(r.reason.contains("another authority"), "{}", r.reason);
    // Both ends were reset.
    assert!(rig.out.iter().any(|o| o.emitted && o.side == Side::Outside));
    assert!(rig.out.iter().any(|o| o.emitted && o.side == Side::Inside));
}

/// A CNAME chain (www.shop → shop.cdn → edge.cdn → two addresses), resolved through the
/// gateway by the client, then a flow to one of the addresses by IP (no name sent): the record
/// carries the name the client asked for, and a `dns`-mode rule for the asked name or for any
/// CNAME target decides the flow.
#[test]
fn cname_chain_names_the_flow_by_the_asked_name_and_every_name_matches() {
    for (capture, edge) in [
        ("captures/dns_cname_asked.pcap", "203.0.113.60"),
        ("captures/dns_tcp_cname.pcap", "203.0.113.61"),
    ] {
        for (name, want) in [
            ("www.shop.example.test", "accept"),
            ("shop.cdn.example.test", "accept"),
            ("edge.cdn.example.test", "accept"),
            ("other.example.test", "drop"),
        ] {
            let allow_dns = Rule {
                name: "dns".into(),
                applications: Some(vec![natfw_policy::App::Dns]),
                destination: Destination::Any,
                action: RuleAction::Accept,
                ..rule("dns", "x.test", RuleAction::Accept)
            };
            let by_name = Rule {
                domain_mode: DomainMode::Dns,
                ..rule("web", name, RuleAction::Accept)
            };
            let cfg = config(vec![allow_dns, by_name], Action::Drop, Mode::Loose);
            let mut rig = Rig::new(&cfg, EngineOptions::default());
            rig.run(capture);
            let recs = rig.records();
            let r = recs
                .iter()
                .find(|r| r.dst_ip == edge)
                .unwrap_or_else(|| panic!("{capture}: no record for {edge}: {recs:?}"));
            assert_eq!(r.domain.as_deref(), Some("www.shop.example.test"), "{r:?}");
            assert_eq!(r.domain_source.as_deref(), Some("dns"));
            assert_eq!(r.action, want, "{capture}, rule for {name}: {r:?}");
            if want == "accept" {
                assert_eq!(r.acl_rule_id.as_deref(), Some("web"));
            }
            let q = recs
                .iter()
                .find(|r| r.app_name.as_deref() == Some("DNS"))
                .unwrap();
            assert_eq!(q.action, "accept");
            assert_eq!(q.domain.as_deref(), Some("www.shop.example.test"));
        }
    }
}
