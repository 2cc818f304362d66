//! ICMP "fragmentation needed" (IPv4, type 3 code 4) and "packet too big" (ICMPv6, type 2)
//! answers for frames that do not fit the outgoing interface's MTU. The gateway does not
//! fragment: senders lower their path MTU instead (RFC 1191, RFC 8201).

use std::net::IpAddr;

use super::csum::{fold, sum};

/// How much of the offending packet an ICMPv6 error quotes: the answer must fit the IPv6
/// minimum MTU (1280 = 40 IPv6 + 8 ICMPv6 + 1232).
const V6_QUOTE: usize = 1232;

/// The answer to `frame` (IP header at `l3`), sent from `from` back to the frame's source, or
/// `None` when none is due: an IPv4 packet without DF (routers would fragment it; this one
/// drops it), an ICMP error (never an error about an error), a family mismatch, a truncated
/// frame. The Ethernet header is the frame's with the MACs swapped (the sender rewrites them
/// for the next hop anyway).
pub fn reply(frame: &[u8], l3: usize, mtu: u32, from: IpAddr) -> Option<Vec<u8>> {
    let ip = frame.get(l3..)?;
    let version = ip.first()? >> 4;
    let mut out = Vec::with_capacity(l3 + 40 + 8 + 576);
    out.extend_from_slice(frame.get(6..12)?);
    out.extend_from_slice(frame.get(0..6)?);
    out.extend_from_slice(frame.get(12..l3)?);
    match (version, from) {
        (4, IpAddr::V4(src)) => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let flags = *ip.get(6)?;
            let proto = *ip.get(9)?;
            if ihl < 20 || flags & 0x40 == 0 {
                return None;
            }
            if proto == 1 && matches!(ip.get(ihl)?, 3 | 4 | 5 | 11 | 12) {
                return None;
            }
            // RFC 792 asks for the header + 8 bytes; quote up to a 576-byte answer like Linux.
            let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
            let quote = ip.get(..total.min(ip.len()).min(576 - 28))?;
            if quote.len() < ihl + 8 {
                return None;
            }
            let mut icmp = vec![3, 4, 0, 0, 0, 0];
            icmp.extend_from_slice(&(mtu.min(0xffff) as u16).to_be_bytes());
            icmp.extend_from_slice(quote);
            let c = fold(sum(0, &icmp)).to_be_bytes();
            icmp[2..4].copy_from_slice(&c);
            let len = (20 + icmp.len()) as u16;
            let mut h = [0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&len.to_be_bytes());
            h[6] = 0x40; // DF
            h[8] = 64;
            h[9] = 1;
            h[12..16].copy_from_slice(&src.octets());
            h[16..20].copy_from_slice(ip.get(12..16)?);
            let c = fold(sum(0, &h)).to_be_bytes();
            h[10..12].copy_from_slice(&c);
            set_ethertype(&mut out, 0x0800);
            out.extend_from_slice(&h);
            out.extend_from_slice(&icmp);
        }
        (6, IpAddr::V6(src)) => {
            if *ip.get(6)? == 58 && ip.get(40).is_some_and(|t| *t < 128) {
                return None;
            }
            let quote = &ip[..ip.len().min(V6_QUOTE)];
            if quote.len() < 40 {
                return None;
            }
            let dst = ip.get(8..24)?;
            let mut icmp = vec![2, 0, 0, 0];
            icmp.extend_from_slice(&mtu.to_be_bytes());
            icmp.extend_from_slice(quote);
            let len = icmp.len() as u32;
            let pseudo = sum(sum(0, &src.octets()), dst) + u64::from(len) + 58;
            let c = fold(sum(pseudo, &icmp)).to_be_bytes();
            icmp[2..4].copy_from_slice(&c);
            let mut h = [0u8; 40];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&(len as u16).to_be_bytes());
            h[6] = 58;
            h[7] = 64;
            h[8..24].copy_from_slice(&src.octets());
            h[24..40].copy_from_slice(dst);
            set_ethertype(&mut out, 0x86dd);
            out.extend_from_slice(&h);
            out.extend_from_slice(&icmp);
        }
        _ => return None,
    }
    Some(out)
}

/// The EtherType is the last two bytes of the Ethernet header (after any VLAN tag).
fn set_ethertype(eth: &mut [u8], ty: u16) {
    let n = eth.len();
    eth[n - 2..].copy_from_slice(&ty.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_frame(df: bool, payload: usize) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        let total = (20 + 20 + payload) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, if df { 0x40 } else { 0 }, 0, 64, 6, 0, 0]);
        f.extend_from_slice(&[10, 0, 1, 2, 203, 0, 113, 2]);
        f.extend_from_slice(&[0; 20]);
        f.extend(std::iter::repeat_n(0xab, payload));
        f
    }

    #[test]
    fn v4_frag_needed_quotes_and_checksums() {
        let f = v4_frame(true, 1460);
        let r = reply(&f, 14, 1400, "10.0.1.1".parse().unwrap()).unwrap();
        assert_eq!(&r[0..6], &f[6..12]);
        let ip = &r[14..];
        assert_eq!(ip.len(), 576);
        assert_eq!(&ip[12..16], &[10, 0, 1, 1]);
        assert_eq!(&ip[16..20], &[10, 0, 1, 2]);
        assert_eq!(fold(sum(0, &ip[..20])), 0, "IPv4 header checksum");
        let icmp = &ip[20..];
        assert_eq!((icmp[0], icmp[1]), (3, 4));
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1400);
        assert_eq!(fold(sum(0, icmp)), 0, "ICMP checksum");
        assert_eq!(&icmp[8..28], &f[14..34], "quotes the offending header");
    }

    #[test]
    fn no_answer_without_df_for_errors_or_truncated() {
        assert!(reply(
            &v4_frame(false, 1460),
            14,
            1400,
            "10.0.1.1".parse().unwrap()
        )
        .is_none());
        let mut err = v4_frame(true, 1460);
        err[23] = 1; // ICMP
        err[34] = 3; // destination unreachable
        assert!(reply(&err, 14, 1400, "10.0.1.1".parse().unwrap()).is_none());
        assert!(reply(
            &v4_frame(true, 0)[..30],
            14,
            1400,
            "10.0.1.1".parse().unwrap()
        )
        .is_none());
        assert!(reply(&v4_frame(true, 10), 14, 1400, "fd00::1".parse().unwrap()).is_none());
    }

    #[test]
    fn v6_packet_too_big_fits_the_minimum_mtu() {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd];
        f.extend_from_slice(&[0x60, 0, 0, 0, 0x05, 0xa0, 6, 64]);
        let src: std::net::Ipv6Addr = "fd00:1::2".parse().unwrap();
        let dst: std::net::Ipv6Addr = "2001:db8::2".parse().unwrap();
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend(std::iter::repeat_n(0xcd, 1440));
        let gw: std::net::Ipv6Addr = "fd00:1::1".parse().unwrap();
        let r = reply(&f, 14, 1400, IpAddr::V6(gw)).unwrap();
        let ip = &r[14..];
        assert_eq!(ip.len(), 1280);
        assert_eq!(&ip[24..40], &src.octets());
        let icmp = &ip[40..];
        assert_eq!((icmp[0], icmp[1]), (2, 0));
        assert_eq!(
            u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]),
            1400
        );
        let pseudo = sum(sum(0, &gw.octets()), &src.octets()) + icmp.len() as u64 + 58;
        assert_eq!(fold(sum(pseudo, icmp)), 0, "ICMPv6 checksum");
    }
}
