//! Several packet workers, one engine each (`EngineOptions::worker`): every packet has exactly
//! one owner by port residue, SNAT ports keep the owner's residue so replies come back to it,
//! copies the steering program hands every worker (fragments, ICMP errors) are kept by their
//! owner only and counted apart by the others, and a DNS answer that crossed one worker is a
//! fact for the flows the others see.

use std::net::IpAddr;

use etherparse::PacketBuilder;
use natfw_engine::engine::{
    DropReason, Engine, EngineOptions, GeoDb, NullSink, Side, Verdict, WorkerSlot,
};
use natfw_engine::time::Timestamp;
use natfw_engine::wire;

use super::frag::{fragment_v4, udp};
use super::nat::{dns_answer, dns_query, drop_port_rule};

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
const EIP: [u8; 4] = [192, 0, 2, 1];
const SERVER: [u8; 4] = [203, 0, 113, 5];

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(2_000_000 + ms)
}

/// `count` engines sharing the first one's compiled policy, as the gateway runs them.
fn workers(cfg: &natfw_policy::Config, count: u16) -> Vec<Engine> {
    let mut out: Vec<Engine> = (0..count)
        .map(|i| {
            let opts = EngineOptions {
                worker: WorkerSlot::new(i, count).unwrap(),
                ..EngineOptions::default()
            };
            Engine::with_options(cfg, GeoDb::embedded(), Box::new(NullSink), opts).unwrap()
        })
        .collect();
    let policy = out[0].policy_handle();
    for e in &mut out[1..] {
        e.share_policy(std::sync::Arc::clone(&policy));
    }
    out
}

fn syn(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 100, 64_000)
        .syn()
        .write(&mut out, &[])
        .unwrap();
    out
}

fn ports(frame: &[u8]) -> (u16, u16) {
    let info = wire::parse(frame).unwrap();
    assert!(wire::verify_checksums(frame, &info));
    info.ports().unwrap()
}

/// Give every engine a copy of `frame`; returns the verdicts.
fn to_all(es: &mut [Engine], now: Timestamp, side: Side, frame: &[u8]) -> Vec<Verdict> {
    es.iter_mut()
        .map(|e| e.process(now, side, &mut frame.to_vec()))
        .collect()
}

#[test]
fn each_packet_has_one_owner_and_snat_ports_keep_its_residue() {
    let cfg = natfw_policy::config::embedded_default();
    for count in [2u16, 3] {
        let mut es = workers(&cfg, count);
        // Two clients on the same source port to the same server: the second needs another
        // port, of the same residue.
        for (host, sport) in [([10, 0, 0, 1], 40_001u16), ([10, 0, 0, 2], 40_001)] {
            let owner = usize::from(sport % count);
            let mut out = Vec::new();
            for (i, e) in es.iter_mut().enumerate() {
                let mut f = syn(host, SERVER, sport, 443);
                let v = e.process(t(0), Side::Inside, &mut f);
                if i == owner {
                    assert_eq!(v, Verdict::Forward);
                    out = f;
                } else {
                    assert_eq!(v, Verdict::Drop(DropReason::OtherWorker));
                }
            }
            let (eport, _) = ports(&out);
            assert_eq!(eport % count, sport % count, "count {count}");
            // The SYN-ACK to EIP:eport: its owner is the same worker.
            let mut back = Vec::new();
            PacketBuilder::ethernet2(MAC_A, MAC_B)
                .ipv4(SERVER, EIP, 64)
                .tcp(443, eport, 500, 64_000)
                .syn()
                .ack(101)
                .write(&mut back, &[])
                .unwrap();
            let vs = to_all(&mut es, t(1), Side::Outside, &back);
            for (i, v) in vs.iter().enumerate() {
                if i == owner {
                    assert_eq!(*v, Verdict::Forward);
                } else {
                    assert_eq!(*v, Verdict::Drop(DropReason::OtherWorker));
                }
            }
        }
        let total: u64 = es.iter().map(|e| e.flow_count() as u64).sum();
        assert_eq!(total, 2);
        for e in &es {
            // Only other workers' copies: no drop counter moved.
            let s = e.stats();
            assert_eq!(s.drop_no_flow.packets + s.drop_policy.packets, 0);
        }
    }
}

