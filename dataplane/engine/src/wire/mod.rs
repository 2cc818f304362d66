//! Packet layer: zero-copy typed views (`new_checked` validates once, accessors are then
//! infallible), a one-pass summary [`parse`] for the engine, in-place [`rewrite`]s that keep
//! checksums valid, and [`build`]ers for the packets the gateway originates (RST, ICMP).
//!
//! Everything here treats the frame as untrusted: lengths are checked against the buffer before
//! use and every error is a [`WireError`], never a panic.

pub mod build;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod rewrite;
pub mod tcp;
pub mod udp;

pub use tcp::TcpFlags;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A multi-byte header field: its byte range from the start of its header (smoltcp's
/// `mod field` style; single-byte fields are plain offsets).
pub type Field = std::ops::Range<usize>;

/// The big-endian 16-bit field `f` of `b` (the caller has checked the length).
#[inline]
pub(crate) fn be16(b: &[u8], f: Field) -> u16 {
    let mut x = [0u8; 2];
    x.copy_from_slice(&b[f]);
    u16::from_be_bytes(x)
}

/// The big-endian 32-bit field `f` of `b` (the caller has checked the length).
#[inline]
pub(crate) fn be32(b: &[u8], f: Field) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[f]);
    u32::from_be_bytes(x)
}

/// IP protocol numbers used here.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// Why a frame could not be parsed or rewritten. Small and `Copy`; [`WireError::as_str`] is a
/// stable label for drop counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireError {
    /// A header does not fit in the buffer.
    Truncated,
    /// Not IPv4/IPv6 (ARP, LLDP, ...): not ours to parse.
    NotIp,
    /// More VLAN tags than [`ethernet::MAX_TAGS`].
    TooManyVlanTags,
    /// IP version field disagrees with the EtherType.
    BadVersion,
    /// A header-length field (IHL, TCP data offset) is too small or runs past the buffer.
    BadHeaderLen,
    /// A total/payload length field is shorter than its header or longer than the buffer.
    BadLength,
    /// IPv6 extension-header chain too long or malformed.
    BadExtHeader,
    /// An ICMP error's embedded packet is missing or malformed.
    BadIcmpInner,
    /// A rewrite was given an address of the other family.
    FamilyMismatch,
    /// The rewrite does not apply to this packet (e.g. echo id on a TCP segment).
    NotApplicable,
}

impl WireError {
    /// Stable snake_case label (metrics, drop counters).
    pub const fn as_str(self) -> &'static str {
        match self {
            WireError::Truncated => "truncated",
            WireError::NotIp => "not_ip",
            WireError::TooManyVlanTags => "too_many_vlan_tags",
            WireError::BadVersion => "bad_ip_version",
            WireError::BadHeaderLen => "bad_header_len",
            WireError::BadLength => "bad_length",
            WireError::BadExtHeader => "bad_ipv6_ext_header",
            WireError::BadIcmpInner => "bad_icmp_inner",
            WireError::FamilyMismatch => "family_mismatch",
            WireError::NotApplicable => "not_applicable",
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for WireError {}

/// Network-layer family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L3 {
    V4,
    V6,
}

/// Fragment facts (IPv4 header, or the IPv6 fragment header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragInfo {
    /// Identification (16 bits for IPv4).
    pub id: u32,
    /// Offset of this fragment's data in bytes.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
}

impl FragInfo {
    /// The first fragment carries the L4 header.
    pub fn is_first(&self) -> bool {
        self.offset == 0
    }
}

/// The embedded ("offending") packet of an ICMP error, as it was sent. Ports are the echo id
/// (both `sport` and `dport`) when the embedded packet is an ICMP echo, and 0 for protocols
/// without ports or when the embedded packet is a non-first fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InnerTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// Absolute offset of the embedded IP header in the frame.
    pub l3_offset: usize,
    /// Absolute offset of the embedded L4 header in the frame.
    pub l4_offset: usize,
    /// The ports / echo id were read from an embedded TCP, UDP or ICMP echo header.
    pub has_ports: bool,
}

/// ICMP message classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IcmpKind {
    EchoRequest {
        id: u16,
        seq: u16,
    },
    EchoReply {
        id: u16,
        seq: u16,
    },
    /// Destination unreachable (incl. fragmentation needed / packet too big), time exceeded,
    /// parameter problem.
    Error {
        typ: u8,
        code: u8,
        inner: InnerTuple,
    },
    /// Anything else (redirects, ND, router solicitation, ...).
    Other,
}

