//! The packet layer against real captures: parse agrees with etherparse (an independent
//! implementation), and every rewrite leaves checksums that verify from scratch, identically in
//! incremental and full mode, on IPv4 frames and on IPv6 re-encodings of them.

use etherparse::{Icmpv4Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use natfw_engine::wire::build::{self, RstTo, Unreachable};
use natfw_engine::wire::rewrite::{self, ChecksumMode, End};
use natfw_engine::wire::{self, IcmpKind, PacketInfo, L3, L4};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

const CAPTURES: &[&str] = &[
    "https_curl",
    "dns_query",
    "icmp_ping",
    "quic_aioquic",
    "tls_out_of_order",
    "http_curl",
    "ssh_2222",
];

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../tests/data/corpus/{name}.pcap"));
    let f = std::fs::File::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut r = pcap_file::pcap::PcapReader::new(f).expect("pcap header");
    let mut out = Vec::new();
    while let Some(pkt) = r.next_packet() {
        out.push(pkt.expect("pcap record").data.into_owned());
    }
    assert!(!out.is_empty(), "{name} is empty");
    out
}

/// Map an IPv4 lab address into IPv6: private hosts into ULA, the rest into the doc prefix.
fn v6_of(a: Ipv4Addr) -> Ipv6Addr {
    let o = a.octets();
    let hi = if o[0] == 10 { 0xfd00 } else { 0x2001 };
    Ipv6Addr::new(
        hi,
        0xdb8,
        0,
        0,
        0,
        0,
        u16::from_be_bytes([o[0], o[1]]),
        u16::from_be_bytes([o[2], o[3]]),
    )
}

/// Re-encode an IPv4 frame as IPv6 with etherparse (TCP options are dropped).
fn to_v6(frame: &[u8]) -> Option<Vec<u8>> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        return None;
    };
    let (s, d) = (
        v6_of(ip.header().source_addr()),
        v6_of(ip.header().destination_addr()),
    );
    let mut mac_s = [0u8; 6];
    mac_s.copy_from_slice(&frame[6..12]);
    let mut mac_d = [0u8; 6];
    mac_d.copy_from_slice(&frame[0..6]);
    let b = PacketBuilder::ethernet2(mac_s, mac_d).ipv6(s.octets(), d.octets(), ip.header().ttl());
    let mut out = Vec::new();
    match p.transport? {
        TransportSlice::Tcp(t) => {
            let mut b = b.tcp(
                t.source_port(),
                t.destination_port(),
                t.sequence_number(),
                t.window_size(),
            );
            if t.ack() {
                b = b.ack(t.acknowledgment_number());
            }
            if t.syn() {
                b = b.syn();
            }
            if t.fin() {
                b = b.fin();
            }
            if t.psh() {
                b = b.psh();
            }
            b.write(&mut out, t.payload()).ok()?;
        }
        TransportSlice::Udp(u) => b
            .udp(u.source_port(), u.destination_port())
            .write(&mut out, u.payload())
            .ok()?,
        TransportSlice::Icmpv4(i) => match i.icmp_type() {
            Icmpv4Type::EchoRequest(e) => b
                .icmpv6_echo_request(e.id, e.seq)
                .write(&mut out, i.payload())
                .ok()?,
            Icmpv4Type::EchoReply(e) => b
                .icmpv6_echo_reply(e.id, e.seq)
                .write(&mut out, i.payload())
                .ok()?,
            _ => return None,
        },
        _ => return None,
    }
    Some(out)
}

/// Every frame of every capture, plus IPv6 re-encodings.
fn all_frames() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = CAPTURES.iter().flat_map(|c| corpus(c)).collect();
    // The captures include the hosts' ARP exchange: not IP, reported as such.
    v.retain(|f| {
        let ip = wire::parse(f) != Err(wire::WireError::NotIp);
        assert!(ip || f[12..14] == [0x08, 0x06], "only ARP is non-IP here");
        ip
    });
    let v6: Vec<Vec<u8>> = v.iter().filter_map(|f| to_v6(f)).collect();
    assert!(v6.len() > 50, "too few IPv6 re-encodings: {}", v6.len());
    v.extend(v6);
    v
}