#[test]
fn fragments_and_icmp_errors_given_to_every_worker_are_kept_by_the_owner() {
    let cfg = natfw_policy::config::embedded_default();
    let mut es = workers(&cfg, 2);
    // A fragmented UDP datagram from an odd port: worker 1's.
    let d = udp([10, 0, 0, 1], SERVER, 40_001, 9999, &[7u8; 200]);
    let frags = fragment_v4(&d, 64, 0x77);
    let mut eport = 0;
    for (i, e) in es.iter_mut().enumerate() {
        let mut vs = Vec::new();
        for f in &frags {
            vs.push(e.process(t(0), Side::Inside, &mut f.clone()));
        }
        let mut out = Vec::new();
        e.drain_emits(&mut out);
        if i == 1 {
            assert_eq!(out.len(), 1, "the owner sends the datagram");
            assert_eq!(out[0].side, Side::Outside);
            eport = ports(&out[0].frame).0;
            assert_eq!(eport % 2, 1);
        } else {
            assert!(out.is_empty());
            assert_eq!(*vs.last().unwrap(), Verdict::Drop(DropReason::OtherWorker));
            assert_eq!(e.stats().other_worker.packets, 1);
            assert_eq!(e.flow_count(), 0);
        }
    }
    // The server's port unreachable for what worker 1 sent (quoting EIP:eport).
    let mut quoted = udp(EIP, SERVER, eport, 9999, b"x");
    quoted.truncate(14 + 28);
    let mut err = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(SERVER, EIP, 64)
        .icmpv4_raw(3, 3, [0; 4])
        .write(&mut err, &quoted[14..])
        .unwrap();
    let vs = to_all(&mut es, t(1), Side::Outside, &err);
    assert_eq!(vs[1], Verdict::Forward, "port {eport}");
    assert_eq!(vs[0], Verdict::Drop(DropReason::OtherWorker));
}

#[test]
fn a_dns_answer_on_one_worker_is_a_fact_on_the_others() {
    let resolver = [198, 51, 100, 53];
    let mut c = natfw_policy::config::embedded_default();
    c.firewall.rules = vec![natfw_policy::Rule {
        destination: natfw_policy::Destination::Domains(vec![natfw_policy::DomainPattern::Exact(
            "shop.example.test".into(),
        )]),
        domain_mode: natfw_policy::DomainMode::Dns,
        protocol: natfw_policy::Protocol::Any,
        ports: None,
        name: "no-shop".into(),
        ..drop_port_rule(0)
    }];
    let mut es = workers(&c, 2);
    // Query from an even port (worker 0), answer back to it.
    let shared = ask(&mut es[0], resolver);
    assert_eq!(shared.len(), 1);
    assert_eq!(shared[0].addr, IpAddr::from(SERVER));
    // Without the fact, worker 1 would accept the client's connection to that address.
    let mut lone = workers(&c, 2).remove(1);
    let mut f = syn([10, 0, 0, 7], SERVER, 6001, 443);
    assert_eq!(lone.process(t(2), Side::Inside, &mut f), Verdict::Forward);
    // With it, the dns-mode rule drops it.
    for s in &shared {
        es[1].learn_shared_answer(t(2), s);
    }
    let mut f = syn([10, 0, 0, 7], SERVER, 6001, 443);
    assert_eq!(
        es[1].process(t(3), Side::Inside, &mut f),
        Verdict::Drop(DropReason::Policy)
    );
    assert_eq!(es[1].stats().dns_answers_shared, 1);
    // A single worker shares nothing.
    let mut one = workers(&c, 1);
    assert!(ask(&mut one[0], resolver).is_empty());
}

/// The client 10.0.0.7 asks `resolver` for shop.example.test (from port 5000) through `e` and
/// gets SERVER back; returns what `e` has to share.
fn ask(e: &mut Engine, resolver: [u8; 4]) -> Vec<natfw_engine::engine::worker::SharedAnswer> {
    let mut q = udp(
        [10, 0, 0, 7],
        resolver,
        5000,
        53,
        &dns_query("shop.example.test"),
    );
    assert_eq!(e.process(t(0), Side::Inside, &mut q), Verdict::Forward);
    let (qport, _) = ports(&q);
    let mut a = udp(
        resolver,
        EIP,
        53,
        qport,
        &dns_answer("shop.example.test", SERVER),
    );
    assert_eq!(e.process(t(1), Side::Outside, &mut a), Verdict::Forward);
    let mut shared = Vec::new();
    e.drain_shared_answers(&mut shared);
    shared
}
