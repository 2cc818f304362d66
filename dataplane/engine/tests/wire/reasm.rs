//! StreamBuf on the real out-of-order capture: the ClientHello's second segment arrives first.

use natfw_engine::reasm::{PushResult, StreamBuf};
use natfw_engine::wire::tcp::SeqNumber;
use natfw_engine::wire::{self, L4};
use std::path::PathBuf;

/// Client-to-server TCP segments `(seq, payload, syn)` in capture order.
fn client_segments() -> Vec<(u32, Vec<u8>, bool)> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/corpus/tls_out_of_order.pcap");
    let mut r = pcap_file::pcap::PcapReader::new(std::fs::File::open(p).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(pkt) = r.next_packet() {
        let f = pkt.unwrap().data.into_owned();
        let Ok(info) = wire::parse(&f) else { continue };
        if let L4::Tcp {
            dport: 443,
            seq,
            flags,
            ..
        } = info.l4
        {
            out.push((seq, info.payload(&f).to_vec(), flags.syn()));
        }
    }
    out
}

#[test]
fn out_of_order_client_hello_is_reassembled() {
    let segs = client_segments();
    let (isn, _, syn) = segs[0].clone();
    assert!(syn);
    let mut s = StreamBuf::new(SeqNumber(isn), 4096);
    let data: Vec<_> = segs
        .iter()
        .filter(|(_, d, _)| !d.is_empty())
        .cloned()
        .collect();
    assert_eq!(
        data.len(),
        3,
        "two ClientHello halves and one later segment"
    );
    // The capture delivers relative 133:518 before 1:133.
    assert!(data[0].0.wrapping_sub(isn) > data[1].0.wrapping_sub(isn));
    assert_eq!(s.push(SeqNumber(data[0].0), &data[0].1), PushResult::Ok);
    assert!(s.contiguous().is_empty(), "gap before the first segment");
    assert_eq!(s.push(SeqNumber(data[1].0), &data[1].1), PushResult::Ok);
    let mut expected = data[1].1.clone();
    expected.extend_from_slice(&data[0].1);
    assert_eq!(s.contiguous(), &expected[..]);
    assert_eq!(
        &s.contiguous()[..3],
        &[0x16, 0x03, 0x01],
        "a TLS handshake record"
    );
    let record_len = usize::from(u16::from_be_bytes([s.contiguous()[3], s.contiguous()[4]]));
    assert_eq!(
        s.contiguous().len(),
        5 + record_len,
        "exactly one whole record"
    );
    assert_eq!(s.push(SeqNumber(data[2].0), &data[2].1), PushResult::Ok);
    assert_eq!(s.contiguous().len(), expected.len() + data[2].1.len());

    // Replaying the stream is recognised as retransmission; a forged overlap as conflict.
    for (seq, d, _) in &data {
        assert_eq!(s.push(SeqNumber(*seq), d), PushResult::Retransmission);
    }
    let mut forged = data[1].1.clone();
    forged[60] ^= 0x20;
    assert_eq!(s.push(SeqNumber(data[1].0), &forged), PushResult::Conflict);
    assert_eq!(&s.contiguous()[..expected.len()], &expected[..]);
}

#[test]
fn small_limit_keeps_only_the_prefix() {
    let segs = client_segments();
    let isn = segs[0].0;
    let mut s = StreamBuf::new(SeqNumber(isn), 100);
    let data: Vec<_> = segs.iter().filter(|(_, d, _)| !d.is_empty()).collect();
    // Second half (offset 132..) lies beyond the 100-byte limit with the gap open.
    assert_eq!(
        s.push(SeqNumber(data[0].0), &data[0].1),
        PushResult::OutOfWindow
    );
    assert_eq!(s.push(SeqNumber(data[1].0), &data[1].1), PushResult::Full);
    assert_eq!(s.contiguous(), &data[1].1[..100]);
    assert_eq!(s.push(SeqNumber(data[0].0), &data[0].1), PushResult::Full);
}
