//! In-place rewrites for NAT. Every function keeps the IPv4 header checksum and the L4 checksum
//! valid (when they were valid before): incrementally (RFC 1624) by default, or by recomputing
//! the L4 checksum over the whole segment with [`ChecksumMode::Full`] — needed on the AF_XDP
//! path, where veth checksum offload hands us segments whose checksum is only partial.
//!
//! Old values are read from the frame itself, never from the [`PacketInfo`], so several
//! rewrites can be applied in a row with the info from one [`parse`](super::parse). The info
//! must describe this frame; a stale one gives `Err`, never a panic.

use super::checksum::{self, get16, put16, Delta};
use super::{icmp, proto, IcmpKind, PacketInfo, WireError, L3, L4};
use std::net::IpAddr;

/// How L4 checksums are brought up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChecksumMode {
    /// Adjust the stored checksum by the difference of the rewritten words.
    #[default]
    Incremental,
    /// Recompute from scratch over the segment and pseudo-header. Fragments fall back to
    /// incremental (the rest of the datagram is not here).
    Full,
}

/// Which endpoint of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Src,
    Dst,
}

/// Set the source address and, if given, the source port (TCP/UDP) or echo id (ICMP echo).
pub fn set_src(
    frame: &mut [u8],
    info: &PacketInfo,
    ip: IpAddr,
    port: Option<u16>,
    mode: ChecksumMode,
) -> Result<(), WireError> {
    set_endpoint(frame, info, End::Src, ip, port, mode)
}

/// Set the destination address and, if given, the destination port (TCP/UDP) or echo id
/// (ICMP echo).
pub fn set_dst(
    frame: &mut [u8],
    info: &PacketInfo,
    ip: IpAddr,
    port: Option<u16>,
    mode: ChecksumMode,
) -> Result<(), WireError> {
    set_endpoint(frame, info, End::Dst, ip, port, mode)
}

/// Rewrite an ICMP echo request/reply identifier, fixing the ICMP checksum.
pub fn set_icmp_echo_id(frame: &mut [u8], info: &PacketInfo, id: u16) -> Result<(), WireError> {
    match info.l4 {
        L4::Icmp {
            kind: IcmpKind::EchoRequest { .. } | IcmpKind::EchoReply { .. },
            ..
        } => {}
        _ => return Err(WireError::NotApplicable),
    }
    let mut d = Delta::new();
    write16(frame, info.l4_offset + 4, id, &mut d)?;
    fix16(frame, info.l4_offset + icmp::CHECKSUM_OFFSET, d, false)
}

/// Decrement the IPv4 TTL / IPv6 hop limit (fixing the IPv4 header checksum). Returns false,
/// leaving the frame untouched, when the packet must not be forwarded (TTL would reach 0).
pub fn decrement_ttl(frame: &mut [u8], info: &PacketInfo) -> bool {
    let off = match info.l3 {
        L3::V4 => info.l3_offset + 8,
        L3::V6 => info.l3_offset + 7,
    };
    let Some(&ttl) = frame.get(off) else {
        return false;
    };
    if ttl <= 1 {
        return false;
    }
    match info.l3 {
        L3::V6 => frame[off] = ttl - 1,
        L3::V4 => {
            let Some(old) = get16(frame, off) else {
                return false;
            };
            let mut d = Delta::new();
            if write16(frame, off, old - 0x100, &mut d).is_err()
                || fix16(frame, info.l3_offset + 10, d, false).is_err()
            {
                return false;
            }
        }
    }
    true
}