/// Transport-layer summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: TcpFlags,
        window: u16,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Icmp {
        typ: u8,
        code: u8,
        kind: IcmpKind,
    },
    /// Other protocols, and non-first fragments (no L4 header).
    Other,
}

/// Everything the engine needs from one frame, from one pass over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketInfo {
    /// Ethernet header length, VLAN tags included (== `l3_offset`).
    pub eth_len: usize,
    pub l3: L3,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// Upper-layer protocol (after IPv6 extension headers).
    pub proto: u8,
    pub l3_offset: usize,
    pub l4_offset: usize,
    pub payload_offset: usize,
    /// L4 payload length (Ethernet padding excluded).
    pub payload_len: usize,
    /// End of the IP datagram in the frame (Ethernet padding starts here).
    pub ip_end: usize,
    pub fragment: Option<FragInfo>,
    pub l4: L4,
}

impl PacketInfo {
    /// `(sport, dport)` for TCP/UDP; the echo id twice for ICMP echo.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => Some((sport, dport)),
            L4::Icmp {
                kind: IcmpKind::EchoRequest { id, .. } | IcmpKind::EchoReply { id, .. },
                ..
            } => Some((id, id)),
            _ => None,
        }
    }

    /// The L4 payload of `frame` (the frame this info was parsed from).
    pub fn payload<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        frame
            .get(self.payload_offset..self.payload_offset + self.payload_len)
            .unwrap_or(&[])
    }

    /// Whether this is a non-first fragment (no L4 header present).
    pub fn is_later_fragment(&self) -> bool {
        self.fragment.is_some_and(|f| !f.is_first())
    }
}

/// Parse an Ethernet frame carrying IPv4 or IPv6 in one pass.
///
/// Lengths are validated against the buffer (a lying IP/UDP length is an error); trailing
/// Ethernet padding is ignored. Checksums are *not* verified here (see [`verify_checksums`]):
/// on the AF_XDP path offloads may leave them partial and the engine decides what to do.
#[inline]
pub fn parse(frame: &[u8]) -> Result<PacketInfo, WireError> {
    let (eth_len, ethertype) = ethernet::walk(frame)?;
    let l3buf = &frame[eth_len..];
    match ethertype {
        ethernet::ETHERTYPE_IPV4 => parse_v4(frame, eth_len, l3buf),
        ethernet::ETHERTYPE_IPV6 => parse_v6(frame, eth_len, l3buf),
        _ => Err(WireError::NotIp),
    }
}

// The summary is built once, in place, from what each layer returns: filling a local one and
// returning it would copy the whole struct on every packet.
#[inline]
fn parse_v4(frame: &[u8], eth_len: usize, l3buf: &[u8]) -> Result<PacketInfo, WireError> {
    let ip = ipv4::Packet::new_checked(l3buf)?;
    let l4_offset = eth_len + ip.header_len();
    let ip_end = eth_len + ip.total_len();
    let fragment = ip.is_fragment().then(|| FragInfo {
        id: u32::from(ip.ident()),
        offset: ip.frag_offset(),
        more: ip.more_frags(),
    });
    let proto = ip.protocol();
    let t = parse_l4(frame, proto, false, l4_offset, ip_end, fragment)?;
    Ok(PacketInfo {
        eth_len,
        l3: L3::V4,
        src: IpAddr::V4(ip.src_addr()),
        dst: IpAddr::V4(ip.dst_addr()),
        ttl: ip.ttl(),
        proto,
        l3_offset: eth_len,
        l4_offset,
        payload_offset: t.payload_offset,
        payload_len: t.payload_len,
        ip_end,
        fragment,
        l4: t.l4,
    })
}

fn parse_v6(frame: &[u8], eth_len: usize, l3buf: &[u8]) -> Result<PacketInfo, WireError> {
    let ip = ipv6::Packet::new_checked(l3buf)?;
    let up = ip.upper_layer()?;
    let l4_offset = eth_len + ipv6::HEADER_LEN + up.offset;
    let ip_end = eth_len + ip.total_len();
    // An atomic fragment (offset 0, no MF; RFC 8021) is a whole datagram.
    let fragment = up
        .fragment
        .filter(|f| f.offset != 0 || f.more)
        .map(|f| FragInfo {
            id: f.ident,
            offset: f.offset,
            more: f.more,
        });
    let t = parse_l4(frame, up.proto, true, l4_offset, ip_end, fragment)?;
    Ok(PacketInfo {
        eth_len,
        l3: L3::V6,
        src: IpAddr::V6(ip.src_addr()),
        dst: IpAddr::V6(ip.dst_addr()),
        ttl: ip.hop_limit(),
        proto: up.proto,
        l3_offset: eth_len,
        l4_offset,
        payload_offset: t.payload_offset,
        payload_len: t.payload_len,
        ip_end,
        fragment,
        l4: t.l4,
    })
}

