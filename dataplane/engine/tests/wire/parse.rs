//! Parse edge cases: VLAN tags, IPv6 extension headers, ICMP error flavours, lying lengths,
//! padding and fragments.

use natfw_engine::wire::build::{self, RstTo, Unreachable};
use natfw_engine::wire::rewrite::{self, ChecksumMode};
use natfw_engine::wire::{self, checksum, icmp, ipv6, IcmpKind, WireError, L3, L4};
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../tests/data/corpus/{name}.pcap"));
    let mut r = pcap_file::pcap::PcapReader::new(std::fs::File::open(p).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(pkt) = r.next_packet() {
        let f = pkt.unwrap().data.into_owned();
        if wire::parse(&f).is_ok() {
            out.push(f);
        }
    }
    out
}

/// The first client data segment of the HTTP capture (TCP with payload).
fn http_request() -> Vec<u8> {
    corpus("http_curl")
        .into_iter()
        .find(|f| wire::parse(f).unwrap().payload_len > 0)
        .unwrap()
}

fn dns_query() -> Vec<u8> {
    corpus("dns_query").remove(0)
}

fn fix_icmp_checksum(f: &mut [u8], v6: bool) {
    let info = wire::parse(f).unwrap();
    let l4 = info.l4_offset;
    f[l4 + 2..l4 + 4].copy_from_slice(&[0, 0]);
    let ck = if v6 {
        checksum::l4_checksum(info.src, info.dst, 58, &f[l4..info.ip_end])
    } else {
        checksum::checksum(&f[l4..info.ip_end])
    };
    f[l4 + 2..l4 + 4].copy_from_slice(&ck.to_be_bytes());
}

#[test]
fn qinq_tagged_frames_parse_rewrite_and_answer_tagged() {
    let plain = http_request();
    let mut f = plain[..12].to_vec();
    f.extend_from_slice(&[0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x14]);
    f.extend_from_slice(&plain[12..]);
    let (p, t) = (wire::parse(&plain).unwrap(), wire::parse(&f).unwrap());
    assert_eq!(
        (t.eth_len, t.l3_offset, t.l4_offset),
        (22, 22, p.l4_offset + 8)
    );
    assert_eq!(
        (t.src, t.dst, t.l4, t.payload_len),
        (p.src, p.dst, p.l4, p.payload_len)
    );
    assert!(wire::verify_checksums(&f, &t));
    let mut g = f.clone();
    rewrite::set_src(
        &mut g,
        &t,
        "192.0.2.1".parse().unwrap(),
        Some(40_000),
        ChecksumMode::Incremental,
    )
    .unwrap();
    assert!(wire::verify_checksums(&g, &wire::parse(&g).unwrap()));
    let rst = build::tcp_rst(&f, &t, RstTo::Sender).unwrap();
    assert_eq!(&rst[12..22], &f[12..22], "tags kept");
    assert!(wire::verify_checksums(&rst, &wire::parse(&rst).unwrap()));
}

/// Re-encode the DNS query as IPv6 with hop-by-hop and destination-options headers.
fn dns_v6_with_ext_headers() -> Vec<u8> {
    let f = dns_query();
    let i = wire::parse(&f).unwrap();
    let udp = &f[i.l4_offset..i.ip_end];
    let mut ext = vec![ipv6::NH_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]; // hop-by-hop, PadN
    ext.extend_from_slice(&[17, 1, 1, 12]); // dest-opts, 16 bytes, PadN
    ext.extend_from_slice(&[0; 12]);
    let mut out = f[..12].to_vec();
    out.extend_from_slice(&[0x86, 0xdd]);
    let mut h = [0u8; 40];
    let s: Ipv6Addr = "fd00::a00:10a".parse().unwrap();
    let d: Ipv6Addr = "2001:db8::c633:6435".parse().unwrap();
    ipv6::emit_header(&mut h, s, d, ipv6::NH_HOP_BY_HOP, ext.len() + udp.len(), 64);
    out.extend_from_slice(&h);
    out.extend_from_slice(&ext);
    let l4 = out.len();
    out.extend_from_slice(udp);
    out[l4 + 6..l4 + 8].copy_from_slice(&[0, 0]);
    let ck = checksum::l4_checksum(s.into(), d.into(), 17, &out[l4..]);
    out[l4 + 6..l4 + 8].copy_from_slice(&ck.to_be_bytes());
    out
}