/// Translate an ICMP error's embedded packet (and the outer header) for NAT.
///
/// `End::Src`: an error coming *in* about a packet we sent out translated — the embedded
/// packet's source (and source port / echo id) becomes `ip`/`port` (the private host), and so
/// does the outer destination. `End::Dst`: an error going *out* from a private host about a
/// packet that came in — the embedded destination (and port) and the outer source become
/// `ip`/`port` (the public address). The embedded IPv4 header checksum, the embedded L4 checksum
/// (where present in the truncated copy), the ICMP checksum and the outer IPv4 header checksum
/// are all kept consistent.
pub fn rewrite_icmp_error_inner(
    frame: &mut [u8],
    info: &PacketInfo,
    end: End,
    ip: IpAddr,
    port: u16,
    mode: ChecksumMode,
) -> Result<(), WireError> {
    let L4::Icmp {
        kind: IcmpKind::Error { inner, .. },
        ..
    } = info.l4
    else {
        return Err(WireError::NotApplicable);
    };
    let v6 = info.l3 == L3::V6;
    if ip.is_ipv6() != v6 {
        return Err(WireError::FamilyMismatch);
    }
    let end_limit = info.ip_end.min(frame.len());
    // Bounds of everything touched below, checked up front so an error changes nothing.
    let inner_l3_min = if v6 {
        super::ipv6::HEADER_LEN
    } else {
        super::ipv4::MIN_HEADER_LEN
    };
    let inner_l4_min = match inner.proto {
        _ if !inner.has_ports => 0,
        proto::TCP | proto::UDP => 4,
        _ => icmp::HEADER_LEN,
    };
    if inner.l3_offset + inner_l3_min > inner.l4_offset
        || inner.l4_offset + inner_l4_min > end_limit
        || info.l4_offset + icmp::HEADER_LEN > inner.l3_offset
    {
        return Err(WireError::BadIcmpInner);
    }
    // Difference for the outer ICMP checksum, which covers every embedded byte we touch.
    let mut outer = Delta::new();

    let mut d_addr = Delta::new();
    let a_off = inner.l3_offset + addr_offset(info.l3, end);
    write_addr(frame, a_off, ip, &mut d_addr)?;
    outer.merge(d_addr);
    if !v6 {
        outer.merge(fix16_delta(
            frame,
            inner.l3_offset + 10,
            d_addr,
            false,
            end_limit,
        )?);
    }

    match inner.proto {
        proto::TCP | proto::UDP if inner.has_ports => {
            let mut d_port = Delta::new();
            let p_off = inner.l4_offset + if end == End::Src { 0 } else { 2 };
            write16_within(frame, p_off, port, &mut d_port, end_limit)?;
            outer.merge(d_port);
            let mut d = d_addr;
            d.merge(d_port);
            let (ck_off, udp) = if inner.proto == proto::TCP {
                (inner.l4_offset + 16, false)
            } else {
                (inner.l4_offset + 6, true)
            };
            // The truncated copy may lack the checksum; a v4 UDP zero checksum stays zero.
            if ck_off + 2 <= end_limit && !(udp && !v6 && get16(frame, ck_off) == Some(0)) {
                outer.merge(fix16_delta(frame, ck_off, d, udp, end_limit)?);
            }
        }
        proto::ICMP | proto::ICMPV6 if inner.has_ports => {
            let mut d_id = Delta::new();
            write16_within(frame, inner.l4_offset + 4, port, &mut d_id, end_limit)?;
            outer.merge(d_id);
            let mut d = d_id;
            if v6 {
                d.merge(d_addr); // ICMPv6 checksums cover the pseudo-header
            }
            outer.merge(fix16_delta(
                frame,
                inner.l4_offset + 2,
                d,
                false,
                end_limit,
            )?);
        }
        _ => {}
    }
    fix16(frame, info.l4_offset + icmp::CHECKSUM_OFFSET, outer, false)?;
    let outer_end = match end {
        End::Src => End::Dst,
        End::Dst => End::Src,
    };
    set_endpoint(frame, info, outer_end, ip, None, mode)
}

#[inline]
fn addr_offset(l3: L3, end: End) -> usize {
    match (l3, end) {
        (L3::V4, End::Src) => 12,
        (L3::V4, End::Dst) => 16,
        (L3::V6, End::Src) => 8,
        (L3::V6, End::Dst) => 24,
    }
}

/// [`set_src`] (`End::Src`) or [`set_dst`], then [`decrement_ttl`]: the translation of a
/// forwarded packet. `Ok(false)`: the TTL would reach zero (the endpoint is rewritten, the TTL
/// left as it was), as `decrement_ttl` returning false. The frame ends up exactly as with the
/// two calls; an unfragmented IPv4 TCP/UDP packet in incremental mode gets one pass and one
/// update of the IPv4 header checksum.
#[inline]
pub fn translate(
    frame: &mut [u8],
    info: &PacketInfo,
    end: End,
    ip: IpAddr,
    port: u16,
    mode: ChecksumMode,
) -> Result<bool, WireError> {
    if mode == ChecksumMode::Incremental {
        if let Some(r) = v4_l4(frame, info, end, ip, Some(port), true) {
            return r;
        }
    }
    set_endpoint(frame, info, end, ip, Some(port), mode)?;
    Ok(decrement_ttl(frame, info))
}