fn is_private(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => a.octets()[0] == 10,
        IpAddr::V6(a) => a.segments()[0] == 0xfd00,
    }
}

fn eip(l3: L3) -> IpAddr {
    match l3 {
        L3::V4 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        L3::V6 => "2001:db8::1".parse().unwrap(),
    }
}

#[test]
fn parse_agrees_with_etherparse() {
    let frames = all_frames();
    let mut seen = [0usize; 3];
    for f in &frames {
        let info = wire::parse(f).expect("corpus frames parse");
        assert!(
            wire::verify_checksums(f, &info),
            "capture checksums are valid"
        );
        let p = SlicedPacket::from_ethernet(f).expect("etherparse");
        let (s, d): (IpAddr, IpAddr) = match p.net.as_ref().unwrap() {
            NetSlice::Ipv4(ip) => (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
            ),
            NetSlice::Ipv6(ip) => (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
            ),
        };
        assert_eq!((info.src, info.dst), (s, d));
        match (p.transport.as_ref().unwrap(), info.l4) {
            (
                TransportSlice::Tcp(t),
                L4::Tcp {
                    sport,
                    dport,
                    seq,
                    ack,
                    flags,
                    window,
                },
            ) => {
                assert_eq!(
                    (sport, dport, seq, ack),
                    (
                        t.source_port(),
                        t.destination_port(),
                        t.sequence_number(),
                        t.acknowledgment_number()
                    )
                );
                assert_eq!(
                    (flags.syn(), flags.ack(), flags.fin(), window),
                    (t.syn(), t.ack(), t.fin(), t.window_size())
                );
                assert_eq!(info.payload(f), t.payload());
                seen[0] += 1;
            }
            (TransportSlice::Udp(u), L4::Udp { sport, dport }) => {
                assert_eq!((sport, dport), (u.source_port(), u.destination_port()));
                assert_eq!(info.payload(f), u.payload());
                seen[1] += 1;
            }
            (TransportSlice::Icmpv4(_) | TransportSlice::Icmpv6(_), L4::Icmp { kind, .. }) => {
                assert!(matches!(
                    kind,
                    IcmpKind::EchoRequest { .. } | IcmpKind::EchoReply { .. }
                ));
                seen[2] += 1;
            }
            (t, l4) => panic!("disagree: {t:?} vs {l4:?}"),
        }
    }
    assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
}

/// Apply `op` in both checksum modes; both must give the same bytes, and the result must verify.
fn check_both_modes(f: &[u8], info: &PacketInfo, op: impl Fn(&mut [u8], ChecksumMode)) -> Vec<u8> {
    let mut inc = f.to_vec();
    op(&mut inc, ChecksumMode::Incremental);
    let mut full = f.to_vec();
    op(&mut full, ChecksumMode::Full);
    assert_eq!(inc, full, "incremental and full disagree on {info:?}");
    let after = wire::parse(&inc).expect("rewritten frame parses");
    assert!(
        wire::verify_checksums(&inc, &after),
        "checksums invalid after rewrite of {info:?}"
    );
    inc
}

