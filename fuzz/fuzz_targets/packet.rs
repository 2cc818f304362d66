//! Parse arbitrary frames and apply every rewrite and builder to what parses: nothing may
//! panic, and a frame whose checksums verified must still verify after any rewrite.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natfw_engine::frag::{FragConfig, Reassembler};
use natfw_engine::time::Timestamp;
use natfw_engine::wire::build::{self, RstTo, Unreachable};
use natfw_engine::wire::rewrite::{self, ChecksumMode, End};
use natfw_engine::wire::{self, IcmpKind, PacketInfo, L3, L4};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn addr(l3: L3, n: u8) -> IpAddr {
    match l3 {
        L3::V4 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, n)),
        L3::V6 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(n))),
    }
}

/// Run `op` on a copy; if it succeeded on a frame whose checksums were valid, they still are.
fn check(data: &[u8], info: &PacketInfo, valid: bool, op: impl Fn(&mut [u8]) -> bool) {
    let mut f = data.to_vec();
    if !op(&mut f) {
        return;
    }
    let after = wire::parse(&f).expect("a rewritten frame still parses");
    assert_eq!(after.l4_offset, info.l4_offset);
    if valid {
        assert!(
            wire::verify_checksums(&f, &after),
            "rewrite broke checksums: {info:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(info) = wire::parse(data) else { return };
    assert!(info.l4_offset <= info.ip_end && info.ip_end <= data.len());
    assert!(info.payload_offset + info.payload_len <= info.ip_end);
    let _ = info.payload(data);
    exercise(data, &info);
    // Random inputs rarely carry valid checksums: rewriting the destination to itself in full
    // mode repairs them, so the incremental paths get checked on valid frames too.
    let mut fixed = data.to_vec();
    if rewrite::set_dst(&mut fixed, &info, info.dst, None, ChecksumMode::Full).is_ok() {
        let fi = wire::parse(&fixed).expect("still parses");
        if info.fragment.is_none() && !matches!(info.l4, L4::Other) {
            assert!(
                wire::verify_checksums(&fixed, &fi),
                "full mode yields valid checksums"
            );
        }
        exercise(&fixed, &fi);
    }
});

fn exercise(data: &[u8], info: &PacketInfo) {
    let info = *info;
    let valid = wire::verify_checksums(data, &info);
    let (a, other) = (
        addr(info.l3, 1),
        match info.l3 {
            L3::V4 => addr(L3::V6, 1),
            L3::V6 => addr(L3::V4, 1),
        },
    );
    for mode in [ChecksumMode::Incremental, ChecksumMode::Full] {
        for port in [None, Some(40_000)] {
            check(data, &info, valid, |f| {
                rewrite::set_src(f, &info, a, port, mode).is_ok()
            });
            check(data, &info, valid, |f| {
                rewrite::set_dst(f, &info, a, port, mode).is_ok()
            });
        }
        for end in [End::Src, End::Dst] {
            check(data, &info, valid, |f| {
                rewrite::rewrite_icmp_error_inner(f, &info, end, a, 1234, mode).is_ok()
            });
        }
        let mut f = data.to_vec();
        assert!(rewrite::set_src(&mut f, &info, other, None, mode).is_err());
        assert_eq!(f, data, "a refused rewrite changes nothing");
    }
    check(data, &info, valid, |f| {
        rewrite::set_icmp_echo_id(f, &info, 7).is_ok()
    });
    check(data, &info, valid, |f| rewrite::decrement_ttl(f, &info));
    if let L4::Icmp {
        kind: IcmpKind::Error { inner, .. },
        ..
    } = info.l4
    {
        assert!(inner.l4_offset <= info.ip_end);
    }
    for to in [RstTo::Sender, RstTo::Receiver { delivered: true }] {
        if let Some(r) = build::tcp_rst(data, &info, to) {
            let ri = wire::parse(&r).expect("built RST parses");
            assert!(wire::verify_checksums(&r, &ri));
        }
    }
    if let Some(r) = build::icmp_unreachable(data, &info, Unreachable::Port, None) {
        match wire::parse(&r) {
            Ok(ri) => assert!(wire::verify_checksums(&r, &ri)),
            // Only IPv6 extension headers longer than the quote may cut the embedded L4 header.
            Err(e) => assert!(
                info.l3 == L3::V6 && info.l4_offset - info.l3_offset + 8 > build::ICMPV6_QUOTE,
                "built ICMP error does not parse: {e}"
            ),
        }
    }
    if info.fragment.is_some() {
        let mut r = Reassembler::new(FragConfig::default());
        let _ = r.push(Timestamp::from_secs(1), data);
    }
}
