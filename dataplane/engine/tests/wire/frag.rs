//! Fragment reassembly: real frames fragmented and shuffled come back byte-identical; overlaps,
//! bounds and timeouts; a 100,000-fragment flood never exceeds the bounds.

use natfw_engine::frag::{FragConfig, FragDrop, FragResult, Reassembler};
use natfw_engine::time::Timestamp;
use natfw_engine::wire::{self, ipv4, ipv6};
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::time::Duration;

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../tests/data/corpus/{name}.pcap"));
    let mut r = pcap_file::pcap::PcapReader::new(std::fs::File::open(p).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(pkt) = r.next_packet() {
        out.push(pkt.unwrap().data.into_owned());
    }
    out
}

/// Deterministic xorshift, so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Split an unfragmented IPv4 frame into fragments of `chunk` payload bytes (a multiple of 8).
fn fragment_v4(frame: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let info = wire::parse(frame).unwrap();
    let hdr = &frame[..info.l4_offset];
    let data = &frame[info.l4_offset..info.ip_end];
    let mut out = Vec::new();
    for (i, c) in data.chunks(chunk).enumerate() {
        let mut f = hdr.to_vec();
        f.extend_from_slice(c);
        let l3 = info.l3_offset;
        let total = (f.len() - l3) as u16;
        f[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
        let more = (i + 1) * chunk < data.len();
        let fo = ((i * chunk / 8) as u16) | if more { 0x2000 } else { 0 };
        f[l3 + 6..l3 + 8].copy_from_slice(&fo.to_be_bytes());
        ipv4::Packet::new_checked(&mut f[l3..])
            .unwrap()
            .fill_checksum();
        out.push(f);
    }
    out
}

/// Re-encode an IPv4 frame's L4 segment as IPv6 (checksums are not the point here).
fn as_v6(frame: &[u8]) -> Vec<u8> {
    let info = wire::parse(frame).unwrap();
    let seg = &frame[info.l4_offset..info.ip_end];
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&[0x86, 0xdd]);
    let mut h = [0u8; 40];
    let s: Ipv6Addr = "fd00::a00:10a".parse().unwrap();
    let d: Ipv6Addr = "2001:db8::cb00:710a".parse().unwrap();
    ipv6::emit_header(&mut h, s, d, info.proto, seg.len(), 64);
    f.extend_from_slice(&h);
    f.extend_from_slice(seg);
    f
}

/// Split an unfragmented IPv6 frame (no extension headers) with fragment headers.
fn fragment_v6(frame: &[u8], chunk: usize, ident: u32) -> Vec<Vec<u8>> {
    let data = &frame[14 + 40..];
    let nh = frame[14 + 6];
    let mut out = Vec::new();
    for (i, c) in data.chunks(chunk).enumerate() {
        let mut f = frame[..14 + 40].to_vec();
        f[14 + 6] = ipv6::NH_FRAGMENT;
        let plen = (8 + c.len()) as u16;
        f[14 + 4..14 + 6].copy_from_slice(&plen.to_be_bytes());
        let more = (i + 1) * chunk < data.len();
        let fo = ((i * chunk) as u16) | u16::from(more);
        f.extend_from_slice(&[nh, 0]);
        f.extend_from_slice(&fo.to_be_bytes());
        f.extend_from_slice(&ident.to_be_bytes());
        f.extend_from_slice(c);
        out.push(f);
    }
    out
}

/// The largest frames of a capture (worth fragmenting).
fn big_frames() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = ["https_curl", "quic_aioquic", "ssh_2222"]
        .iter()
        .flat_map(|c| corpus(c))
        .filter(|f| f.len() > 600 && wire::parse(f).is_ok())
        .collect();
    v.truncate(12);
    assert!(v.len() >= 6);
    v
}

