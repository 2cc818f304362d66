//! Packets the gateway originates: TCP resets and ICMP destination-unreachable errors, built as
//! complete Ethernet frames (VLAN tags of the triggering frame are kept) with valid checksums.

use super::checksum;
use super::{ethernet, icmp, ipv4, ipv6, proto, IcmpKind, PacketInfo, TcpFlags, L3, L4};
use std::net::{IpAddr, SocketAddr};

/// TTL / hop limit of originated packets.
pub const TTL: u8 = 64;
/// Bytes of the offending IPv4 datagram quoted in an ICMP error (576 − 20 − 8, RFC 1812).
pub const ICMPV4_QUOTE: usize = 548;
/// Bytes of the offending IPv6 packet quoted (1280 − 40 − 8, RFC 4443 §2.4).
pub const ICMPV6_QUOTE: usize = 1232;

/// Which end of the connection a reset is sent to, relative to the triggering segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RstTo {
    /// Back to the segment's sender (addresses and MACs swapped). Sequence number from the
    /// segment's ACK field (RFC 9293 §3.10.7.1), so the sender accepts it.
    Sender,
    /// On to the segment's receiver, as the sender would have. `delivered`: whether the
    /// triggering segment itself was forwarded (then the receiver expects seq + its length;
    /// otherwise it still expects the segment's own seq).
    Receiver { delivered: bool },
}

/// Build a TCP RST for the connection of the TCP segment `frame` (parsed as `info`). `None` for
/// non-TCP packets, non-first fragments and RSTs (never answer a reset).
pub fn tcp_rst(frame: &[u8], info: &PacketInfo, to: RstTo) -> Option<Vec<u8>> {
    let L4::Tcp {
        sport,
        dport,
        seq,
        ack,
        flags,
        ..
    } = info.l4
    else {
        return None;
    };
    if flags.rst() || info.is_later_fragment() {
        return None;
    }
    let seg_len = (info.payload_len as u32)
        .wrapping_add(u32::from(flags.syn()))
        .wrapping_add(u32::from(flags.fin()));
    let (src, dst, r_seq, r_ack, r_flags, swap) = match to {
        RstTo::Sender => {
            let (s, a, f) = if flags.ack() {
                (
                    ack,
                    seq.wrapping_add(seg_len),
                    TcpFlags::RST | TcpFlags::ACK,
                )
            } else {
                (0, seq.wrapping_add(seg_len), TcpFlags::RST | TcpFlags::ACK)
            };
            (
                SocketAddr::new(info.dst, dport),
                SocketAddr::new(info.src, sport),
                s,
                a,
                f,
                true,
            )
        }
        RstTo::Receiver { delivered } => {
            let s = if delivered {
                seq.wrapping_add(seg_len)
            } else {
                seq
            };
            let f = if flags.ack() {
                TcpFlags::RST | TcpFlags::ACK
            } else {
                TcpFlags::RST
            };
            (
                SocketAddr::new(info.src, sport),
                SocketAddr::new(info.dst, dport),
                s,
                ack,
                f,
                false,
            )
        }
    };
    let eth = frame.get(..info.eth_len)?;
    let mut out = Vec::with_capacity(info.eth_len + 60 + 20);
    push_eth(&mut out, eth, swap, info.l3);
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&src.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&r_seq.to_be_bytes());
    let a = if r_flags & TcpFlags::ACK != 0 {
        r_ack
    } else {
        0
    };
    tcp[8..12].copy_from_slice(&a.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = r_flags;
    push_ip(&mut out, src.ip(), dst.ip(), proto::TCP, &tcp);
    Some(out)
}

/// The reason carried by an ICMP destination unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// Port unreachable (v4 3/3, v6 1/4): as if the destination host had no listener.
    Port,
    /// Communication administratively prohibited (v4 3/13, v6 1/1): filtered by policy.
    AdminProhibited,
}

/// Build an ICMP destination unreachable answering `frame` (parsed as `info`), quoting the
/// offending packet from its IP header on. Sent from `from` (default: the packet's destination)
/// to the packet's source. `None` for ICMP errors (never an error about an error), non-first
/// fragments, or a `from` of the wrong family.
pub fn icmp_unreachable(
    frame: &[u8],
    info: &PacketInfo,
    why: Unreachable,
    from: Option<IpAddr>,
) -> Option<Vec<u8>> {
    if matches!(
        info.l4,
        L4::Icmp {
            kind: IcmpKind::Error { .. },
            ..
        }
    ) || info.is_later_fragment()
    {
        return None;
    }
    let src = from.unwrap_or(info.dst);
    if src.is_ipv6() != (info.l3 == L3::V6) {
        return None;
    }
    let (typ, code, quote, p) = match (info.l3, why) {
        (L3::V4, Unreachable::Port) => (
            icmp::v4::DEST_UNREACHABLE,
            icmp::v4::CODE_PORT_UNREACHABLE,
            ICMPV4_QUOTE,
            proto::ICMP,
        ),
        (L3::V4, Unreachable::AdminProhibited) => (
            icmp::v4::DEST_UNREACHABLE,
            icmp::v4::CODE_ADMIN_PROHIBITED,
            ICMPV4_QUOTE,
            proto::ICMP,
        ),
        (L3::V6, Unreachable::Port) => (
            icmp::v6::DEST_UNREACHABLE,
            icmp::v6::CODE_PORT_UNREACHABLE,
            ICMPV6_QUOTE,
            proto::ICMPV6,
        ),
        (L3::V6, Unreachable::AdminProhibited) => (
            icmp::v6::DEST_UNREACHABLE,
            icmp::v6::CODE_ADMIN_PROHIBITED,
            ICMPV6_QUOTE,
            proto::ICMPV6,
        ),
    };
    icmp_error(frame, info, [typ, code, 0, 0, 0, 0, 0, 0], quote, p, src)
}