#[test]
fn rewrites_keep_checksums_valid() {
    for f in all_frames() {
        let info = wire::parse(&f).unwrap();
        let new_ip = eip(info.l3);
        let has_port = info.ports().is_some();
        let port = has_port.then_some(40_001);
        let out = check_both_modes(&f, &info, |b, m| {
            rewrite::set_src(b, &info, new_ip, port, m).unwrap()
        });
        let a = wire::parse(&out).unwrap();
        assert_eq!(a.src, new_ip);
        if has_port {
            assert_eq!(a.ports().unwrap().0, 40_001);
        }
        // Then the destination too, on the already rewritten frame (old values come from it).
        let dst: IpAddr = match info.l3 {
            L3::V4 => Ipv4Addr::new(10, 9, 8, 7).into(),
            L3::V6 => "fd00::9:8:7".parse().unwrap(),
        };
        let out2 = check_both_modes(&out, &a, |b, m| {
            rewrite::set_dst(b, &a, dst, port.map(|_| 5353), m).unwrap()
        });
        let a2 = wire::parse(&out2).unwrap();
        assert_eq!((a2.src, a2.dst), (new_ip, dst));
        assert_eq!(a2.payload(&out2), info.payload(&f), "payload untouched");

        let mut t = f.clone();
        assert!(rewrite::decrement_ttl(&mut t, &info));
        let ti = wire::parse(&t).unwrap();
        assert_eq!(ti.ttl, info.ttl - 1);
        assert!(wire::verify_checksums(&t, &ti));

        if let L4::Icmp {
            kind: IcmpKind::EchoRequest { .. } | IcmpKind::EchoReply { .. },
            ..
        } = info.l4
        {
            let mut e = f.clone();
            rewrite::set_icmp_echo_id(&mut e, &info, 0xbeef).unwrap();
            let ei = wire::parse(&e).unwrap();
            assert_eq!(ei.ports(), Some((0xbeef, 0xbeef)));
            assert!(wire::verify_checksums(&e, &ei));
        } else {
            assert!(rewrite::set_icmp_echo_id(&mut f.clone(), &info, 1).is_err());
        }
        // The wrong family is refused without touching the frame.
        let other = match info.l3 {
            L3::V4 => eip(L3::V6),
            L3::V6 => eip(L3::V4),
        };
        let mut g = f.clone();
        assert!(rewrite::set_src(&mut g, &info, other, None, ChecksumMode::Incremental).is_err());
        assert_eq!(g, f);
    }
}

#[test]
fn ttl_one_is_not_forwarded() {
    let mut f = corpus("icmp_ping").remove(0);
    f[14 + 8] = 1;
    let info = wire::parse(&f).unwrap();
    let before = f.clone();
    assert!(!rewrite::decrement_ttl(&mut f, &info));
    assert_eq!(f, before);
}

/// SNAT an outbound packet, have a router answer it with an ICMP error to the EIP, translate
/// the error back: the quoted packet must be byte-identical to what the host originally sent.
#[test]
fn icmp_error_translation_restores_the_original_packet() {
    let mut checked = 0;
    for f in all_frames() {
        let info = wire::parse(&f).unwrap();
        if matches!(info.l4, L4::Other) {
            continue;
        }
        let outbound = is_private(info.src);
        let (priv_ip, priv_port) = if outbound {
            (info.src, info.ports().map(|p| p.0))
        } else {
            (info.dst, info.ports().map(|p| p.1))
        };
        let pub_ip = eip(info.l3);
        let pub_port = priv_port.map(|_| 40_123);
        // The packet as it travels on the public side.
        let mut public = f.clone();
        if outbound {
            rewrite::set_src(
                &mut public,
                &info,
                pub_ip,
                pub_port,
                ChecksumMode::Incremental,
            )
            .unwrap();
        } else {
            rewrite::set_dst(
                &mut public,
                &info,
                pub_ip,
                pub_port,
                ChecksumMode::Incremental,
            )
            .unwrap();
        }
        let pinfo = wire::parse(&public).unwrap();
        // Outbound: a router on the public side rejects it; inbound: the private host does.
        let (quoted_frame, qinfo, err_from) = if outbound {
            let router: IpAddr = match info.l3 {
                L3::V4 => Ipv4Addr::new(203, 0, 113, 254).into(),
                L3::V6 => "2001:db8:ff::fe".parse().unwrap(),
            };
            (&public, &pinfo, Some(router))
        } else {
            (&f, &info, None)
        };
        let mut err =
            build::icmp_unreachable(quoted_frame, qinfo, Unreachable::AdminProhibited, err_from)
                .unwrap();
        let einfo = wire::parse(&err).unwrap();
        assert!(
            wire::verify_checksums(&err, &einfo),
            "built ICMP error verifies"
        );
        let L4::Icmp {
            kind: IcmpKind::Error { inner, .. },
            ..
        } = einfo.l4
        else {
            panic!("{einfo:?}")
        };
        let (end, ip, port, original) = if outbound {
            assert_eq!((inner.src, inner.dst), (pub_ip, info.dst));
            (End::Src, priv_ip, priv_port.unwrap_or(0), &f)
        } else {
            assert_eq!((inner.src, inner.dst), (info.src, priv_ip));
            (End::Dst, pub_ip, pub_port.unwrap_or(0), &public)
        };
        for mode in [ChecksumMode::Incremental, ChecksumMode::Full] {
            let mut e = err.clone();
            rewrite::rewrite_icmp_error_inner(&mut e, &einfo, end, ip, port, mode).unwrap();
            let ti = wire::parse(&e).unwrap();
            assert!(
                wire::verify_checksums(&e, &ti),
                "translated error verifies ({mode:?})"
            );
            let oi = wire::parse(original).unwrap();
            let quoted = &e[ti.payload_offset..ti.ip_end];
            let orig = &original[oi.l3_offset..oi.ip_end];
            let n = quoted.len();
            assert_eq!(
                quoted,
                &orig[..n],
                "quoted packet restored ({mode:?}, outbound {outbound})"
            );
            if outbound {
                assert_eq!(ti.dst, priv_ip);
            } else {
                assert_eq!(ti.src, pub_ip);
            }
        }
        err.truncate(einfo.payload_offset + 10); // quoted header cut short: refused, no panic
        assert!(wire::parse(&err).is_err() || checked > 0);
        checked += 1;
    }
    assert!(checked > 100, "{checked}");
}