#[test]
fn shuffled_fragments_reassemble_to_the_original() {
    let mut rng = Rng(0x5eed);
    let t = Timestamp::from_secs(1);
    for (n, orig) in big_frames().into_iter().enumerate() {
        let v6 = as_v6(&orig);
        // A fragmented datagram cannot carry DF: the reassembled header has it clear.
        let mut v4 = orig.clone();
        v4[14 + 6] &= !0x40;
        ipv4::Packet::new_checked(&mut v4[14..])
            .unwrap()
            .fill_checksum();
        for (whole, frags) in [
            (v4, fragment_v4(&orig, 168)),
            (v6.clone(), fragment_v6(&v6, 256, n as u32)),
        ] {
            assert!(frags.len() >= 3);
            let mut order: Vec<usize> = (0..frags.len()).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let mut r = Reassembler::new(FragConfig::default());
            for (k, &i) in order.iter().enumerate() {
                // A duplicate of an earlier fragment on the way: harmless.
                if k == 1 {
                    assert_eq!(r.push(t, &frags[order[0]]), FragResult::Held);
                }
                let res = r.push(t, &frags[i]);
                if k + 1 < order.len() {
                    assert_eq!(res, FragResult::Held, "fragment {k}");
                } else {
                    let FragResult::Complete(got) = res else {
                        panic!("frame {n}: {res:?}")
                    };
                    let diff = got.iter().zip(&whole).position(|(a, b)| a != b);
                    assert!(
                        got == whole,
                        "frame {n} not restored: len {} vs {}, first diff {diff:?} {:x?} {:x?}",
                        got.len(),
                        whole.len(),
                        &got[14..24],
                        &whole[14..24]
                    );
                }
            }
            assert_eq!((r.in_flight(), r.held_bytes()), (0, 0));
            assert_eq!(r.stats().completed, 1);
            assert_eq!(r.stats().duplicates, 1);
        }
    }
}

#[test]
fn conflicting_overlap_drops_the_datagram() {
    let orig = big_frames().remove(0);
    let frags = fragment_v4(&orig, 160);
    let t = Timestamp::from_secs(1);
    let mut r = Reassembler::new(FragConfig::default());
    assert_eq!(r.push(t, &frags[0]), FragResult::Held);
    // A second copy of fragment 0 whose last payload byte differs.
    let mut evil = frags[0].clone();
    let last = evil.len() - 1;
    evil[last] ^= 1;
    assert_eq!(
        r.push(t, &evil),
        FragResult::Dropped(FragDrop::ConflictingOverlap)
    );
    assert_eq!((r.in_flight(), r.held_bytes()), (0, 0));
    // The rest now cannot complete: the datagram is gone.
    for f in &frags[1..] {
        assert_eq!(r.push(t, f), FragResult::Held);
    }
    assert_eq!(r.stats().dropped_conflict, 1);
}

