use super::*;

/// A minimal IPv4/UDP packet (content is irrelevant to the reader, only the version nibble).
fn ip_packet(tag: u8) -> Vec<u8> {
    let mut p = vec![
        0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 1, 10, 198, 51, 100, 10,
    ];
    p.extend_from_slice(&[0x30, 0x39, 0, 53, 0, 8, 0, tag]);
    p
}

fn eth_frame(tag: u8) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(&ip_packet(tag));
    f
}

fn pcap(big: bool, nanos: bool, linktype: u32, recs: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
    let w32 = |v: &mut Vec<u8>, x: u32| {
        v.extend_from_slice(&if big {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        })
    };
    let w16 = |v: &mut Vec<u8>, x: u16| {
        v.extend_from_slice(&if big {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        })
    };
    let mut v = Vec::new();
    w32(&mut v, if nanos { PCAP_MAGIC_NS } else { PCAP_MAGIC_US });
    w16(&mut v, 2);
    w16(&mut v, 4);
    w32(&mut v, 0);
    w32(&mut v, 0);
    w32(&mut v, 65535);
    w32(&mut v, linktype);
    for (s, frac, data) in recs {
        w32(&mut v, *s);
        w32(&mut v, *frac);
        w32(&mut v, data.len() as u32);
        w32(&mut v, data.len() as u32 + 4);
        v.extend_from_slice(data);
    }
    v
}

/// pcapng builder: blocks are (type, body); lengths and padding are filled in.
struct Ng {
    big: bool,
    out: Vec<u8>,
}

impl Ng {
    fn new(big: bool) -> Ng {
        let mut ng = Ng {
            big,
            out: Vec::new(),
        };
        ng.shb();
        ng
    }
    fn u32b(&self, x: u32) -> [u8; 4] {
        if self.big {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        }
    }
    fn u16b(&self, x: u16) -> [u8; 2] {
        if self.big {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        }
    }
    fn block(&mut self, btype: u32, mut body: Vec<u8>) {
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        let total = body.len() as u32 + 12;
        let (t, l) = (self.u32b(btype), self.u32b(total));
        self.out.extend_from_slice(&t);
        self.out.extend_from_slice(&l);
        self.out.extend_from_slice(&body);
        self.out.extend_from_slice(&l);
    }
    fn shb(&mut self) {
        let mut b = Vec::new();
        b.extend_from_slice(&self.u32b(PCAPNG_BOM));
        b.extend_from_slice(&self.u16b(1));
        b.extend_from_slice(&self.u16b(0));
        b.extend_from_slice(&[0xff; 8]); // section length unknown
        self.block(PCAPNG_SHB, b);
    }
    fn idb(&mut self, linktype: u16, tsresol: Option<u8>, tsoffset: Option<i64>) {
        let mut b = Vec::new();
        b.extend_from_slice(&self.u16b(linktype));
        b.extend_from_slice(&self.u16b(0));
        b.extend_from_slice(&self.u32b(0));
        // An unrelated option first (if_name "eth0"), to exercise option skipping.
        b.extend_from_slice(&self.u16b(2));
        b.extend_from_slice(&self.u16b(4));
        b.extend_from_slice(b"eth0");
        if let Some(r) = tsresol {
            b.extend_from_slice(&self.u16b(9));
            b.extend_from_slice(&self.u16b(1));
            b.extend_from_slice(&[r, 0, 0, 0]);
        }
        if let Some(o) = tsoffset {
            b.extend_from_slice(&self.u16b(14));
            b.extend_from_slice(&self.u16b(8));
            b.extend_from_slice(&if self.big {
                o.to_be_bytes()
            } else {
                o.to_le_bytes()
            });
        }
        b.extend_from_slice(&[0, 0, 0, 0]); // opt_endofopt
        self.block(1, b);
    }
    fn epb(&mut self, iface: u32, ticks: u64, data: &[u8]) {
        let mut b = Vec::new();
        b.extend_from_slice(&self.u32b(iface));
        b.extend_from_slice(&self.u32b((ticks >> 32) as u32));
        b.extend_from_slice(&self.u32b(ticks as u32));
        b.extend_from_slice(&self.u32b(data.len() as u32));
        b.extend_from_slice(&self.u32b(data.len() as u32));
        b.extend_from_slice(data);
        self.block(6, b);
    }
    fn spb(&mut self, data: &[u8]) {
        let mut b = self.u32b(data.len() as u32).to_vec();
        b.extend_from_slice(data);
        self.block(3, b);
    }
}

fn read_all(bytes: &[u8]) -> (Vec<Frame>, ReadStats, Option<CaptureError>) {
    let mut r = match CaptureReader::new(bytes, Path::new("test.pcap")) {
        Ok(r) => r,
        Err(e) => return (vec![], ReadStats::default(), Some(e)),
    };
    let mut frames = vec![];
    let mut err = None;
    for f in &mut r {
        match f {
            Ok(f) => frames.push(f),
            Err(e) => err = Some(e),
        }
    }
    (frames, r.stats(), err)
}

const T0: u64 = 1_795_886_482; // 2026-11-28T17:21:22Z

#[test]
fn pcap_both_byte_orders_and_resolutions() {
    for big in [false, true] {
        for nanos in [false, true] {
            let frac = if nanos { 123_456_789 } else { 123_456 };
            let bytes = pcap(
                big,
                nanos,
                1,
                &[
                    (T0 as u32, frac, eth_frame(1)),
                    (T0 as u32 + 1, 0, eth_frame(2)),
                ],
            );
            let (frames, stats, err) = read_all(&bytes);
            assert!(err.is_none(), "{err:?}");
            assert_eq!(stats.frames, 2);
            let want_ns = if nanos { 123_456_789 } else { 123_456_000 };
            assert_eq!(frames[0].ts, Timestamp(T0 * 1_000_000_000 + want_ns));
            assert_eq!(frames[1].ts, Timestamp::from_secs(T0 + 1));
            assert_eq!(frames[0].data, eth_frame(1));
            assert_eq!(frames[1].orig_len, eth_frame(2).len() as u32 + 4);
        }
    }
}