#[test]
fn tcp_rst_both_directions() {
    let mut n = 0;
    for f in all_frames() {
        let info = wire::parse(&f).unwrap();
        let L4::Tcp {
            sport,
            dport,
            seq,
            ack,
            flags,
            ..
        } = info.l4
        else {
            continue;
        };
        let seg_len = info.payload_len as u32 + u32::from(flags.syn()) + u32::from(flags.fin());
        let back = build::tcp_rst(&f, &info, RstTo::Sender).unwrap();
        let b = wire::parse(&back).unwrap();
        assert!(wire::verify_checksums(&back, &b));
        assert_eq!(&back[0..6], &f[6..12], "MACs swapped");
        let L4::Tcp {
            sport: bs,
            dport: bd,
            seq: bseq,
            ack: back_ack,
            flags: bf,
            ..
        } = b.l4
        else {
            panic!()
        };
        assert_eq!((b.src, b.dst, bs, bd), (info.dst, info.src, dport, sport));
        assert!(bf.rst() && bf.ack());
        assert_eq!(bseq, if flags.ack() { ack } else { 0 });
        assert_eq!(back_ack, seq.wrapping_add(seg_len));

        let fwd = build::tcp_rst(&f, &info, RstTo::Receiver { delivered: false }).unwrap();
        let w = wire::parse(&fwd).unwrap();
        assert!(wire::verify_checksums(&fwd, &w));
        let L4::Tcp {
            seq: wseq,
            flags: wf,
            ..
        } = w.l4
        else {
            panic!()
        };
        assert_eq!(
            (w.src, w.dst, w.ports()),
            (info.src, info.dst, Some((sport, dport)))
        );
        assert!(wf.rst());
        assert_eq!(wseq, seq);
        let fwd2 = build::tcp_rst(&f, &info, RstTo::Receiver { delivered: true }).unwrap();
        assert!(
            matches!(wire::parse(&fwd2).unwrap().l4, L4::Tcp { seq: s, .. } if s == seq.wrapping_add(seg_len))
        );
        // etherparse agrees it is a well-formed TCP RST.
        let p = SlicedPacket::from_ethernet(&back).unwrap();
        assert!(matches!(p.transport, Some(TransportSlice::Tcp(t)) if t.rst()));
        n += 1;
    }
    assert!(n > 50);
}

#[test]
fn truncations_of_corpus_frames_never_panic() {
    for f in all_frames() {
        for cut in 0..f.len() {
            let g = &f[..cut];
            if let Ok(info) = wire::parse(g) {
                assert!(info.ip_end <= g.len());
                let mut h = g.to_vec();
                let _ = rewrite::set_src(&mut h, &info, eip(info.l3), Some(1), ChecksumMode::Full);
            }
        }
    }
}