/// The common case of an incremental endpoint rewrite (and, with `ttl`, the TTL decrement),
/// straight-line: an unfragmented IPv4 TCP or UDP packet and an IPv4 address. `None` when the
/// packet is not that case (the general path handles it). The same checks, writes and
/// checksums as `set_endpoint` + `decrement_ttl`: both IPv4 header checksum differences are
/// applied in one update, which gives the same bits (one's-complement addition is
/// associative and the folded sum is 0 only for an all-zero input). The IPv4 header and the
/// L4 words it touches are taken as fixed-size arrays once bounds are checked, so the writes
/// need no further checks.
#[inline(always)]
fn v4_l4(
    frame: &mut [u8],
    info: &PacketInfo,
    end: End,
    ip: IpAddr,
    port: Option<u16>,
    ttl: bool,
) -> Option<Result<bool, WireError>> {
    let IpAddr::V4(a) = ip else {
        return None;
    };
    if info.l3 != L3::V4 || info.fragment.is_some() {
        return None;
    }
    let l3 = info.l3_offset;
    let l4 = info.l4_offset;
    let (ck_rel, udp, min_l4) = match info.l4 {
        L4::Tcp { .. } => (16, false, super::tcp::MIN_HEADER_LEN),
        L4::Udp { .. } => (6, true, super::udp::HEADER_LEN),
        _ => return None,
    };
    // As `set_endpoint`: everything touched lies below `ip_end`, within the frame.
    if info.ip_end > frame.len()
        || l3 + super::ipv4::MIN_HEADER_LEN > l4
        || l4 + min_l4 > info.ip_end
    {
        return Some(Err(WireError::Truncated));
    }
    let (head, seg) = frame.split_at_mut(l4);
    let (Some(h), Some(seg)) = (
        head.get_mut(l3..l3 + super::ipv4::MIN_HEADER_LEN)
            .and_then(|h| <&mut [u8; super::ipv4::MIN_HEADER_LEN]>::try_from(h).ok()),
        seg.get_mut(..min_l4),
    ) else {
        return Some(Err(WireError::Truncated));
    };
    let word = |b: &[u8], i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    let a_off = addr_offset(L3::V4, end);
    let new = a.octets();
    let mut d_addr = Delta::new();
    d_addr.add_u16(word(h, a_off), u16::from_be_bytes([new[0], new[1]]));
    d_addr.add_u16(word(h, a_off + 2), u16::from_be_bytes([new[2], new[3]]));
    h[a_off..a_off + 4].copy_from_slice(&new);
    let mut d_ip = d_addr;
    let forward = !ttl || h[8] > 1;
    if ttl && forward {
        let old = word(h, 8);
        let dec = old - 0x100;
        d_ip.add_u16(old, dec);
        h[8..10].copy_from_slice(&dec.to_be_bytes());
    }
    let ck = d_ip.apply(word(h, 10));
    h[10..12].copy_from_slice(&ck.to_be_bytes());
    let mut d = d_addr;
    if let Some(p) = port {
        let p_off = if end == End::Src { 0 } else { 2 };
        d.add_u16(word(seg, p_off), p);
        seg[p_off..p_off + 2].copy_from_slice(&p.to_be_bytes());
    }
    let old = word(seg, ck_rel);
    if udp && old == 0 {
        return Some(Ok(forward)); // IPv4 UDP without checksum: keep it that way
    }
    let mut ck = d.apply(old);
    if udp && ck == 0 {
        ck = 0xffff;
    }
    seg[ck_rel..ck_rel + 2].copy_from_slice(&ck.to_be_bytes());
    Some(Ok(forward))
}

#[inline]
fn set_endpoint(
    frame: &mut [u8],
    info: &PacketInfo,
    end: End,
    ip: IpAddr,
    port: Option<u16>,
    mode: ChecksumMode,
) -> Result<(), WireError> {
    if mode == ChecksumMode::Incremental {
        if let Some(r) = v4_l4(frame, info, end, ip, port, false) {
            return r.map(|_| ());
        }
    }
    set_endpoint_general(frame, info, end, ip, port, mode)
}