#[test]
fn ipv6_extension_headers_are_skipped() {
    let f = dns_v6_with_ext_headers();
    let info = wire::parse(&f).unwrap();
    assert_eq!(
        (info.l3, info.proto, info.l4_offset),
        (L3::V6, 17, 14 + 40 + 24)
    );
    assert!(matches!(info.l4, L4::Udp { dport: 53, .. }));
    assert!(wire::verify_checksums(&f, &info));
    let mut a = f.clone();
    let mut b = f.clone();
    let eip: IpAddr = "2001:db8::1".parse().unwrap();
    rewrite::set_src(&mut a, &info, eip, Some(40_000), ChecksumMode::Incremental).unwrap();
    rewrite::set_src(&mut b, &info, eip, Some(40_000), ChecksumMode::Full).unwrap();
    assert_eq!(a, b);
    assert!(wire::verify_checksums(&a, &wire::parse(&a).unwrap()));
    // A hop-by-hop header claiming more bytes than present.
    let mut bad = f.clone();
    bad[14 + 40 + 1] = 200;
    assert_eq!(wire::parse(&bad).unwrap_err(), WireError::Truncated);
}

#[test]
fn icmp_error_flavours_expose_the_embedded_tuple() {
    let req = http_request();
    let ri = wire::parse(&req).unwrap();
    let L4::Tcp { sport, dport, .. } = ri.l4 else {
        panic!()
    };
    // v4: fragmentation needed (3/4, MTU 1400) and time exceeded (11/0).
    for (typ, code) in [
        (icmp::v4::DEST_UNREACHABLE, icmp::v4::CODE_FRAG_NEEDED),
        (icmp::v4::TIME_EXCEEDED, 0),
    ] {
        let mut e = build::icmp_unreachable(
            &req,
            &ri,
            Unreachable::Port,
            Some("203.0.113.254".parse().unwrap()),
        )
        .unwrap();
        let l4 = wire::parse(&e).unwrap().l4_offset;
        e[l4] = typ;
        e[l4 + 1] = code;
        e[l4 + 6..l4 + 8].copy_from_slice(&1400u16.to_be_bytes());
        fix_icmp_checksum(&mut e, false);
        let info = wire::parse(&e).unwrap();
        assert!(wire::verify_checksums(&e, &info));
        let L4::Icmp {
            kind:
                IcmpKind::Error {
                    typ: t,
                    code: c,
                    inner,
                },
            ..
        } = info.l4
        else {
            panic!()
        };
        assert_eq!((t, c), (typ, code));
        assert_eq!(
            (inner.src, inner.dst, inner.proto, inner.sport, inner.dport),
            (ri.src, ri.dst, 6, sport, dport)
        );
        assert!(inner.has_ports);
        // Cut the quote to the IP header + 3 bytes of TCP: no ports, refused.
        let cut = inner.l4_offset + 3;
        let mut short = e[..cut].to_vec();
        let l3 = info.l3_offset;
        short[l3 + 2..l3 + 4].copy_from_slice(&((cut - l3) as u16).to_be_bytes());
        assert_eq!(wire::parse(&short).unwrap_err(), WireError::BadIcmpInner);
    }
    // v6: packet too big about the DNS query with extension headers.
    let q = dns_v6_with_ext_headers();
    let qi = wire::parse(&q).unwrap();
    let mut e = build::icmp_unreachable(
        &q,
        &qi,
        Unreachable::AdminProhibited,
        Some("2001:db8::fe".parse().unwrap()),
    )
    .unwrap();
    let l4 = wire::parse(&e).unwrap().l4_offset;
    e[l4] = icmp::v6::PACKET_TOO_BIG;
    e[l4 + 1] = 0;
    e[l4 + 4..l4 + 8].copy_from_slice(&1280u32.to_be_bytes());
    fix_icmp_checksum(&mut e, true);
    let info = wire::parse(&e).unwrap();
    assert!(wire::verify_checksums(&e, &info));
    let L4::Icmp {
        kind: IcmpKind::Error { inner, .. },
        ..
    } = info.l4
    else {
        panic!()
    };
    assert_eq!((inner.src, inner.proto, inner.dport), (qi.src, 17, 53));
    assert_eq!(inner.l4_offset - inner.l3_offset, 40 + 24);
    // An embedded packet of the other family is refused.
    let mut mixed = e.clone();
    mixed[inner.l3_offset] = 0x45;
    assert_eq!(wire::parse(&mixed).unwrap_err(), WireError::BadIcmpInner);
}