/// Build the answer to a packet that does not fit the next hop's `mtu`: ICMP "fragmentation
/// needed" (IPv4 3/4, RFC 1191) or "packet too big" (ICMPv6 2/0, RFC 8201), sent from `from`
/// to the packet's source, quoting as much of it as [`ICMPV4_QUOTE`] / [`ICMPV6_QUOTE`] allow.
/// The gateway does not fragment, so the sender lowers its path MTU. `None` when none is due:
/// an IPv4 packet without DF (it may be fragmented on the way; this gateway drops it), an ICMP
/// error (never an error about an error), or a `from` of the other family.
pub fn icmp_too_big(frame: &[u8], info: &PacketInfo, mtu: u32, from: IpAddr) -> Option<Vec<u8>> {
    if matches!(
        info.l4,
        L4::Icmp {
            kind: IcmpKind::Error { .. },
            ..
        }
    ) || from.is_ipv6() != (info.l3 == L3::V6)
    {
        return None;
    }
    match info.l3 {
        L3::V4 => {
            let flags = *frame.get(info.l3_offset + ipv4::field::FLAGS_FRAG)?;
            if flags & 0x40 == 0 {
                return None;
            }
            let m = (mtu.min(0xffff) as u16).to_be_bytes();
            let head = [
                icmp::v4::DEST_UNREACHABLE,
                icmp::v4::CODE_FRAG_NEEDED,
                0,
                0,
                0,
                0,
                m[0],
                m[1],
            ];
            icmp_error(frame, info, head, ICMPV4_QUOTE, proto::ICMP, from)
        }
        L3::V6 => {
            let m = mtu.to_be_bytes();
            let head = [icmp::v6::PACKET_TOO_BIG, 0, 0, 0, m[0], m[1], m[2], m[3]];
            icmp_error(frame, info, head, ICMPV6_QUOTE, proto::ICMPV6, from)
        }
    }
}

/// An ICMP error with the 8-byte header `head` (checksum filled in here) quoting `frame`'s
/// packet from its IP header on (at most `quote` bytes), from `src` back to the packet's
/// source; the Ethernet header is the frame's with the MACs swapped.
fn icmp_error(
    frame: &[u8],
    info: &PacketInfo,
    head: [u8; icmp::HEADER_LEN],
    quote: usize,
    p: u8,
    src: IpAddr,
) -> Option<Vec<u8>> {
    let offending = frame.get(info.l3_offset..info.ip_end)?;
    let offending = &offending[..offending.len().min(quote)];
    let mut msg = Vec::with_capacity(icmp::HEADER_LEN + offending.len());
    msg.extend_from_slice(&head);
    msg.extend_from_slice(offending);
    let eth = frame.get(..info.eth_len)?;
    let mut out = Vec::with_capacity(info.eth_len + 40 + msg.len());
    push_eth(&mut out, eth, true, info.l3);
    push_ip(&mut out, src, info.src, p, &msg);
    Some(out)
}

/// Copy an Ethernet header (tags included), swapping the MACs if asked and setting the
/// EtherType for `l3`.
fn push_eth(out: &mut Vec<u8>, eth: &[u8], swap: bool, l3: L3) {
    let start = out.len();
    out.extend_from_slice(eth);
    if swap {
        let h = &mut out[start..];
        let mut tmp = [0u8; 6];
        tmp.copy_from_slice(&h[0..6]);
        h.copy_within(6..12, 0);
        h[6..12].copy_from_slice(&tmp);
    }
    let et = match l3 {
        L3::V4 => ethernet::ETHERTYPE_IPV4,
        L3::V6 => ethernet::ETHERTYPE_IPV6,
    };
    let n = out.len();
    out[n - 2..].copy_from_slice(&et.to_be_bytes());
}

/// Append an IP header and `l4` (whose checksum field is filled in here).
fn push_ip(out: &mut Vec<u8>, src: IpAddr, dst: IpAddr, p: u8, l4: &[u8]) {
    let ip_start = out.len();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.resize(ip_start + ipv4::MIN_HEADER_LEN, 0);
            ipv4::emit_header(&mut out[ip_start..], s, d, p, l4.len(), TTL);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            out.resize(ip_start + ipv6::HEADER_LEN, 0);
            ipv6::emit_header(&mut out[ip_start..], s, d, p, l4.len(), TTL);
        }
        _ => return, // callers only pass one family
    }
    let l4_start = out.len();
    out.extend_from_slice(l4);
    let ck_off = l4_start
        + if p == proto::TCP {
            super::tcp::CHECKSUM_OFFSET
        } else {
            icmp::CHECKSUM_OFFSET
        };
    out[ck_off..ck_off + 2].copy_from_slice(&[0, 0]);
    let ck = if p == proto::ICMP {
        checksum::checksum(&out[l4_start..])
    } else {
        checksum::l4_checksum(src, dst, p, &out[l4_start..])
    };
    out[ck_off..ck_off + 2].copy_from_slice(&ck.to_be_bytes());
}