/// Every case of [`set_endpoint`] (the reference `v4_l4` is tested against).
fn set_endpoint_general(
    frame: &mut [u8],
    info: &PacketInfo,
    end: End,
    ip: IpAddr,
    port: Option<u16>,
    mode: ChecksumMode,
) -> Result<(), WireError> {
    let v6 = info.l3 == L3::V6;
    if ip.is_ipv6() != v6 {
        return Err(WireError::FamilyMismatch);
    }
    // Validate everything before the first write, so an error leaves the frame untouched.
    let min_l3 = if v6 {
        super::ipv6::HEADER_LEN
    } else {
        super::ipv4::MIN_HEADER_LEN
    };
    if info.ip_end > frame.len()
        || info.l3_offset + min_l3 > info.l4_offset
        || info.l4_offset > info.ip_end
    {
        return Err(WireError::Truncated);
    }
    let l4 = info.l4_offset;
    let l4_present = !info.is_later_fragment();
    // (checksum offset, covers the pseudo-header, is UDP, minimum L4 header length)
    let l4_ck = match info.l4 {
        _ if !l4_present => None,
        L4::Tcp { .. } => Some((l4 + 16, true, false, super::tcp::MIN_HEADER_LEN)),
        L4::Udp { .. } => Some((l4 + 6, true, true, super::udp::HEADER_LEN)),
        L4::Icmp { .. } => Some((l4 + 2, v6, false, icmp::HEADER_LEN)),
        L4::Other => None,
    };
    if l4_ck.is_some_and(|(_, _, _, min)| l4 + min > info.ip_end) {
        return Err(WireError::Truncated);
    }
    let port_off = match (port, l4_ck.map(|_| info.l4)) {
        (None, _) => None,
        (Some(_), Some(L4::Tcp { .. } | L4::Udp { .. })) => {
            Some(l4 + if end == End::Src { 0 } else { 2 })
        }
        (
            Some(_),
            Some(L4::Icmp {
                kind: IcmpKind::EchoRequest { .. } | IcmpKind::EchoReply { .. },
                ..
            }),
        ) => Some(l4 + 4),
        (Some(_), _) => return Err(WireError::NotApplicable),
    };

    let mut d_addr = Delta::new();
    write_addr(
        frame,
        info.l3_offset + addr_offset(info.l3, end),
        ip,
        &mut d_addr,
    )?;
    if !v6 {
        match mode {
            ChecksumMode::Incremental => fix16(frame, info.l3_offset + 10, d_addr, false)?,
            ChecksumMode::Full => {
                put16(frame, info.l3_offset + 10, 0);
                let h = frame
                    .get(info.l3_offset..info.l4_offset)
                    .ok_or(WireError::Truncated)?;
                let ck = checksum::checksum(h);
                put16(frame, info.l3_offset + 10, ck);
            }
        }
    }
    let Some((ck_off, pseudo, udp, _)) = l4_ck else {
        return Ok(());
    };
    let mode = if info.fragment.is_some() {
        ChecksumMode::Incremental
    } else {
        mode
    };
    let mut d_port = Delta::new();
    if let (Some(p), Some(off)) = (port, port_off) {
        write16(frame, off, p, &mut d_port)?;
    }
    if udp && !v6 && get16(frame, ck_off) == Some(0) {
        return Ok(()); // IPv4 UDP without checksum: keep it that way
    }
    match mode {
        ChecksumMode::Incremental => {
            let mut d = d_port;
            if pseudo {
                d.merge(d_addr);
            }
            fix16(frame, ck_off, d, udp)
        }
        ChecksumMode::Full => {
            let seg_end = if udp {
                info.payload_offset + info.payload_len
            } else {
                info.ip_end
            };
            put16(frame, ck_off, 0);
            let seg = frame.get(l4..seg_end).ok_or(WireError::Truncated)?;
            let mut ck = if pseudo {
                checksum::l4_checksum(
                    info_src(frame, info),
                    info_dst(frame, info),
                    info.proto,
                    seg,
                )
            } else {
                checksum::checksum(seg)
            };
            if udp && ck == 0 {
                ck = 0xffff;
            }
            put16(frame, ck_off, ck);
            Ok(())
        }
    }
}

