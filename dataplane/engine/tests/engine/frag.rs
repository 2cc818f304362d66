//! IP fragments through the engine: a fragmented DNS query going out and a fragmented answer
//! coming back (real DNS payloads from the corpus) are reassembled, translated and emitted whole
//! with valid checksums; oversized datagrams and malformed fragments are counted drops; a
//! fragment flood stays within the reassembly bounds while an established flow keeps working.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use etherparse::PacketBuilder;
use natfw_engine::engine::{
    DropReason, Emit, Engine, EngineOptions, FragConfig, GeoDb, NullSink, Side, Verdict,
};
use natfw_engine::time::Timestamp;
use natfw_engine::wire::{self, ipv4};

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
const CLIENT: [u8; 4] = [10, 0, 0, 1];
const EIP: [u8; 4] = [192, 0, 2, 1];
const SERVER: [u8; 4] = [203, 0, 113, 5];

fn engine(opts: EngineOptions) -> Engine {
    let c = natfw_policy::config::embedded_default();
    Engine::with_options(&c, GeoDb::embedded(), Box::new(NullSink), opts).unwrap()
}

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(1_000_000 + ms)
}

/// UDP payloads (query, answer) of the corpus DNS exchange.
fn dns_payloads() -> (Vec<u8>, Vec<u8>) {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/corpus/dns_query.pcap");
    let mut r = pcap_file::pcap::PcapReader::new(std::fs::File::open(p).unwrap()).unwrap();
    let mut udp = Vec::new();
    while let Some(pkt) = r.next_packet() {
        let f = pkt.unwrap().data.into_owned();
        let Ok(info) = wire::parse(&f) else { continue };
        if info.ports().is_some_and(|(s, d)| s == 53 || d == 53) && info.payload_len > 0 {
            let (s, _) = info.ports().unwrap();
            udp.push((
                s == 53,
                f[info.payload_offset..][..info.payload_len].to_vec(),
            ));
        }
    }
    let q = udp.iter().find(|(ans, _)| !ans).unwrap().1.clone();
    let a = udp.iter().find(|(ans, _)| *ans).unwrap().1.clone();
    (q, a)
}

pub(super) fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut out, data)
        .unwrap();
    out
}