/// The transport-layer part of a [`PacketInfo`].
struct Transport {
    l4: L4,
    payload_offset: usize,
    payload_len: usize,
}

/// The L4 summary and payload of the datagram whose L4 header starts at `l4_offset` and which
/// ends at `ip_end`. Non-first fragments have no L4 header.
#[inline(always)]
fn parse_l4(
    frame: &[u8],
    proto: u8,
    v6: bool,
    l4_offset: usize,
    ip_end: usize,
    fragment: Option<FragInfo>,
) -> Result<Transport, WireError> {
    let none = Transport {
        l4: L4::Other,
        payload_offset: l4_offset,
        payload_len: ip_end - l4_offset,
    };
    if fragment.is_some_and(|f| !f.is_first()) {
        return Ok(none);
    }
    let seg = &frame[l4_offset..ip_end];
    Ok(match proto {
        proto::TCP => {
            let t = tcp::Packet::new_checked(seg)?;
            Transport {
                payload_offset: l4_offset + t.header_len(),
                payload_len: seg.len() - t.header_len(),
                l4: L4::Tcp {
                    sport: t.src_port(),
                    dport: t.dst_port(),
                    seq: t.seq(),
                    ack: t.ack(),
                    flags: t.flags(),
                    window: t.window(),
                },
            }
        }
        proto::UDP => {
            let (sport, dport, len) = if fragment.is_some() {
                // The length covers the whole datagram, which this first fragment is not.
                if seg.len() < udp::HEADER_LEN {
                    return Err(WireError::Truncated);
                }
                let h = &seg[..udp::HEADER_LEN];
                let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
                if len < udp::HEADER_LEN {
                    return Err(WireError::BadLength);
                }
                (
                    u16::from_be_bytes([h[0], h[1]]),
                    u16::from_be_bytes([h[2], h[3]]),
                    seg.len(),
                )
            } else {
                let u = udp::Packet::new_checked(seg)?;
                (u.src_port(), u.dst_port(), u.len())
            };
            Transport {
                l4: L4::Udp { sport, dport },
                payload_offset: l4_offset + udp::HEADER_LEN,
                payload_len: len - udp::HEADER_LEN,
            }
        }
        proto::ICMP if !v6 => parse_icmp(frame, l4_offset, ip_end, false)?,
        proto::ICMPV6 if v6 => parse_icmp(frame, l4_offset, ip_end, true)?,
        _ => none,
    })
}

fn parse_icmp(
    frame: &[u8],
    l4_offset: usize,
    ip_end: usize,
    v6: bool,
) -> Result<Transport, WireError> {
    let seg = &frame[l4_offset..ip_end];
    let m = icmp::Packet::new_checked(seg)?;
    let (typ, code) = (m.msg_type(), m.code());
    let payload_offset = l4_offset + icmp::HEADER_LEN;
    let payload_len = seg.len() - icmp::HEADER_LEN;
    let (req, rep) = if v6 {
        (icmp::v6::ECHO_REQUEST, icmp::v6::ECHO_REPLY)
    } else {
        (icmp::v4::ECHO_REQUEST, icmp::v4::ECHO_REPLY)
    };
    let kind = if typ == req {
        IcmpKind::EchoRequest {
            id: m.echo_ident(),
            seq: m.echo_seq(),
        }
    } else if typ == rep {
        IcmpKind::EchoReply {
            id: m.echo_ident(),
            seq: m.echo_seq(),
        }
    } else if icmp::is_error(v6, typ) {
        let inner = parse_inner(frame, payload_offset, ip_end, v6)?;
        IcmpKind::Error { typ, code, inner }
    } else {
        IcmpKind::Other
    };
    Ok(Transport {
        l4: L4::Icmp { typ, code, kind },
        payload_offset,
        payload_len,
    })
}