fn read_addr(frame: &[u8], off: usize, v6: bool) -> IpAddr {
    if v6 {
        let mut o = [0u8; 16];
        if let Some(b) = frame.get(off..off + 16) {
            o.copy_from_slice(b);
        }
        IpAddr::from(o)
    } else {
        let mut o = [0u8; 4];
        if let Some(b) = frame.get(off..off + 4) {
            o.copy_from_slice(b);
        }
        IpAddr::from(o)
    }
}

/// Current source address in the frame (it may have been rewritten since parsing).
fn info_src(frame: &[u8], info: &PacketInfo) -> IpAddr {
    read_addr(
        frame,
        info.l3_offset + addr_offset(info.l3, End::Src),
        info.l3 == L3::V6,
    )
}

fn info_dst(frame: &[u8], info: &PacketInfo) -> IpAddr {
    read_addr(
        frame,
        info.l3_offset + addr_offset(info.l3, End::Dst),
        info.l3 == L3::V6,
    )
}

#[inline]
fn write_addr(frame: &mut [u8], off: usize, ip: IpAddr, d: &mut Delta) -> Result<(), WireError> {
    match ip {
        IpAddr::V4(a) => {
            let new = a.octets();
            let dst: &mut [u8; 4] = frame
                .get_mut(off..off + 4)
                .and_then(|s| s.try_into().ok())
                .ok_or(WireError::Truncated)?;
            d.add_u16(
                u16::from_be_bytes([dst[0], dst[1]]),
                u16::from_be_bytes([new[0], new[1]]),
            );
            d.add_u16(
                u16::from_be_bytes([dst[2], dst[3]]),
                u16::from_be_bytes([new[2], new[3]]),
            );
            *dst = new;
        }
        IpAddr::V6(a) => {
            let new = a.octets();
            let dst = frame.get_mut(off..off + 16).ok_or(WireError::Truncated)?;
            d.add(dst, &new);
            dst.copy_from_slice(&new);
        }
    }
    Ok(())
}

#[inline]
fn write16(frame: &mut [u8], off: usize, v: u16, d: &mut Delta) -> Result<(), WireError> {
    let old = get16(frame, off).ok_or(WireError::Truncated)?;
    d.add_u16(old, v);
    put16(frame, off, v);
    Ok(())
}

fn write16_within(
    frame: &mut [u8],
    off: usize,
    v: u16,
    d: &mut Delta,
    limit: usize,
) -> Result<(), WireError> {
    if off + 2 > limit {
        return Err(WireError::BadIcmpInner);
    }
    write16(frame, off, v, d)
}

/// Apply `d` to the checksum at `off`. UDP maps a computed 0 to 0xffff (0 means "none").
#[inline]
fn fix16(frame: &mut [u8], off: usize, d: Delta, udp: bool) -> Result<(), WireError> {
    let old = get16(frame, off).ok_or(WireError::Truncated)?;
    let mut new = d.apply(old);
    if udp && new == 0 {
        new = 0xffff;
    }
    put16(frame, off, new);
    Ok(())
}