#[test]
fn raw_and_sll_get_an_ethernet_header() {
    let (frames, _, err) = read_all(&pcap(false, false, 101, &[(1, 0, ip_packet(7))]));
    assert!(err.is_none());
    assert_eq!(frames[0].data[12..14], [0x08, 0x00]);
    assert_eq!(frames[0].data[14..], ip_packet(7)[..]);

    let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
    sll.extend_from_slice(&ip_packet(8));
    let (frames, _, _) = read_all(&pcap(false, false, 113, &[(1, 0, sll)]));
    assert_eq!(frames[0].data[14..], ip_packet(8)[..]);

    // 802.11 is skipped and counted, not misparsed.
    let (frames, stats, err) = read_all(&pcap(false, false, 105, &[(1, 0, eth_frame(1))]));
    assert!(frames.is_empty() && err.is_none());
    assert_eq!(stats.skipped_linktype, 1);
}

#[test]
fn pcapng_interfaces_resolutions_sections_and_block_kinds() {
    for big in [false, true] {
        let mut ng = Ng::new(big);
        ng.idb(1, Some(9), None); // 0: Ethernet, ns
        ng.idb(101, None, Some(10)); // 1: RAW, default µs, +10 s
        ng.idb(105, None, None); // 2: 802.11, skipped
        ng.idb(1, Some(0x80 | 20), None); // 3: Ethernet, 2^-20 s
        ng.epb(0, T0 * 1_000_000_000 + 5, &eth_frame(1));
        ng.epb(1, T0 * 1_000_000 + 7, &ip_packet(2));
        ng.epb(2, T0 * 1_000_000, &eth_frame(9));
        ng.block(4, vec![0; 8]); // name resolution block: skipped
        ng.spb(&eth_frame(3)); // interface 0, time of the previous packet
        ng.epb(3, (T0 << 20) | (1 << 19), &eth_frame(4)); // +0.5 s
                                                          // A second section in the other byte order resets the interfaces.
        let mut other = Ng::new(!big);
        other.idb(1, None, None);
        other.epb(0, (T0 + 2) * 1_000_000, &eth_frame(5));
        ng.out.extend_from_slice(&other.out);

        let (frames, stats, err) = read_all(&ng.out);
        assert!(err.is_none(), "{err:?}");
        let got: Vec<(Timestamp, u8)> = frames
            .iter()
            .map(|f| (f.ts, *f.data.last().unwrap()))
            .collect();
        let s = |secs: u64, ns: u64| Timestamp(secs * 1_000_000_000 + ns);
        assert_eq!(
            got,
            vec![
                (s(T0, 5), 1),
                (s(T0 + 10, 7_000), 2),
                (s(T0, 0), 3), // SPB: the previous packet's time (the skipped 802.11 one)
                (s(T0, 500_000_000), 4),
                (s(T0 + 2, 0), 5),
            ]
        );
        assert_eq!(stats.skipped_linktype, 1);
        assert_eq!(stats.skipped_blocks, 1);
        assert_eq!(frames[1].data[14..], ip_packet(2)[..]);
    }
}

#[test]
fn broken_inputs_are_errors_not_panics() {
    let good = pcap(
        false,
        false,
        1,
        &[(1, 0, eth_frame(1)), (2, 0, eth_frame(2))],
    );
    assert!(read_all(&[]).2.is_some());
    assert!(read_all(b"GIF89a...").2.is_some());
    // Truncated anywhere: the frames before the cut come out, then one error (or clean EOF
    // exactly at a record boundary).
    for cut in 0..good.len() {
        let (frames, _, err) = read_all(&good[..cut]);
        let boundary = cut == 24 || cut == 24 + 16 + eth_frame(1).len();
        assert_eq!(err.is_none(), boundary, "cut {cut}");
        assert!(frames.len() <= 2);
    }
    // A huge record length is refused before allocating.
    let mut huge = good.clone();
    huge[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        read_all(&huge).2,
        Some(CaptureError::Format { offset: 24, .. })
    ));

    // Packet on an undeclared interface.
    let mut ng = Ng::new(false);
    ng.epb(0, 1, &eth_frame(1));
    let err = read_all(&ng.out).2.unwrap().to_string();
    assert!(err.contains("undeclared interface 0"), "{err}");

    // Every single-byte corruption of a pcapng file: never a panic.
    let mut ng = Ng::new(false);
    ng.idb(1, Some(9), Some(-5));
    ng.epb(0, 99, &eth_frame(1));
    ng.spb(&eth_frame(2));
    for i in 0..ng.out.len() {
        for v in [0x00, 0x7f, 0xff] {
            let mut b = ng.out.clone();
            b[i] = v;
            let _ = read_all(&b);
        }
    }
}

#[test]
fn reads_the_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/corpus");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        panic!("corpus missing at {}", dir.display());
    };
    let mut files = 0;
    for e in entries {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "pcap") {
            let r = open(&p).unwrap();
            let mut n = 0u64;
            let mut last = Timestamp(0);
            for f in r {
                let f = f.unwrap_or_else(|e| panic!("{e}"));
                assert!(f.data.len() >= 14 && f.ts.as_nanos() > 0);
                last = last.max(f.ts);
                n += 1;
            }
            assert!(n > 0, "{}", p.display());
            if p.ends_with("syn_flood.pcap") {
                assert_eq!(n, 20_000);
            }
            files += 1;
        }
    }
    assert!(files >= 13, "{files} captures");
}