#[test]
fn lying_lengths_padding_and_fragments() {
    let q = dns_query();
    let qi = wire::parse(&q).unwrap();
    // Ethernet padding after the datagram is not payload.
    let mut padded = q.clone();
    padded.extend_from_slice(&[0; 18]);
    let pi = wire::parse(&padded).unwrap();
    assert_eq!((pi.ip_end, pi.payload_len), (qi.ip_end, qi.payload_len));
    assert!(wire::verify_checksums(&padded, &pi));
    // UDP length beyond the IP payload / below its header.
    let l4 = qi.l4_offset;
    for bad_len in [qi.payload_len as u16 + 9, 7] {
        let mut u = q.clone();
        u[l4 + 4..l4 + 6].copy_from_slice(&bad_len.to_be_bytes());
        assert_eq!(wire::parse(&u).unwrap_err(), WireError::BadLength);
    }
    // IP total length beyond the frame.
    let mut t = q.clone();
    t.truncate(t.len() - 1);
    assert_eq!(wire::parse(&t).unwrap_err(), WireError::BadLength);
    // TCP data offset past the segment.
    let r = http_request();
    let ri = wire::parse(&r).unwrap();
    let mut d = r.clone();
    d.truncate(ri.l4_offset + 24);
    let l3 = ri.l3_offset;
    let n = (d.len() - l3) as u16;
    d[l3 + 2..l3 + 4].copy_from_slice(&n.to_be_bytes());
    d[ri.l4_offset + 12] = 0xf0;
    assert_eq!(wire::parse(&d).unwrap_err(), WireError::BadHeaderLen);
    // A first fragment too small for the TCP header (RFC 1858 tiny fragment).
    let mut tiny = r[..ri.l4_offset + 8].to_vec();
    let n = (tiny.len() - l3) as u16;
    tiny[l3 + 2..l3 + 4].copy_from_slice(&n.to_be_bytes());
    tiny[l3 + 6] = 0x20;
    assert_eq!(wire::parse(&tiny).unwrap_err(), WireError::Truncated);
    // A later fragment: no L4, port rewrites refused and nothing changed.
    let mut later = r.clone();
    later[l3 + 6..l3 + 8].copy_from_slice(&[0x00, 0x10]);
    let li = wire::parse(&later).unwrap();
    assert_eq!(li.l4, L4::Other);
    assert_eq!(li.fragment.map(|f| (f.offset, f.more)), Some((128, false)));
    let before = later.clone();
    let eip: IpAddr = "192.0.2.1".parse().unwrap();
    assert_eq!(
        rewrite::set_src(&mut later, &li, eip, Some(1), ChecksumMode::Incremental),
        Err(WireError::NotApplicable)
    );
    assert_eq!(later, before);
    // Non-IP and garbage.
    assert_eq!(wire::parse(&[0u8; 10]).unwrap_err(), WireError::Truncated);
    let mut arp = q.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(wire::parse(&arp).unwrap_err(), WireError::NotIp);
}