/// Like [`fix16`] (bounded by `limit`), returning the difference the change makes to an
/// enclosing checksum.
fn fix16_delta(
    frame: &mut [u8],
    off: usize,
    d: Delta,
    udp: bool,
    limit: usize,
) -> Result<Delta, WireError> {
    if off + 2 > limit {
        return Err(WireError::BadIcmpInner);
    }
    let old = get16(frame, off).ok_or(WireError::Truncated)?;
    fix16(frame, off, d, udp)?;
    let new = get16(frame, off).ok_or(WireError::Truncated)?;
    let mut out = Delta::new();
    out.add_u16(old, new);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// An Ethernet + IPv4 frame with a TCP or UDP header and `payload`, checksums valid
    /// (`zero_udp_ck`: UDP sent without a checksum).
    fn frame(tcp: bool, ttl: u8, zero_udp_ck: bool, payload: &[u8], salt: u8) -> Vec<u8> {
        let l4_len = if tcp { 20 } else { 8 } + payload.len();
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let total = (20 + l4_len) as u16;
        let src = [10, salt, 1, 2];
        let dst = [203, 0, 113, salt.wrapping_mul(7)];
        let mut ip = vec![
            0x45,
            0,
            0,
            0,
            0x12,
            salt,
            0x40,
            0,
            ttl,
            if tcp { 6 } else { 17 },
        ];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0, 0]);
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        let ck = checksum::checksum(&ip);
        ip[10..12].copy_from_slice(&ck.to_be_bytes());
        f.extend_from_slice(&ip);
        let mut l4 = vec![0u8; l4_len - payload.len()];
        l4[0..2].copy_from_slice(&(40_000 + u16::from(salt)).to_be_bytes());
        l4[2..4].copy_from_slice(&443u16.to_be_bytes());
        if tcp {
            l4[4..8].copy_from_slice(&[salt, 2, 3, 4]);
            l4[12] = 0x50;
            l4[13] = 0x18;
        } else {
            l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        }
        l4.extend_from_slice(payload);
        if tcp || !zero_udp_ck {
            let mut ck = checksum::l4_checksum(
                IpAddr::from(src),
                IpAddr::from(dst),
                if tcp { 6 } else { 17 },
                &l4,
            );
            if !tcp && ck == 0 {
                ck = 0xffff;
            }
            let off = if tcp { 16 } else { 6 };
            l4[off..off + 2].copy_from_slice(&ck.to_be_bytes());
        }
        f.extend_from_slice(&l4);
        f
    }

    /// The straight-line IPv4 path gives the frame and result of the general rewrite followed
    /// by `decrement_ttl`, byte for byte, over TCP/UDP, both ends, TTLs around 1, UDP without
    /// checksum, addresses and ports that make checksums wrap.
    #[test]
    fn v4_fast_path_matches_general_rewrite() {
        let mut cases = 0;
        for salt in [0u8, 1, 7, 0x80, 0xfe, 0xff] {
            for tcp in [true, false] {
                for zero in [false, true] {
                    for ttl in [0u8, 1, 2, 64, 255] {
                        for end in [End::Src, End::Dst] {
                            for (ip, port) in [
                                (Ipv4Addr::new(192, 0, 2, 1), Some(1024)),
                                (Ipv4Addr::new(255, 255, 255, 255), Some(0xffff)),
                                (Ipv4Addr::new(0, 0, 0, 0), Some(0)),
                                (Ipv4Addr::new(10, salt, 1, 2), None),
                            ] {
                                let f = frame(tcp, ttl, zero, &[salt, 0xff, 0, 1, 2], salt);
                                let info = crate::wire::parse(&f).unwrap();
                                let ip = IpAddr::V4(ip);
                                let mut a = f.clone();
                                let mut b = f.clone();
                                let ra = v4_l4(&mut a, &info, end, ip, port, true)
                                    .expect("fast path applies");
                                let rb = set_endpoint_general(
                                    &mut b,
                                    &info,
                                    end,
                                    ip,
                                    port,
                                    ChecksumMode::Incremental,
                                )
                                .map(|()| decrement_ttl(&mut b, &info));
                                assert_eq!(ra, rb);
                                assert_eq!(a, b, "tcp {tcp} ttl {ttl} {end:?} {ip} {port:?}");
                                let mut c = f.clone();
                                let rc = v4_l4(&mut c, &info, end, ip, port, false).unwrap();
                                let mut d = f.clone();
                                let rd = set_endpoint_general(
                                    &mut d,
                                    &info,
                                    end,
                                    ip,
                                    port,
                                    ChecksumMode::Incremental,
                                );
                                assert_eq!(rc.map(|_| ()), rd);
                                assert_eq!(c, d);
                                if let Some(p) = port {
                                    let mut e = f.clone();
                                    let re = translate(
                                        &mut e,
                                        &info,
                                        end,
                                        ip,
                                        p,
                                        ChecksumMode::Incremental,
                                    );
                                    assert_eq!(re, ra);
                                    assert_eq!(e, a);
                                }
                                cases += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(cases > 400);
        // A frame cut short below what the info says: an error, the frame untouched.
        let f = frame(true, 64, false, b"abc", 3);
        let info = crate::wire::parse(&f).unwrap();
        let mut short = f[..f.len() - 4].to_vec();
        let before = short.clone();
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(
            v4_l4(&mut short, &info, End::Src, ip, Some(1), true),
            Some(Err(WireError::Truncated))
        );
        assert_eq!(short, before);
    }
}