/// Split an unfragmented IPv4 frame into fragments of `chunk` bytes (a multiple of 8), with
/// IP identification `id`.
pub(super) fn fragment_v4(frame: &[u8], chunk: usize, id: u16) -> Vec<Vec<u8>> {
    let info = wire::parse(frame).unwrap();
    let hdr = &frame[..info.l4_offset];
    let data = &frame[info.l4_offset..info.ip_end];
    let l3 = info.l3_offset;
    data.chunks(chunk)
        .enumerate()
        .map(|(i, c)| {
            let mut f = hdr.to_vec();
            f.extend_from_slice(c);
            let total = (f.len() - l3) as u16;
            f[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
            f[l3 + 4..l3 + 6].copy_from_slice(&id.to_be_bytes());
            let more = (i + 1) * chunk < data.len();
            let fo = ((i * chunk / 8) as u16) | if more { 0x2000 } else { 0 };
            f[l3 + 6..l3 + 8].copy_from_slice(&fo.to_be_bytes());
            ipv4::Packet::new_checked(&mut f[l3..])
                .unwrap()
                .fill_checksum();
            f
        })
        .collect()
}

/// Feed fragments; all but the completing one are held, that one too (consumed): the whole
/// datagram is the single emit.
fn feed(e: &mut Engine, now: Timestamp, side: Side, frags: &mut [Vec<u8>]) -> Emit {
    for f in frags.iter_mut() {
        assert_eq!(e.process(now, side, f), Verdict::Held);
    }
    let mut out = Vec::new();
    e.drain_emits(&mut out);
    assert_eq!(out.len(), 1, "one reassembled datagram emitted");
    out.pop().unwrap()
}

/// (src, sport, dst, dport, payload) with checksums verified and no fragmentation left.
fn open_frame(frame: &[u8]) -> (IpAddr, u16, IpAddr, u16, Vec<u8>) {
    let info = wire::parse(frame).unwrap();
    assert!(wire::verify_checksums(frame, &info), "invalid checksum");
    assert!(info.fragment.is_none());
    let (s, d) = info.ports().unwrap();
    let payload = frame[info.payload_offset..][..info.payload_len].to_vec();
    (info.src, s, info.dst, d, payload)
}

#[test]
fn fragmented_dns_query_and_answer_are_translated_whole() {
    let (query, answer) = dns_payloads();
    let mut e = engine(EngineOptions::default());

    // Outbound: the query in 16-byte fragments.
    let q = udp(CLIENT, SERVER, 40_000, 53, &query);
    let mut frags = fragment_v4(&q, 16, 0x1234);
    assert!(frags.len() >= 3);
    let out = feed(&mut e, t(0), Side::Inside, &mut frags);
    assert_eq!(out.side, Side::Outside);
    let (src, eport, dst, dport, payload) = open_frame(&out.frame);
    assert_eq!(src, IpAddr::from(EIP));
    assert_eq!((dst, dport), (IpAddr::from(SERVER), 53));
    assert_eq!(payload, query);
    assert_eq!(e.flow_count(), 1);

    // Inbound: the answer in 24-byte fragments, last one first.
    let a = udp(SERVER, EIP, 53, eport, &answer);
    let mut frags = fragment_v4(&a, 24, 0x4321);
    frags.reverse();
    let back = feed(&mut e, t(5), Side::Outside, &mut frags);
    assert_eq!(back.side, Side::Inside);
    let (src, sport, dst, dport, payload) = open_frame(&back.frame);
    assert_eq!((src, sport), (IpAddr::from(SERVER), 53));
    assert_eq!((dst, dport), (IpAddr::from(CLIENT), 40_000));
    assert_eq!(payload, answer);

    let fs = e.frag_stats();
    assert_eq!(fs.completed, 2);
    assert_eq!(e.stats().drop_fragment.packets, 0);
}

#[test]
fn oversized_and_malformed_fragments_are_counted_drops() {
    let mut e = engine(EngineOptions::default());
    // 3000 bytes reassembled cannot leave as one 1514-byte frame.
    let big = udp(CLIENT, SERVER, 40_001, 9999, &[7u8; 3000]);
    let mut frags = fragment_v4(&big, 1400, 1);
    let last = frags.len() - 1;
    for f in &mut frags[..last] {
        assert_eq!(e.process(t(0), Side::Inside, f), Verdict::Held);
    }
    assert_eq!(
        e.process(t(0), Side::Inside, &mut frags[last]),
        Verdict::Drop(DropReason::ReassembledTooBig)
    );
    // A non-final fragment whose length is not a multiple of 8.
    let small = udp(CLIENT, SERVER, 40_001, 9999, &[1u8; 40]);
    let mut bad = fragment_v4(&small, 16, 2).swap_remove(0);
    bad.pop();
    let l3 = 14;
    let total = (bad.len() - l3) as u16;
    bad[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
    ipv4::Packet::new_checked(&mut bad[l3..])
        .unwrap()
        .fill_checksum();
    assert_eq!(
        e.process(t(1), Side::Inside, &mut bad),
        Verdict::Drop(DropReason::Fragment)
    );
    assert_eq!(e.stats().drop_fragment.packets, 2);
    assert_eq!(e.frag_stats().dropped_malformed, 1);
    let mut out = Vec::new();
    e.drain_emits(&mut out);
    assert!(out.is_empty());
    // Fragments of traffic that is not ours are the kernel's.
    let mut other = fragment_v4(&udp([198, 51, 100, 9], SERVER, 1, 2, &[0; 40]), 16, 3);
    assert_eq!(
        e.process(t(2), Side::Inside, &mut other[0]),
        Verdict::ToKernel
    );
}

#[test]
fn fragment_flood_stays_bounded_and_flows_keep_working() {
    let opts = EngineOptions {
        frag: FragConfig {
            max_datagrams: 32,
            timeout: Duration::from_secs(2),
            ..FragConfig::default()
        },
        ..EngineOptions::default()
    };
    let mut e = engine(opts);
    // An established UDP flow.
    let mut q = udp(CLIENT, SERVER, 41_000, 7777, b"hello");
    assert_eq!(e.process(t(0), Side::Inside, &mut q), Verdict::Forward);
    let eport = wire::parse(&q).unwrap().ports().unwrap().0;

    // 20,000 first fragments that never complete, in and out.
    let junk = udp(CLIENT, SERVER, 41_001, 7777, &[9u8; 64]);
    let junk_in = udp(SERVER, EIP, 7777, eport, &[9u8; 64]);
    for i in 0..10_000u16 {
        let mut f = fragment_v4(&junk, 32, i).swap_remove(0);
        assert_eq!(e.process(t(1), Side::Inside, &mut f), Verdict::Held);
        let mut f = fragment_v4(&junk_in, 32, i).swap_remove(0);
        assert_eq!(e.process(t(1), Side::Outside, &mut f), Verdict::Held);
    }
    let fs = *e.frag_stats();
    assert_eq!(fs.held, 20_000);
    assert_eq!(fs.evicted, 20_000 - 32);

    // The flow still works both ways, and a real fragmented datagram still completes.
    let mut r = udp(SERVER, EIP, 7777, eport, b"world");
    assert_eq!(e.process(t(2), Side::Outside, &mut r), Verdict::Forward);
    let mut frags = fragment_v4(&udp(CLIENT, SERVER, 41_000, 7777, &[5u8; 100]), 48, 60_000);
    let out = feed(&mut e, t(3), Side::Inside, &mut frags);
    assert_eq!(open_frame(&out.frame).4, vec![5u8; 100]);

    // poll() expires what is left of the flood.
    e.poll(t(10_000));
    assert!(e.frag_stats().timed_out >= 31);
    let mut q = udp(CLIENT, SERVER, 41_000, 7777, b"again");
    assert_eq!(e.process(t(10_001), Side::Inside, &mut q), Verdict::Forward);
}