#[test]
fn ipv4_udp_zero_checksum_stays_zero() {
    let mut q = dns_query();
    let qi = wire::parse(&q).unwrap();
    q[qi.l4_offset + 6..qi.l4_offset + 8].copy_from_slice(&[0, 0]);
    assert!(
        wire::verify_checksums(&q, &qi),
        "zero = no checksum, valid for IPv4"
    );
    let eip: IpAddr = "192.0.2.1".parse().unwrap();
    for mode in [ChecksumMode::Incremental, ChecksumMode::Full] {
        let mut f = q.clone();
        rewrite::set_src(&mut f, &qi, eip, Some(40_000), mode).unwrap();
        assert_eq!(&f[qi.l4_offset + 6..qi.l4_offset + 8], &[0, 0], "{mode:?}");
        assert!(wire::verify_checksums(&f, &wire::parse(&f).unwrap()));
    }
    // Quoted in an ICMP error and translated back, the quoted zero checksum stays zero too.
    let mut public = q.clone();
    rewrite::set_src(
        &mut public,
        &qi,
        eip,
        Some(40_000),
        ChecksumMode::Incremental,
    )
    .unwrap();
    let pi = wire::parse(&public).unwrap();
    let mut e = build::icmp_unreachable(&public, &pi, Unreachable::Port, None).unwrap();
    let ei = wire::parse(&e).unwrap();
    let L4::Icmp {
        kind: IcmpKind::Error { inner, .. },
        ..
    } = ei.l4
    else {
        panic!()
    };
    rewrite::rewrite_icmp_error_inner(
        &mut e,
        &ei,
        rewrite::End::Src,
        qi.src,
        42582,
        ChecksumMode::Incremental,
    )
    .unwrap();
    assert_eq!(&e[inner.l4_offset + 6..inner.l4_offset + 8], &[0, 0]);
    assert!(wire::verify_checksums(&e, &wire::parse(&e).unwrap()));
    assert_eq!(
        &e[inner.l3_offset..inner.l3_offset + 28],
        &q[qi.l3_offset..qi.l3_offset + 28]
    );
}

/// With checksum offload the kernel hands over segments whose checksum field holds only the
/// pseudo-header sum (CHECKSUM_PARTIAL). Full mode must produce a valid checksum from that.
#[test]
fn full_mode_repairs_offloaded_partial_checksums() {
    let r = http_request();
    let ri = wire::parse(&r).unwrap();
    let mut partial = r.clone();
    let ck_off = ri.l4_offset + 16;
    let seg_len = (ri.ip_end - ri.l4_offset) as u32;
    let pseudo = checksum::fold(checksum::pseudo_header(ri.src, ri.dst, 6, seg_len));
    partial[ck_off..ck_off + 2].copy_from_slice(&pseudo.to_be_bytes());
    assert!(!wire::verify_checksums(&partial, &ri));
    let eip: IpAddr = "192.0.2.1".parse().unwrap();
    let mut inc = partial.clone();
    rewrite::set_src(&mut inc, &ri, eip, Some(40_000), ChecksumMode::Incremental).unwrap();
    assert!(
        !wire::verify_checksums(&inc, &wire::parse(&inc).unwrap()),
        "incremental keeps it wrong"
    );
    let mut full = partial.clone();
    rewrite::set_src(&mut full, &ri, eip, Some(40_000), ChecksumMode::Full).unwrap();
    assert!(wire::verify_checksums(&full, &wire::parse(&full).unwrap()));
}

/// Fuzz regression: an ICMPv4 error quoting a header-only IPv4 datagram whose protocol is 58
/// (ICMPv6 numbers mean nothing inside IPv4) parses, with no ports.
#[test]
fn icmp_error_about_foreign_protocol_without_payload() {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    let mut h = [0u8; 20];
    wire::ipv4::emit_header(
        &mut h,
        [10, 0, 1, 10].into(),
        [198, 51, 100, 9].into(),
        58,
        0,
        64,
    );
    f.extend_from_slice(&h);
    let info = wire::parse(&f).unwrap();
    assert_eq!(info.l4, L4::Other);
    let e = build::icmp_unreachable(&f, &info, Unreachable::AdminProhibited, None).unwrap();
    let ei = wire::parse(&e).unwrap();
    assert!(wire::verify_checksums(&e, &ei));
    let L4::Icmp {
        kind: IcmpKind::Error { inner, .. },
        ..
    } = ei.l4
    else {
        panic!()
    };
    assert_eq!((inner.proto, inner.has_ports), (58, false));
}