#[test]
fn odd_sized_middle_fragment_and_non_fragments_are_refused() {
    let orig = big_frames().remove(0);
    let t = Timestamp::from_secs(1);
    let mut r = Reassembler::new(FragConfig::default());
    assert_eq!(r.push(t, &orig), FragResult::Dropped(FragDrop::NotFragment));
    let mut f = fragment_v4(&orig, 160).remove(0);
    f.pop();
    let l3 = 14;
    let total = (f.len() - l3) as u16;
    f[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
    assert_eq!(r.push(t, &f), FragResult::Dropped(FragDrop::Malformed));
    assert_eq!(
        r.push(t, &orig[..10]),
        FragResult::Dropped(FragDrop::Malformed)
    );
}

#[test]
fn incomplete_datagrams_time_out() {
    let orig = big_frames().remove(0);
    let frags = fragment_v4(&orig, 160);
    let cfg = FragConfig {
        timeout: Duration::from_secs(5),
        ..FragConfig::default()
    };
    let mut r = Reassembler::new(cfg);
    assert_eq!(
        r.push(Timestamp::from_secs(10), &frags[0]),
        FragResult::Held
    );
    assert_eq!(r.expire(Timestamp::from_secs(14)), 0);
    assert_eq!(r.expire(Timestamp::from_secs(15)), 1);
    assert_eq!(
        (r.in_flight(), r.held_bytes(), r.stats().timed_out),
        (0, 0, 1)
    );
}

#[test]
fn fragment_flood_stays_within_bounds() {
    let cfg = FragConfig {
        max_datagrams: 64,
        max_datagram_bytes: 16 << 10,
        max_total_bytes: 64 << 10,
        max_fragments: 16,
        timeout: Duration::from_secs(2),
    };
    let mut r = Reassembler::new(cfg);
    let mut rng = Rng(42);
    let eth = [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    let mut complete = 0;
    let mut peak = 0;
    for i in 0..100_000u64 {
        let now = Timestamp::from_millis(i / 10); // 100 s of flood
        let len = (1 + rng.below(185) as usize) * 8;
        let off = rng.below(8192) as u16 & !7 & 0x1fff; // in 8-byte units
        let more = rng.below(4) != 0;
        let id = rng.below(2000) as u16;
        let fill = rng.below(3) as u8;
        let mut f = eth.to_vec();
        let mut h = [0u8; 20];
        ipv4::emit_header(
            &mut h,
            [10, 0, 1, (id % 7) as u8].into(),
            [198, 51, 100, 1].into(),
            17,
            len,
            64,
        );
        h[4..6].copy_from_slice(&id.to_be_bytes());
        let fo = (off >> 3).min(0x1fff) | if more { 0x2000 } else { 0 };
        h[6..8].copy_from_slice(&fo.to_be_bytes());
        f.extend_from_slice(&h);
        f.resize(f.len() + len, fill);
        if let FragResult::Complete(c) = r.push(now, &f) {
            assert!(wire::parse(&c).is_ok());
            complete += 1;
        }
        assert!(r.in_flight() <= cfg.max_datagrams, "datagrams at {i}");
        assert!(r.held_bytes() <= cfg.max_total_bytes, "bytes at {i}");
        peak = peak.max(r.held_bytes());
        if i % 1000 == 0 {
            r.expire(now);
        }
    }
    let s = *r.stats();
    assert!(
        s.evicted > 0 && s.dropped_conflict > 0 && s.dropped_malformed > 0,
        "{s:?}"
    );
    assert!(
        peak > cfg.max_total_bytes / 2,
        "the byte bound was exercised: peak {peak}"
    );
    let _ = complete;
    r.expire(Timestamp::from_secs(1_000));
    assert_eq!(
        (r.in_flight(), r.held_bytes()),
        (0, 0),
        "accounting returns to zero"
    );
}

/// One IPv4 fragment of a UDP datagram with id 7: `len` bytes at byte offset `off`.
fn udp_fragment(off: usize, len: usize, more: bool) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    let mut h = [0u8; 20];
    ipv4::emit_header(
        &mut h,
        [10, 0, 1, 10].into(),
        [198, 51, 100, 1].into(),
        17,
        len,
        64,
    );
    h[4..6].copy_from_slice(&7u16.to_be_bytes());
    let fo = (off / 8) as u16 | if more { 0x2000 } else { 0 };
    h[6..8].copy_from_slice(&fo.to_be_bytes());
    f.extend_from_slice(&h);
    f.resize(f.len() + len, 0xab);
    f
}

#[test]
fn per_datagram_bounds() {
    let t = Timestamp::from_secs(1);
    let cfg = FragConfig {
        max_datagram_bytes: 4096 + 64,
        max_fragments: 8,
        ..FragConfig::default()
    };
    let mut r = Reassembler::new(cfg);
    for i in 0..4 {
        assert_eq!(
            r.push(t, &udp_fragment(i * 1000, 1001, true)),
            FragResult::Dropped(FragDrop::Malformed)
        );
    }
    for i in 0..4 {
        assert_eq!(
            r.push(t, &udp_fragment(i * 1024, 1024, true)),
            FragResult::Held,
            "{i}"
        );
    }
    assert_eq!(
        r.push(t, &udp_fragment(4096, 1024, true)),
        FragResult::Dropped(FragDrop::TooBig)
    );
    assert_eq!((r.in_flight(), r.held_bytes()), (0, 0));
    for i in 0..8 {
        assert_eq!(r.push(t, &udp_fragment(i * 8, 8, true)), FragResult::Held);
    }
    assert_eq!(
        r.push(t, &udp_fragment(64, 8, true)),
        FragResult::Dropped(FragDrop::TooManyFragments)
    );
    // Past 65535 bytes of payload.
    assert_eq!(
        r.push(t, &udp_fragment(65_528, 16, false)),
        FragResult::Dropped(FragDrop::TooBig)
    );
    // A last fragment that ends before data already held is inconsistent.
    assert_eq!(r.push(t, &udp_fragment(800, 8, true)), FragResult::Held);
    assert_eq!(
        r.push(t, &udp_fragment(0, 8, false)),
        FragResult::Dropped(FragDrop::Malformed)
    );
    assert_eq!(r.stats().dropped_too_big, 2);
}