/// Parse the embedded packet of an ICMP error at `frame[start..end]`. It is usually truncated,
/// so its length fields are not checked against the buffer; its header and the first bytes of
/// its L4 header (ports / echo id) must be present, and its family must match the outer one.
fn parse_inner(frame: &[u8], start: usize, end: usize, v6: bool) -> Result<InnerTuple, WireError> {
    let b = &frame[start..end];
    let bad = WireError::BadIcmpInner;
    let (src, dst, proto, l4_rel, later_frag) = if v6 {
        if b.len() < ipv6::HEADER_LEN || b[0] >> 4 != 6 {
            return Err(bad);
        }
        let mut s = [0u8; 16];
        s.copy_from_slice(&b[8..24]);
        let mut d = [0u8; 16];
        d.copy_from_slice(&b[24..40]);
        let up = ipv6::walk_ext(b[6], &b[ipv6::HEADER_LEN..]).map_err(|_| bad)?;
        let later = up.fragment.is_some_and(|f| f.offset != 0);
        (
            IpAddr::V6(Ipv6Addr::from(s)),
            IpAddr::V6(Ipv6Addr::from(d)),
            up.proto,
            ipv6::HEADER_LEN + up.offset,
            later,
        )
    } else {
        if b.len() < ipv4::MIN_HEADER_LEN || b[0] >> 4 != 4 {
            return Err(bad);
        }
        let ihl = usize::from(b[0] & 0x0f) * 4;
        if ihl < ipv4::MIN_HEADER_LEN || ihl > b.len() {
            return Err(bad);
        }
        let later = u16::from_be_bytes([b[6], b[7]]) & 0x1fff != 0;
        (
            IpAddr::V4(Ipv4Addr::new(b[12], b[13], b[14], b[15])),
            IpAddr::V4(Ipv4Addr::new(b[16], b[17], b[18], b[19])),
            b[9],
            ihl,
            later,
        )
    };
    let l4 = &b[l4_rel..];
    let (sport, dport, has_ports) = if later_frag {
        (0, 0, false)
    } else {
        match proto {
            proto::TCP | proto::UDP => {
                let p = l4.get(..4).ok_or(bad)?;
                (
                    u16::from_be_bytes([p[0], p[1]]),
                    u16::from_be_bytes([p[2], p[3]]),
                    true,
                )
            }
            proto::ICMP if !v6 => icmp_inner(l4, v6)?,
            proto::ICMPV6 if v6 => icmp_inner(l4, v6)?,
            _ => (0, 0, false),
        }
    };
    Ok(InnerTuple {
        src,
        dst,
        proto,
        sport,
        dport,
        l3_offset: start,
        l4_offset: start + l4_rel,
        has_ports,
    })
}

/// Echo id of an embedded ICMP message (as both ports), if it is an echo.
fn icmp_inner(l4: &[u8], v6: bool) -> Result<(u16, u16, bool), WireError> {
    let p = l4.get(..8).ok_or(WireError::BadIcmpInner)?;
    let echo = if v6 {
        matches!(p[0], icmp::v6::ECHO_REQUEST | icmp::v6::ECHO_REPLY)
    } else {
        matches!(p[0], icmp::v4::ECHO_REQUEST | icmp::v4::ECHO_REPLY)
    };
    Ok(if echo {
        let id = u16::from_be_bytes([p[4], p[5]]);
        (id, id, true)
    } else {
        (0, 0, false)
    })
}

/// Verify the IPv4 header checksum and the L4 checksum (TCP, UDP unless a v4 zero checksum,
/// ICMP, ICMPv6) of an unfragmented packet. Fragments only get their IPv4 header checked.
pub fn verify_checksums(frame: &[u8], info: &PacketInfo) -> bool {
    if info.l3 == L3::V4 {
        let Some(h) = frame.get(info.l3_offset..info.l4_offset) else {
            return false;
        };
        if checksum::sum(h) != 0xffff {
            return false;
        }
    }
    if info.fragment.is_some() {
        return true;
    }
    let Some(seg) = frame.get(info.l4_offset..info.ip_end) else {
        return false;
    };
    match (info.proto, info.l3) {
        (proto::TCP, _) | (proto::ICMPV6, L3::V6) => {
            checksum::l4_checksum(info.src, info.dst, info.proto, seg) == 0
        }
        (proto::UDP, _) => {
            let Some(u) = frame.get(info.l4_offset..info.payload_offset + info.payload_len) else {
                return false;
            };
            let ck = checksum::get16(u, udp::CHECKSUM_OFFSET).unwrap_or(0);
            (ck == 0 && info.l3 == L3::V4)
                || checksum::l4_checksum(info.src, info.dst, info.proto, u) == 0
        }
        (proto::ICMP, L3::V4) => checksum::sum(seg) == 0xffff,
        _ => true,
    }
}
