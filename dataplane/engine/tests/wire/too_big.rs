//! `wire::build::icmp_too_big`: the answers the gateway sends for frames that do not fit the
//! outgoing interface's MTU (it does not fragment).

use std::net::{IpAddr, Ipv6Addr};

use natfw_engine::wire::{self, build::icmp_too_big, checksum};

fn v4_frame(df: bool, payload: usize) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    let total = (20 + 20 + payload) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, if df { 0x40 } else { 0 }, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&[10, 0, 1, 2, 203, 0, 113, 2]);
    // A TCP header (data offset 5) and payload.
    f.extend_from_slice(&[
        0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0xff, 0xff,
    ]);
    f.extend_from_slice(&[0; 4]);
    f.extend(std::iter::repeat_n(0xab, payload));
    f
}

fn answer(f: &[u8], mtu: u32, from: &str) -> Option<Vec<u8>> {
    let info = wire::parse(f).unwrap();
    icmp_too_big(f, &info, mtu, from.parse().unwrap())
}

#[test]
fn v4_frag_needed_quotes_and_checksums() {
    let f = v4_frame(true, 1460);
    let r = answer(&f, 1400, "10.0.1.1").unwrap();
    assert_eq!(&r[0..6], &f[6..12]);
    let ip = &r[14..];
    assert_eq!(ip.len(), 576);
    assert_eq!(&ip[12..16], &[10, 0, 1, 1]);
    assert_eq!(&ip[16..20], &[10, 0, 1, 2]);
    assert_eq!(checksum::sum(&ip[..20]), 0xffff, "IPv4 header checksum");
    let icmp = &ip[20..];
    assert_eq!((icmp[0], icmp[1]), (3, 4));
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1400);
    assert_eq!(checksum::sum(icmp), 0xffff, "ICMP checksum");
    assert_eq!(&icmp[8..28], &f[14..34], "quotes the offending header");
}

#[test]
fn no_answer_without_df_for_errors_or_the_other_family() {
    assert!(answer(&v4_frame(false, 1460), 1400, "10.0.1.1").is_none());
    let mut err = v4_frame(true, 1460);
    err[23] = 1; // ICMP
    err[34..42].copy_from_slice(&[3, 1, 0, 0, 0, 0, 0, 0]); // destination unreachable
    err[42..62].copy_from_slice(&v4_frame(true, 0)[14..34]); // the packet it is about
    assert!(answer(&err, 1400, "10.0.1.1").is_none());
    assert!(answer(&v4_frame(true, 10), 1400, "fd00::1").is_none());
}

#[test]
fn v6_packet_too_big_fits_the_minimum_mtu() {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd];
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(20u16 + 1440).to_be_bytes());
    f.extend_from_slice(&[6, 64]);
    let src: Ipv6Addr = "fd00:1::2".parse().unwrap();
    let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&[
        0x9c, 0x40, 1, 187, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0xff, 0xff,
    ]);
    f.extend_from_slice(&[0; 4]);
    f.extend(std::iter::repeat_n(0xcd, 1440));
    let gw: Ipv6Addr = "fd00:1::1".parse().unwrap();
    let r = answer(&f, 1400, "fd00:1::1").unwrap();
    let ip = &r[14..];
    assert_eq!(ip.len(), 1280);
    assert_eq!(&ip[24..40], &src.octets());
    let icmp = &ip[40..];
    assert_eq!((icmp[0], icmp[1]), (2, 0));
    assert_eq!(
        u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]),
        1400
    );
    assert_eq!(
        checksum::l4_checksum(IpAddr::V6(gw), IpAddr::V6(src), 58, icmp),
        0,
        "ICMPv6 checksum"
    );
}
